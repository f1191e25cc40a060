"""``neuroplastic sparse`` end to end on small budgets."""

from __future__ import annotations

import json
import shutil

import pytest

from neuroplastic.cli import main
from neuroplastic.io import load_tensors
from tests.test_cli import one_line_error


def test_sparse_train_writes_a_complete_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sparse", "train", "--method", "granet", "--sparsity", "0.9", "--epochs", "3",
                 "--dense-baseline", "--out", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics == json.loads((out / "metrics.json").read_text())
    for key in ("method", "target_sparsity", "actual_sparsity", "test_acc", "dense_test_acc",
                "train_flops_ratio", "inference_flops_ratio", "step_overhead", "export_speedup"):
        assert key in metrics, key
    saved = load_tensors(out / "model.safetensors")
    weights = [v for k, v in saved.items() if k.endswith("weight") and v.dim() > 1]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert metrics["actual_sparsity"] == pytest.approx(zeros)
    assert abs(metrics["actual_sparsity"] - 0.9) <= 0.005
    assert 0 < metrics["inference_flops_ratio"] < 0.2 < metrics["train_flops_ratio"] < 1
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert (out / "checkpoint.safetensors").is_file()


def test_sparse_prune_and_export(tmp_path):
    pruned = tmp_path / "pruned"
    assert main(["sparse", "prune", "--sparsity", "0.8", "--finetune-epochs", "1",
                 "--out", str(pruned)]) == 0
    metrics = json.loads((pruned / "metrics.json").read_text())
    assert metrics["method"] == "magnitude" and abs(metrics["actual_sparsity"] - 0.8) < 0.005
    assert metrics["test_acc"] > 0.5 and metrics["dense.test_acc"] == metrics["dense_test_acc"]
    exported = tmp_path / "export"
    assert main(["sparse", "export", "--model", str(pruned / "model.safetensors"),
                 "--out", str(exported)]) == 0
    report = json.loads((exported / "metrics.json").read_text())
    assert report["export_max_abs_diff"] < 1e-4 and report["export_speedup"] > 0


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--sparsity", "1.0"], "sparsity must be in [0, 1)"),
    (["train", "--method", "nope"], "unknown sparse method"),
    (["train", "--method", "magnitude"], "use `sparse prune`"),
    (["train", "--resume"], "--resume needs --out"),
    (["prune", "--sparsity", "-0.5"], "sparsity must be in [0, 1)"),
])
def test_bad_sparse_input(tmp_path, capsys, args, message):
    assert main(["sparse", *args, "--out", str(tmp_path / "x")]) == 2
    assert message in one_line_error(capsys)


def test_sparse_train_resume_from_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["sparse", "train", "--method", "set", "--epochs", "2", "--out", str(out)]
    assert main(args) == 0
    first = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2  # a finished run is never written over
    assert "finished run" in one_line_error(capsys)
    # a folder holding only the checkpoint (what Ctrl-C leaves) resumes; here nothing is left
    # to train, and the run written around the checkpoint has the same numbers
    left = tmp_path / "interrupted"
    left.mkdir()
    shutil.copy(out / "checkpoint.safetensors", left / "checkpoint.safetensors")
    resumed = ["sparse", "train", "--method", "set", "--epochs", "2", "--out", str(left), "--resume"]
    assert main(resumed) == 0
    again = json.loads((left / "metrics.json").read_text())
    assert again["test_acc"] == first["test_acc"]
    assert sorted(p.name for p in left.iterdir()) == sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(out / "checkpoint.safetensors", other / "checkpoint.safetensors")
    assert main(["sparse", "train", "--method", "set", "--epochs", "2", "--sparsity", "0.5",
                 "--out", str(other), "--resume"]) == 2
    assert "another recipe" in one_line_error(capsys)


def test_sparse_export_reads_the_data_of_the_run_it_exports(tmp_path):
    run = tmp_path / "run"
    assert main(["sparse", "train", "--method", "set", "--epochs", "1", "--data", "mnist1d",
                 "--out", str(run)]) == 0
    exported = tmp_path / "export"
    # without --data the digits CNN would not fit these MLP weights
    assert main(["sparse", "export", "--model", str(run / "model.safetensors"),
                 "--out", str(exported)]) == 0
    report = json.loads((exported / "metrics.json").read_text())
    assert report["export_max_abs_diff"] < 1e-4
    # the data it used is recorded (resolved from the training run's config.json)
    assert json.loads((exported / "config.json").read_text())["options"]["data"] == "mnist1d"


def test_sparse_export_writes_a_model_that_reloads_fast_from_any_folder(tmp_path, monkeypatch):
    """Train on a CSV named by a relative path, export from another folder: the export finds
    the data, writes model.safetensors (dense with zeros) and export.json, and
    rebuild_export turns them back into the fast form with the same outputs."""
    import numpy as np
    import torch

    import neuroplastic as npl
    from neuroplastic.data import load_csv
    from neuroplastic.io import load_model_weights
    from neuroplastic.models import default_model
    from tests.test_cli_errors import csv_text

    work = tmp_path / "work"
    work.mkdir()
    (work / "d.csv").write_text(csv_text([str(i % 3) for i in range(90)], features=40))
    monkeypatch.chdir(work)
    assert main(["sparse", "train", "--method", "gmp", "--sparsity", "0.9", "--epochs", "2",
                 "--data", "d.csv", "--out", "run"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["sparse", "export", "--model", str(work / "run" / "model.safetensors"),
                 "--out", "exported"]) == 0
    folder = elsewhere / "exported"
    layout = json.loads((folder / "export.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert layout["form"] == metrics["export_form"]
    data = load_csv(work / "d.csv")
    model = load_model_weights(default_model(data.input_shape, data.num_classes),
                               folder / "model.safetensors").eval()
    weights = [p for n, p in model.named_parameters() if p.dim() > 1]
    assert sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights) == \
        pytest.approx(0.9, abs=0.002)
    fast = npl.sparse.rebuild_export(model, layout)
    x = data.test.tensors[0]
    with torch.no_grad():
        torch.testing.assert_close(fast(x).contiguous(), model(x), atol=1e-5, rtol=0)
    # every layer the layout names is really in its fast form
    kinds = {n: type(m).__name__ for n, m in fast.named_modules()}
    assert all(kinds[n] == "CSRLinear" for n in layout["csr"])
    assert np.isfinite(metrics["export_speedup"])
    with pytest.raises(npl.NeuroplasticError, match="unknown export form"):
        npl.sparse.rebuild_export(model, {"form": "magic"})
