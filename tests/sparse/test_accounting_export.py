"""FLOPs accounting by hand, real-speed export equal in outputs, checkpoint/resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuroplastic import NeuroplasticError
from neuroplastic.data import digits
from neuroplastic.models import MLP, SmallCNN, default_model, seeded_model
from neuroplastic.sparse import SNIP, MagnitudePruning
from neuroplastic.sparse.fit import SparseRecipe, sparse_fit
from neuroplastic.sparse.flops import macs, output_positions, train_flops_ratio
from neuroplastic.sparse.inference import (
    CSRLinear,
    FeatureMajorLinear,
    export_layout,
    fastest_export,
    rebuild_export,
    remove_dead_units,
    to_csr,
)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)  # 5x5 -> 3x3: 9 positions
        self.fc = nn.Linear(18, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_positions_and_macs_by_hand():
    model = ConvNet()
    positions = output_positions(model, ["conv.weight", "fc.weight"], torch.randn(2, 1, 5, 5))
    assert positions == {"conv.weight": 9, "fc.weight": 1}
    dense = macs({"conv.weight": 18, "fc.weight": 72}, positions)
    assert dense == 18 * 9 + 72  # 234 multiply-accumulates per sample


def test_static_masks_train_flops_equal_inference_flops():
    model = ConvNet()
    x, y = torch.randn(8, 1, 5, 5), torch.randint(0, 4, (8,))
    sp = SNIP(model, sparsity=0.5, data=[(x, y)])
    positions = output_positions(model, list(sp.shapes), x[:1])
    counts = sp.log.layer_counts[-1]
    inference = macs(counts, positions) / macs({"conv.weight": 18, "fc.weight": 72}, positions)
    ratio = train_flops_ratio(sp.log, total_steps=100, shapes=sp.shapes, positions=positions,
                              dense_gradient_updates=False)
    assert ratio == pytest.approx(inference)


def test_csr_export_matches_and_is_a_real_sparse_matmul():
    torch.manual_seed(0)
    model = MLP(64, 10, hidden=(256, 256))
    MagnitudePruning(model, sparsity=0.95, scope="layer").export()
    exported = to_csr(model)
    assert sum(isinstance(m, CSRLinear) for m in exported.modules()) == 3
    assert exported.net[1].weight.layout == torch.sparse_csr
    x = torch.randn(64, 64)
    torch.testing.assert_close(exported(x), model(x), atol=1e-4, rtol=0)
    no_bias = nn.Linear(64, 32, bias=False)
    with torch.no_grad():
        no_bias.weight.mul_(torch.rand(32, 64) > 0.9)
    torch.testing.assert_close(CSRLinear(no_bias)(x[:, None]), no_bias(x[:, None]),
                               atol=1e-5, rtol=0)  # and a leading batch shape of two dims


@pytest.mark.parametrize("bias", [True, False])
def test_feature_major_linear_equals_linear(bias):
    torch.manual_seed(0)
    linear = nn.Linear(12, 7, bias=bias)
    for x in (torch.randn(5, 12), torch.randn(3, 4, 12)):
        torch.testing.assert_close(FeatureMajorLinear(linear)(x), linear(x))
    # what the next CSR layer reads without a copy: the feature-major result
    assert FeatureMajorLinear(linear)(torch.randn(5, 12)).t().is_contiguous()


def test_csr_export_with_measured_choices_keeps_outputs():
    torch.manual_seed(0)
    model = MLP(64, 10, hidden=(512, 512))
    MagnitudePruning(model, sparsity=0.95, scope="layer").export()
    # which layers change is a timing decision; whatever it is, the outputs must not change
    exported = to_csr(model, example=torch.randn(64, 64))
    x = torch.randn(64, 64)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), atol=1e-4, rtol=0)


def test_fastest_export_is_one_of_the_forms_and_keeps_outputs():
    torch.manual_seed(0)
    model = MLP(64, 10, hidden=(256, 256))
    MagnitudePruning(model, sparsity=0.95, scope="layer").export()
    exported, form = fastest_export(model, torch.randn(64, 64))
    assert form in ("unchanged", "csr", "dead units removed + csr")
    x = torch.randn(64, 64)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), atol=1e-4, rtol=0)

    class Untraceable(nn.Module):  # data-dependent control flow: torch.fx cannot follow it
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    exported, form = fastest_export(Untraceable(), torch.ones(2, 8))
    assert form in ("unchanged", "csr")


def test_dead_units_are_removed_without_changing_outputs():
    torch.manual_seed(0)
    model = SmallCNN(1, 10).eval()
    with torch.no_grad():
        model.features[0].weight[:5] = 0
        model.features[0].bias[:5] = 0  # 5 dead channels of conv 1
        model.features[2].weight[:, 7:9] = 0  # conv 2 ignores channels 7 and 8: unused
        model.features[2].weight[60:] = 0
        model.features[2].bias[60:] = 0  # 4 dead channels of conv 2, flattened into head.1
        model.head[1].weight[:10] = 0
        model.head[1].bias[:10] = 0  # 10 dead hidden units
    pruned, removed = remove_dead_units(model)
    assert removed == {"features.0": 7, "features.2": 4, "head.1": 10}
    layer = pruned.get_submodule
    assert layer("features.0").out_channels == 25 and layer("features.2").in_channels == 25
    assert layer("head.1").in_features == 60 * 16 and layer("head.3").in_features == 118
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=0)


def test_untraceable_models_get_a_clear_error():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                return self.fc(x)
            return x

    with pytest.raises(NeuroplasticError, match="cannot trace"):
        remove_dead_units(Branchy())


@pytest.mark.parametrize("method", ["granet", "set"])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, method):
    data = digits()
    recipe = SparseRecipe(method=method, sparsity=0.9, epochs=3, update_frequency=7)

    def factory():
        return default_model((1, 8, 8), 10)

    whole = sparse_fit(seeded_model(factory, 0, "cpu"), data, recipe,
                       checkpoint=tmp_path / "a.safetensors")
    sparse_fit(seeded_model(factory, 0, "cpu"), data, recipe,
               checkpoint=tmp_path / "b.safetensors", stop_after_epoch=1)
    resumed = sparse_fit(seeded_model(factory, 0, "cpu"), data, recipe,
                         checkpoint=tmp_path / "b.safetensors", resume=True)
    assert resumed.finished and whole.finished
    assert resumed.history == whole.history
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key  # masks included
    assert resumed.sparsifier.log.update_steps == whole.sparsifier.log.update_steps


def test_resume_refuses_another_model_or_recipe(tmp_path):
    data = digits()
    recipe = SparseRecipe(method="rigl", sparsity=0.9, epochs=1)
    path = tmp_path / "c.safetensors"
    sparse_fit(seeded_model(lambda: default_model((1, 8, 8), 10), 0, "cpu"), data, recipe,
               checkpoint=path)
    other = SparseRecipe(method="rigl", sparsity=0.8, epochs=1)
    model = seeded_model(lambda: default_model((1, 8, 8), 10), 0, "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NeuroplasticError, match="another recipe \\(sparsity\\)"):
        sparse_fit(model, data, other, checkpoint=path, resume=True)
    with pytest.raises(NeuroplasticError, match="another model"):
        sparse_fit(MLP(64, 10), data, recipe, checkpoint=path, resume=True)
    assert set(model.state_dict()) == set(before)  # no parametrization was added
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("form", ["csr", "dead units removed + csr"])
def test_export_layout_rebuilds_the_same_fast_model_from_the_dense_weights(form):
    torch.manual_seed(0)
    model = MLP(64, 10, hidden=(128, 64)).eval()
    MagnitudePruning(model, sparsity=0.9, scope="layer").export()
    with torch.no_grad():
        model.net[1].weight[:20] = 0
        model.net[1].bias[:20] = 0  # 20 dead hidden units
    base = remove_dead_units(model)[0] if form != "csr" else model
    exported = to_csr(base)
    layout = export_layout(exported, form)
    assert layout["csr"]  # every sparse Linear became CSR (no example: nothing timed)
    rebuilt = rebuild_export(model, layout)
    def layers(net):  # the root's class name differs between fx copies; the layers must not
        return {n: type(m).__name__ for n, m in net.named_modules() if n}

    assert layers(rebuilt) == layers(exported)
    x = torch.randn(16, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x).contiguous(), model(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(rebuilt(x).contiguous(), exported(x).contiguous(), atol=0, rtol=0)
