"""Hardening: data loading edge cases, factories, staged run folders, permissions, the
importance cache's loss identity, hyperparameter checks, the exported sparse model."""

from __future__ import annotations

import os
import stat
import sys

import numpy as np
import pytest
import torch
from torch import nn

import neuroplastic as npl
from neuroplastic import NeuroplasticError
from neuroplastic.cli.names import ADAPT_METHODS, DEMO_SKILLS, LEARN_RULES, SCENARIOS, SHIFT_METHODS
from neuroplastic.data import load_csv, load_data
from neuroplastic.importance import Fisher, ImportanceCache
from neuroplastic.io import write_json
from neuroplastic.models import build, checked_factory, load_factory
from neuroplastic.runs import staged_folder
from tests.test_cli_errors import csv_text


def test_cli_choice_lists_equal_the_library_lists():
    from neuroplastic.cli.skills import DEMO_STEPS
    from neuroplastic.data.scenarios import SCENARIOS as LIBRARY_SCENARIOS
    from neuroplastic.skills.demo import DemoRecipe
    from neuroplastic.skills.tasks import SKILLS

    assert set(SCENARIOS) == set(LIBRARY_SCENARIOS)
    assert set(DEMO_SKILLS) == set(SKILLS)
    assert DemoRecipe.steps == DEMO_STEPS
    from neuroplastic.local.runner import rules

    assert set(LEARN_RULES) == set(rules())
    assert set(ADAPT_METHODS) == {entry.name for entry in npl.available("adapt")}
    assert set(SHIFT_METHODS) == {entry.name for entry in npl.available("shift")}
    from neuroplastic.cli.names import ARCHITECTURES
    from neuroplastic.models import ARCHITECTURES as LIBRARY_ARCHITECTURES

    assert ARCHITECTURES == LIBRARY_ARCHITECTURES


def test_csv_with_bom_and_blank_lines_loads_the_same_as_a_clean_one(tmp_path):
    text = csv_text([str(i % 3) for i in range(60)])
    (tmp_path / "clean.csv").write_text(text)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode() + b"\r\n\r\n")
    clean, bom = load_csv(tmp_path / "clean.csv"), load_csv(tmp_path / "bom.csv")
    for part in ("train", "val", "test"):
        for a, b in zip(getattr(clean, part).tensors, getattr(bom, part).tensors, strict=True):
            assert torch.equal(a, b)
    # the BOM would otherwise hide the "label" header: features must not include the labels
    assert bom.input_shape == (4,) and bom.num_classes == 3


def test_every_split_keeps_two_classes_and_rare_classes_are_named(tmp_path):
    labels = ["0"] * 30 + ["1"] * 30 + ["2"] * 2
    (tmp_path / "rare.csv").write_text(csv_text(labels))
    with pytest.raises(NeuroplasticError, match="class 2 has 2 sample"):
        load_csv(tmp_path / "rare.csv")


def test_npz_labels_are_checked_with_their_index(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((30, 2)), y=np.array([0, 1, 2] * 9 + [0, 1, 20_000]))
    with pytest.raises(NeuroplasticError, match=r"label 20000 in row 29 would make 20001 classes"):
        load_data(str(tmp_path / "d.npz"))


def test_factory_from_a_file_and_its_checks(tmp_path):
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n"
        "def mlp():\n    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))\n")
    factory = load_factory(f"{tmp_path / 'nets.py'}:mlp")
    data = load_csv_data(tmp_path)
    state = torch.random.get_rng_state()
    assert checked_factory(lambda: build(factory), data) is not None
    assert torch.equal(torch.random.get_rng_state(), state)  # the check leaves the RNG alone
    with pytest.raises(NeuroplasticError, match="returns 2 logits but the data has 3 classes"):
        checked_factory(lambda: nn.Linear(4, 2), data)
    with pytest.raises(NeuroplasticError, match=r"must return logits of shape \(batch, classes\)"):
        checked_factory(lambda: nn.Sequential(nn.Linear(4, 3), nn.Flatten(0)), data)


def load_csv_data(root):
    (root / "d.csv").write_text(csv_text([str(i % 3) for i in range(60)]))
    return load_csv(root / "d.csv")


def test_staged_folder_appears_whole_or_not_at_all_with_usual_permissions(tmp_path):
    target = tmp_path / "run"
    with pytest.raises(RuntimeError), staged_folder(target) as staging:
        write_json(staging / "a.json", {"x": 1})
        raise RuntimeError("crash midway")
    assert list(tmp_path.iterdir()) == []  # neither the run nor its staging folder
    old = os.umask(0o022)
    try:
        with staged_folder(target) as staging:
            write_json(staging / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "a.json").stat().st_mode) == 0o644


def test_make_demo_refuses_a_non_empty_folder_before_training(tmp_path):
    pytest.importorskip("transformers")
    from neuroplastic.skills.demo import DemoRecipe, make_demo

    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(NeuroplasticError, match="already exists and is not empty"):
        make_demo(tmp_path, recipe=DemoRecipe(steps=1))
    with pytest.raises(NeuroplasticError, match="not a demo model folder"):
        make_demo(tmp_path, recipe=DemoRecipe(steps=1), replace=True)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    assert (tmp_path / "keep.txt").read_text() == "precious"


def module_level_loss(out, y):
    return nn.functional.cross_entropy(out, y)


def test_cache_refuses_losses_it_cannot_tell_apart():
    model = nn.Linear(4, 3)
    data = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
    cache = ImportanceCache()
    fisher = Fisher()
    doubled = lambda out, y: 2 * nn.functional.cross_entropy(out, y)  # noqa: E731
    halved = lambda out, y: 0.5 * nn.functional.cross_entropy(out, y)  # noqa: E731
    with pytest.raises(NeuroplasticError, match="cannot identify the loss"):
        cache.get_or_compute(fisher, model, data, loss_fn=doubled)
    a = cache.get_or_compute(fisher, model, data, loss_fn=doubled, cache_key="doubled")
    b = cache.get_or_compute(fisher, model, data, loss_fn=halved, cache_key="halved")
    assert torch.allclose(a["weight"], 16 * b["weight"])  # (2/0.5)^2: not one shared entry
    cache.get_or_compute(fisher, model, data, loss_fn=module_level_loss)
    smooth = cache.key(fisher, model, data, nn.CrossEntropyLoss(label_smoothing=0.1))
    plain = cache.key(fisher, model, data, nn.CrossEntropyLoss())
    assert smooth != plain
    with pytest.raises(NeuroplasticError, match="cannot identify the loss"):
        npl.forget.SSD(loss_fn=doubled)


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("gmp", {"scope": "glboal"}, "scope must be one of"),
    ("gmp", {"prune_window": (0.7, 0.1)}, "start < end"),
    ("granet", {"prune_window": (0.0, 1.5)}, r"prune_window end must be a number in \[0, 1\]"),
    ("rigl", {"drop_fraction": 5}, r"drop_fraction must be a number in \(0, 1\]"),
    ("set", {"zeta": -1}, r"zeta must be a number in \(0, 1\)"),
    ("granet", {"death_rate": float("nan")}, "death_rate must be a number"),
])
def test_sparse_hyperparameters_are_checked_at_construction(name, kwargs, message):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NeuroplasticError, match=message):
        npl.create(name, kind="sparse", model=model, sparsity=0.5, total_steps=10, **kwargs)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_ssd_hyperparameters_are_checked():
    for kwargs in ({"lam": float("nan")}, {"alpha": 0}, {"alpha": float("inf")}, {"lam": -1}):
        with pytest.raises(NeuroplasticError, match="must be a number in"):
            npl.forget.SSD(**kwargs)


def test_sparsifier_is_an_abstract_base():
    with pytest.raises(TypeError, match="abstract"):
        npl.sparse.Sparsifier(nn.Linear(3, 3), sparsity=0.5, total_steps=1)


def test_snip_honours_the_targets():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    batch = [(torch.randn(32, 6), torch.randint(0, 3, (32,)))]
    only_first = npl.Targets(include=("0.weight",))
    snip = npl.sparse.SNIP(model, sparsity=0.75, data=batch, targets=only_first)
    assert set(snip.masks.masks) == {"0.weight"}
    assert int(snip.masks.masks["0.weight"].sum()) == 24  # 25% of 96 weights kept
    exported = snip.export()
    assert bool((exported[2].weight != 0).all())  # the untargeted layer is untouched


def test_import_is_lazy_and_every_pillar_is_reachable():
    import subprocess

    code = ("import sys, neuroplastic as npl; heavy = [m for m in ('torch', 'sklearn', 'matplotlib') "
            "if m in sys.modules]; print(heavy); print(npl.sparse.GraNet.__name__, "
            "npl.forget.SSDAuto.__name__, npl.importance.Fisher.__name__, npl.select.ratio.__name__, "
            "npl.intervene.dampen_.__name__, npl.evaluate.collect.__name__, npl.Targets.__name__, "
            "npl.sparse.to_csr.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[1] == "GraNet SSDAuto Fisher ratio dampen_ collect Targets to_csr"


def test_standardize_uses_training_statistics_only(tmp_path):
    from neuroplastic.data import standardize

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = rng.normal(loc=5.0, scale=[1.0, 10.0, 0.1], size=(120, 3))
    x[:, 2] = 7.0  # a constant feature: shifted, not divided by zero
    np.savez(tmp_path / "t.npz", x=x, y=y)
    split = load_data(str(tmp_path / "t.npz"))
    scaled = standardize(split)
    train = scaled.train.tensors[0]
    torch.testing.assert_close(train.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(train[:, :2].std(0), torch.ones(2), atol=1e-5, rtol=0)
    assert bool((train[:, 2] == 0).all())
    raw = split.train.tensors[0]
    expected = (split.test.tensors[0] - raw.mean(0)) / torch.where(raw.std(0) > 0, raw.std(0), 1.0)
    torch.testing.assert_close(scaled.test.tensors[0], expected)
    assert torch.equal(scaled.test.tensors[1], split.test.tensors[1])


def test_the_cli_imports_no_heavy_library_for_help():
    import subprocess

    code = ("import sys; from neuroplastic.cli import main; code = main(['--help']); "
            "print([m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules], code)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "[] 0"
