"""A method from another package: registered through the neuroplastic.methods entry-point
group, listed, typed and run from the CLI with nothing added to the CLI."""

from __future__ import annotations

import json
import sys
from importlib.metadata import EntryPoint

import pytest

from neuroplastic import registry
from neuroplastic.cli import main


@pytest.fixture
def plugin(monkeypatch):
    points = [EntryPoint(name="l2-anchor", value="tests.plugins.l2_anchor", group=registry.ENTRY_POINT_GROUP),
              EntryPoint(name="readout-only", value="tests.plugins.readout_only",
                         group=registry.ENTRY_POINT_GROUP)]

    def entry_points(*, group: str):
        return points if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr("importlib.metadata.entry_points", entry_points)
    monkeypatch.setattr(registry, "_loaded", [])
    for point in points:  # imported afresh, so its decorators run again
        sys.modules.pop(point.value, None)
    yield
    registry._ENTRIES.pop(("continual", "l2-anchor"), None)
    registry._ENTRIES.pop(("learn", "readout-only"), None)


def test_a_method_registered_through_the_entry_point_group_runs_from_the_cli(plugin, tmp_path, capsys):
    assert main(["list", "--kind", "continual"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert any(line.split()[:2] == ["continual", "l2-anchor"] for line in listed)
    out = tmp_path / "run"
    assert main(["continual", "--method", "l2-anchor", "--param", "strength=0.5",
                 "--scenario", "split-digits", "--epochs", "1", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "l2-anchor" and 0.5 < metrics["acc"] <= 1
    assert json.loads((out / "config.json").read_text())["params"] == {"strength": 0.5}
    assert main(["continual", "--method", "l2-anchor", "--param", "strength=big"]) == 2
    assert "--param strength must be a number" in capsys.readouterr().err


def test_a_learn_method_from_a_plugin_trains_through_the_protocol(plugin, tmp_path, capsys):
    import torch

    from neuroplastic.data import load_data
    from neuroplastic.local.runner import learn

    out = tmp_path / "run"
    assert main(["learn", "--rule", "readout-only", "--param", "lr_scale=0.5", "--epochs", "2",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rule"] == "readout-only" and "backprop.test_acc" in metrics  # the baseline beside it
    assert metrics["trained_parameters"] == 32 * 10 + 10
    assert json.loads((out / "config.json").read_text())["params"] == {"lr_scale": 0.5}
    # only the readout learned: the hidden layer is still its seeded initialisation
    split = load_data("digits", seed=0)
    result = learn("readout-only", split, epochs=20, compare=False, measure_robustness=False)
    torch.manual_seed(0)  # learn() builds its network under the run's seed, 0
    untrained = registry.create("readout-only", kind="learn").network(split, (32,))
    trained = result.runs["readout-only"].model
    assert torch.equal(trained[1].weight, untrained[1].weight)
    assert not torch.equal(trained[3].weight, untrained[3].weight)
    assert result.runs["readout-only"].metrics["test_acc"] > 0.5
    assert main(["learn", "--rule", "readout-only", "--param", "lr_scale=-1"]) == 2
    assert "lr_scale" in capsys.readouterr().err


def test_a_broken_plugin_names_itself(monkeypatch):
    point = EntryPoint(name="broken", value="tests.plugins.no_such_module", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr("importlib.metadata.entry_points", lambda *, group: [point])
    monkeypatch.setattr(registry, "_loaded", [])
    from neuroplastic.errors import NeuroplasticError

    with pytest.raises(NeuroplasticError, match="entry point 'broken'"):
        registry.available()
