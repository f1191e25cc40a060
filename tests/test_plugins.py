"""A method from another package: registered through the neuroplastic.methods entry-point
group, listed, typed and run from the CLI with nothing added to the CLI."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint

import pytest

from neuroplastic import registry
from neuroplastic.cli import main


@pytest.fixture
def plugin(monkeypatch):
    point = EntryPoint(name="l2-anchor", value="tests.plugins.l2_anchor", group=registry.ENTRY_POINT_GROUP)

    def entry_points(*, group: str):
        return [point] if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr("importlib.metadata.entry_points", entry_points)
    monkeypatch.setattr(registry, "_loaded", [])
    yield
    registry._ENTRIES.pop(("continual", "l2-anchor"), None)


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


def test_a_broken_plugin_names_itself(monkeypatch):
    point = EntryPoint(name="broken", value="tests.plugins.no_such_module", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr("importlib.metadata.entry_points", lambda *, group: [point])
    monkeypatch.setattr(registry, "_loaded", [])
    from neuroplastic.errors import NeuroplasticError

    with pytest.raises(NeuroplasticError, match="entry point 'broken'"):
        registry.available()
