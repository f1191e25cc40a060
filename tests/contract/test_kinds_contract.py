"""The shared contract, generated from the registry for the continual, adapt, learn and shift
kinds (forget and skill have their own files): a failure midway leaves the model bit-identical
with nothing attached, a bad hyperparameter is one `error:` line that names the allowed keys,
and every hyperparameter given with --param is recorded, typed, in config.json."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from neuroplastic import registry
from neuroplastic.cli import main
from neuroplastic.continual import ContinualRecipe, run_stream
from neuroplastic.data.streams import stream_from_datasets
from neuroplastic.models import MLP
from tests.clean import assert_clean
from tests.faults import InjectedFailure, forward_seam

CLI_KIND = {"continual": ["continual", "--scenario", "split-digits", "--epochs", "1", "--hidden", "16"],
            "adapt": ["adapt", "--corruption", "contrast:3", "--epochs", "1"],
            "learn": ["learn", "--epochs", "1", "--no-compare"],
            "shift": ["shift", "--epochs", "1", "--swaps", "1", "--no-compare"]}


def tiny_stream():
    gen = torch.Generator().manual_seed(0)
    tasks = []
    for t in range(3):
        x = torch.randn(60, 6, generator=gen)
        y = torch.arange(60) % 2 + 2 * t
        tasks.append((torch.utils.data.TensorDataset(x[:40], y[:40]),
                      torch.utils.data.TensorDataset(x[40:50], y[40:50]),
                      torch.utils.data.TensorDataset(x[50:], y[50:])))
    return stream_from_datasets(tasks, setting="task", name="tiny")


@pytest.mark.parametrize("name", [e.name for e in registry.available("continual")])
def test_a_continual_failure_midway_restores_the_model_and_leaves_nothing(name):
    stream = tiny_stream()
    torch.manual_seed(0)
    model = MLP(6, stream.num_outputs, hidden=(16,))
    before = copy.deepcopy(model.state_dict())
    method = registry.create(name, kind="continual")
    with pytest.raises(InjectedFailure), forward_seam(model, fail_at=40):  # in the second task
        run_stream(model, stream, method, ContinualRecipe(epochs=3, batch_size=8))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), name
    assert_clean(model)


def first_parameter(kind: str, name: str) -> tuple[str, object] | None:
    """A hyperparameter of the method with a plain default, to give explicitly."""
    entry = next(e for e in registry.available(kind) if e.name == name)
    for key, (_, default) in entry.defaults().items():
        if isinstance(default, (bool, int, float, str)) and key not in ("episodic", "small_batch", "seed"):
            return key, default
    return None


CASES = [(kind, e.name) for kind in CLI_KIND for e in registry.available(kind)]


@pytest.mark.parametrize(("kind", "name"), CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_param_is_typed_and_recorded_and_a_bad_one_is_one_line(kind, name, tmp_path, capsys):
    option = "--rule" if kind == "learn" else "--method"
    base = [*CLI_KIND[kind], option, name]
    parameter = first_parameter(kind, name)
    if parameter is None:  # finetune, joint, backprop: no hyperparameter of their own
        assert main([*base, "--param", "x=1", "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert "takes no hyperparameter" in err or "it takes: none" in err, err
        return
    key, default = parameter
    text = str(default).lower() if isinstance(default, bool) else str(default)
    if kind == "learn" and name in ("disinhibitory",):
        base = [*base, "--hidden", "8", "--data", "circles"]
    out = tmp_path / "run"
    assert main([*base, "--param", f"{key}={text}", "--out", str(out)]) == 0
    recorded = json.loads((out / "config.json").read_text())["params"][key]
    assert recorded == default and type(recorded) is type(default), (recorded, default)
    capsys.readouterr()
    assert main([*base, "--param", "no_such_key=1", "--out", str(tmp_path / "bad")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and f"{key}:" in err[0], err
    assert not (tmp_path / "bad").exists()
