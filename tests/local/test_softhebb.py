"""SoftHebb: the update against a slow per-unit / per-position reference, norm convergence,
and features that beat random ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neuroplastic.data import digits, loader
from neuroplastic.errors import NeuroplasticError
from neuroplastic.local import LocalUpdates, SoftHebb
from neuroplastic.local.softhebb import (
    hebbian_phase,
    softhebb_cifar,
    softhebb_mlp,
    train_softhebb,
    weight_norms,
)


def slow_delta(weight: torch.Tensor, inputs: list[torch.Tensor], t_invert: float) -> torch.Tensor:
    """dW summed over input vectors, one unit at a time, then / max|dW| (the paper's rule)."""
    units = weight.shape[0]
    change = torch.zeros_like(weight)
    for x in inputs:
        u = torch.stack([weight[k] @ x for k in range(units)])
        y = torch.softmax(t_invert * u, dim=0)
        winner = int(u.argmax())
        for k in range(units):
            yk = y[k] if k == winner else -y[k]
            change[k] += yk * x - yk * u[k] * weight[k]
    return change / change.abs().max()


def test_linear_update_matches_the_per_unit_reference() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(5, 4, bias=False)
    x = torch.randn(6, 5)
    rule = SoftHebb(t_invert=2.0)
    got = rule.delta(layer, x, layer(x))
    want = slow_delta(layer.weight.detach(), list(x), 2.0)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("stride", "padding", "mode"), [(1, 1, "reflect"), (2, 1, "zeros"), (1, 0, "zeros")])
def test_conv_update_matches_a_patch_by_patch_reference(stride: int, padding: int, mode: str) -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, stride=stride, padding=padding, padding_mode=mode, bias=False)
    x = torch.randn(2, 2, 5, 5)
    padded = F.pad(x, (padding,) * 4, mode="reflect" if mode == "reflect" else "constant")
    patches = []
    for sample in padded:
        for i in range(0, padded.shape[2] - 2, stride):
            for j in range(0, padded.shape[3] - 2, stride):
                patches.append(sample[:, i:i + 3, j:j + 3].flatten())
    rule = SoftHebb(t_invert=0.5)
    got = rule.delta(conv, x, conv(x))
    want = slow_delta(conv.weight.detach().flatten(1), patches, 0.5).reshape(conv.weight.shape)
    torch.testing.assert_close(got, want)


def test_one_step_moves_each_unit_by_its_norm_dependent_rate() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    x = torch.randn(8, 4)
    before = model[0].weight.detach().clone()
    rule = SoftHebb(t_invert=1.0)
    expected_change = slow_delta(before, list(x), 1.0)
    factor = (before.norm(dim=1) - 1).abs() ** 0.5
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad()
    LocalUpdates(model, {"0": rule})(model, x, torch.zeros(8, dtype=torch.long))
    optimizer.step()
    torch.testing.assert_close(model[0].weight.detach(), before + 0.1 * factor[:, None] * expected_change,
                               rtol=1e-5, atol=1e-6)


def test_weight_norms_converge_to_one_on_digits() -> None:
    torch.manual_seed(0)
    data = digits(seed=0)
    model = softhebb_mlp(64, 10, width=32)
    start = weight_norms(model)
    assert start.min() > 10  # the reference's init: norm ~25
    hebbian_phase(model, loader(data.train, batch_size=10, shuffle=True, seed=0), epochs=10)
    norms = weight_norms(model)
    assert (norms - 1).abs().median() < 0.02
    # every unit falls from ~25 towards 1 from above; the rarely winning ones are slower
    assert norms.min() > 0.99 and norms.max() < 3.0


def test_hebbian_features_beat_random_features_of_the_same_width() -> None:
    """Three seeds (one seed's margin moved by 0.3 points between two CPUs' float rounding):
    the Hebbian layer wins at every seed, by 2 points on average."""
    data = digits(seed=0)
    margins = []
    for seed in (0, 1, 2):
        scores = {}
        for hebbian in (True, False):
            torch.manual_seed(seed)
            model = softhebb_mlp(64, 10, width=32)
            train_softhebb(model, loader(data.train, batch_size=10, shuffle=True, seed=seed),
                           hebbian=hebbian, hebbian_epochs=5, readout_epochs=30)
            with torch.no_grad():
                x, y = data.test.tensors
                scores[hebbian] = float((model(x).argmax(-1) == y).float().mean())
        margins.append(scores[True] - scores[False])
    assert min(margins) > 0 and sum(margins) / len(margins) >= 0.02, margins


def test_a_layer_type_the_rule_cannot_update_is_named() -> None:
    model = nn.Sequential(nn.Conv1d(2, 2, 3))
    with pytest.raises(NeuroplasticError, match="cannot update layer '0' of type Conv1d"):
        LocalUpdates(model, {"0": SoftHebb()})
    with pytest.raises(NeuroplasticError, match="no layer named"):
        LocalUpdates(model, {"9": SoftHebb()})


def test_cifar_preset_learns_on_generated_cifar_format_data(tmp_path) -> None:
    from neuroplastic.data import load_cifar10_binary
    from neuroplastic.record import LayerRecorder
    from tests.test_data import write_cifar10_binary

    write_cifar10_binary(tmp_path / "cifar-10-batches-bin")
    split = load_cifar10_binary(tmp_path)
    torch.manual_seed(0)
    model = softhebb_cifar(10)
    convs = [model.features[i] for i in (1, 5, 9)]
    assert [c.out_channels for c in convs] == [96, 384, 1536]
    assert [c.kernel_size for c in convs] == [(5, 5), (3, 3), (3, 3)]
    assert all(c.padding_mode == "reflect" for c in convs)
    assert model.readout[1].in_features == 1536 * 4 * 4  # the reference's 24576
    x = split.train.tensors[0][:10]
    before = [c.weight.detach().clone() for c in convs]
    with LayerRecorder(dict(enumerate(convs)), inputs=True, outputs=True) as seen, torch.no_grad():
        model.train()(x)
    wanted = []
    for i, (conv, rate) in enumerate(zip(convs, (0.08, 0.005, 0.01), strict=True)):
        rule = SoftHebb(t_invert=model.plan.layers[f"features.{(1, 5, 9)[i]}"].t_invert)
        factor = rule.rate_factor(conv)[:, None, None, None]
        wanted.append(before[i] + rate * factor * rule.delta(conv, seen.inputs[i], seen.outputs[i]))
    hebbian_phase(model, [(x, split.train.tensors[1][:10])], epochs=1)
    for conv, want in zip(convs, wanted, strict=True):
        torch.testing.assert_close(conv.weight.detach(), want, rtol=1e-4, atol=1e-5)
