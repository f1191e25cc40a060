"""``neuroplastic forget skill`` end to end: on JSONL files and a local model folder, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from neuroplastic.cli import main
from neuroplastic.intervene.atomic import snapshot
from neuroplastic.skills.lm import load_causal_lm
from neuroplastic.skills.prompts import write_jsonl
from neuroplastic.skills.tasks import examples
from tests.skills.conftest import tiny_llama


@pytest.fixture
def model_dir(tmp_path, tokenizer):
    folder = tmp_path / "model"
    tiny_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def jsonl(tmp_path):
    paths = {}
    for skill, seed in (("addition", 1), ("reversal", 1), ("sorting", 1)):
        paths[skill] = tmp_path / f"{skill}.jsonl"
        write_jsonl(paths[skill], examples(skill, 16, seed=seed))
    return paths


@pytest.mark.parametrize(("method", "param"), [("na", "percent=2.5"), ("ga", "max_epochs=3")])
def test_forget_skill_on_files_writes_a_run_folder(tmp_path, capsys, model_dir, jsonl, method, param):
    out = tmp_path / "run"
    weights_before = snapshot(load_causal_lm(model_dir)[0])
    code = main(["forget", "skill", "--model", str(model_dir), "--forget", str(jsonl["addition"]),
                 "--retain", str(jsonl["reversal"]), "--eval", str(jsonl["addition"]),
                 "--eval", str(jsonl["sorting"]), "--method", method, "--param", param,
                 "--out", str(out), "--json"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(capsys.readouterr().out) == metrics
    assert metrics["method"] == method and metrics["forget_skill"] == "addition"
    for skill in ("addition", "sorting"):
        for key in ("acc_before", "acc_after", "abstain_rate"):
            assert 0 <= metrics[f"skills.{skill}.{key}"] <= 1
    assert "skills.reversal.acc_before" not in metrics  # retain file not evaluated when --eval given
    assert metrics["overhead"] > 0
    assert "data:image/png;base64," in (out / "report.html").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["method"] == method
    key, value = param.split("=")
    assert config["method_kwargs"][key] == float(value)  # typed as the signature says, recorded
    assert isinstance(config["method_kwargs"][key], float)
    # weight edits are saved; hook methods leave the model folder's weights as they were
    assert (out / "model.safetensors").exists() == (method == "ga")
    assert all(torch.equal(weights_before[k], v) for k, v in snapshot(load_causal_lm(model_dir)[0]).items())


@pytest.mark.parametrize(("extra", "message"), [
    (["--percent", "0"], "percent must be in (0, 100]"),
    (["--method", "na", "--percent", "150"], "percent must be in (0, 100]"),
    (["--method", "nope"], "unknown skill method 'nope'"),
    (["--h", "2"], "--h applies to ksd"),
])
def test_bad_options_get_one_line(tmp_path, capsys, model_dir, jsonl, extra, message):
    code = main(["forget", "skill", "--model", str(model_dir), "--forget", str(jsonl["addition"]),
                 "--retain", str(jsonl["reversal"]), "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_bad_files_get_one_line(tmp_path, capsys, model_dir, jsonl):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "add 1+1="}\n', encoding="utf-8")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    not_lm = tmp_path / "not-lm"
    not_lm.mkdir()
    capsys.readouterr()  # drop what the fixtures printed
    for args, message in (
        (["--model", str(model_dir), "--forget", str(broken)], "missing string field 'answer'"),
        (["--model", str(model_dir), "--forget", str(empty)], "holds no examples"),
        (["--model", str(not_lm), "--forget", str(jsonl["addition"]), "--retain", str(jsonl["reversal"])],
         "not a Hugging Face model directory"),
        (["--forget", str(jsonl["addition"])], "need --model"),
    ):
        assert main(["forget", "skill", *args, "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) <= 2, err


def test_list_shows_the_skill_methods(capsys):
    assert main(["list", "--kind", "skill"]) == 0
    out = capsys.readouterr().out
    for name in ("na", "ksd", "ksd-calibrated", "na-ksd", "ga", "ssd"):
        assert f"skill  {name} " in out or f"skill {name}" in " ".join(out.split()), name
    assert "granet" not in out
