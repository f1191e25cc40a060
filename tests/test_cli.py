"""The command line, end to end on small budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neuroplastic.cli import main
from neuroplastic.data import digits, full_class, loader
from neuroplastic.evaluate import accuracy
from neuroplastic.io import load_model_weights, save_model
from neuroplastic.models import default_model

QUICK = ["--epochs", "3"]


def test_list_prints_the_registry_one_line_per_method(capsys):
    from neuroplastic import registry

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    entries = registry.available()
    assert len(lines) == len(entries)  # one line each
    assert {tuple(line.split()[:2]) for line in lines} == {(e.kind, e.name) for e in entries}
    for kind, name in (("learn", "backprop"), ("shift", "homeostatic"), ("shift", "random-lr"),
                       ("shift", "constant"), ("forget", "retrain")):
        assert (kind, name) in {(e.kind, e.name) for e in entries}
    assert any("backprop" in line and "(baseline)" in line for line in lines)
    assert main(["list", "--json", "--kind", "shift"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(e["name"] for e in listed) == ["constant", "homeostatic", "random-lr"]
    assert main(["list", "--kind", "bogus"]) == 2
    assert "unknown kind 'bogus'" in capsys.readouterr().err


def test_forget_class_writes_a_complete_run_folder(tmp_path, capsys, monkeypatch):
    from rich.status import Status

    shown: list[str] = []  # the console's status line, message by message
    monkeypatch.setattr(Status, "update", lambda self, status=None, **_: shown.append(str(status)))
    out = tmp_path / "run"
    code = main(["forget", "--forget-class", "3", *QUICK, "--compare", "ssd", "--out", str(out),
                 "--json"])
    assert code == 0
    for line in ("unlearning with ssd-auto: full importance", "unlearning with ssd-auto: search",
                 "comparing with ssd: full importance", "comparing with ssd: dampen",
                 "evaluating the unlearned model", "evaluating the retrained model",
                 "evaluating ssd's model"):
        assert line in shown, shown
    assert any(m.startswith("retraining from scratch on the retain set: step ") for m in shown)
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed == metrics
    for model in ("original", "unlearned", "retrain", "ssd"):
        for key in ("forget_acc", "retain_acc", "test_acc", "mia", "seconds"):
            assert isinstance(metrics[f"{model}.{key}"], float), f"{model}.{key}"
    assert metrics["method"] == "ssd-auto" and metrics["scenario"] == "class"
    for key in ("speedup_vs_retrain", "cached_request_seconds", "gap.forget_acc"):
        assert isinstance(metrics[key], float)
    assert metrics["speedup_vs_retrain"] == pytest.approx(
        metrics["retrain.seconds"] / metrics["unlearned.seconds"])
    for key, value in metrics.items():
        if key.endswith("_acc") or key.endswith(".mia"):
            assert (-1 if key.startswith("gap.") else 0) <= value <= 1, key
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["forget_class"] == 3 and config["train"]["epochs"] == 3
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # per-class bars + alpha trade-off
    # the saved weights are the unlearned model: re-evaluating them reproduces the metrics
    data = digits()
    model = load_model_weights(default_model((1, 8, 8), 10), out / "model.safetensors")
    scenario = full_class(data, 3)
    assert accuracy(model, loader(scenario.forget)) == pytest.approx(metrics["unlearned.forget_acc"])
    assert accuracy(model, loader(scenario.test_retain)) == pytest.approx(metrics["unlearned.test_acc"])


@pytest.mark.parametrize("scenario", ["random", "subclass", "corrective"])
def test_other_scenarios_run(tmp_path, scenario):
    out = tmp_path / scenario
    assert main(["forget", "--scenario", scenario, *QUICK, "--no-retrain", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scenario"] == scenario and "retrain.forget_acc" not in metrics
    if scenario == "random":  # a holdout target: the repair's own goal, told in words
        assert metrics["choice.repair_goal_forget_acc"] > metrics["choice.goal_forget_acc"]
        assert "forget accuracy a repair must hold" in (out / "report.html").read_text()
    if scenario == "corrective":
        assert 0 <= metrics["unlearned.attack_success"] <= 1
        assert metrics["choice.target_forget_acc"] == 0.0
    if scenario == "subclass":
        assert "unlearned.forget_test_acc" in metrics


def test_bring_your_own_model_and_data(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "from torch import nn\n"
        "def build_model():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = (rng.normal(size=(120, 12)) + y[:, None]).astype("float32")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    import mymodels

    torch.manual_seed(0)
    weights = tmp_path / "weights.safetensors"
    save_model(mymodels.build_model(), weights)
    out = tmp_path / "run"
    code = main(["forget", "--data", str(tmp_path / "data.npz"), "--model-factory",
                 "mymodels:build_model", "--model", str(weights), "--forget-class", "1",
                 "--method", "ssd", "--alpha", "5", *QUICK, "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["choice.alpha"] == 5.0 and "original.seconds" in metrics


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--forget-class", "42"], "not among the labels"),
    (["--forget-indices", "1,99999"], "row 99999 is not in the data"),
    (["--method", "ssd", "--alpha", "-1", "--forget-class", "1"], "alpha"),
    (["--alpha", "20", "--forget-class", "1"], "chooses alpha itself"),
    (["--method", "magic", "--forget-class", "1"], "unknown forget method"),
    (["--scenario", "weird"], "unknown scenario"),
    (["--data", "nowhere.npz", "--forget-class", "1"], "not found"),
])
def test_bad_input_exits_nonzero_with_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["forget", *args, *QUICK, "--out", str(out)]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


def test_corrupt_checkpoint_and_wrong_data_file(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage")
    assert main(["forget", "--model", str(bad), "--forget-class", "1", *QUICK]) == 2
    assert "cannot read safetensors" in one_line_error(capsys)
    assert main(["forget", "--model", str(tmp_path / "none.safetensors"), "--forget-class", "1"]) == 2
    assert "checkpoint not found" in one_line_error(capsys)
    wrong = tmp_path / "wrong.safetensors"
    save_model(torch.nn.Linear(3, 3), wrong)
    assert main(["forget", "--model", str(wrong), "--forget-class", "1"]) == 2
    assert "does not fit the model" in one_line_error(capsys)
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,label\n1,2,x\n")
    assert main(["forget", "--data", str(csv), "--forget-class", "1"]) == 2
    assert "non-numeric" in one_line_error(capsys)


def test_existing_run_folder_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["forget", "--forget-class", "1", "--out", str(tmp_path)]) == 2
    assert "already exists" in one_line_error(capsys)
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_forget_rows_of_a_csv_are_exactly_those_records(tmp_path, capsys):
    """Rows r1, r2, r3 of a generated CSV (feature f0 = the row number) become exactly the
    forget set, wherever the split put them; a requested row in the test split is reported
    and left out; ids name the same records."""
    from neuroplastic.data import given_rows, load_csv, rows_of_ids

    rng = np.random.default_rng(0)
    lines = ["f0,f1,f2,label,id"]
    for row in range(90):
        lines.append(f"{row},{rng.normal():.3f},{rng.normal():.3f},{row % 3},rec-{row}")
    path = tmp_path / "d.csv"
    path.write_text("\n".join(lines) + "\n")
    data = load_csv(path, id_column="id")
    test_row = int(data.rows["test"][0])
    wanted = [int(data.rows["train"][i]) for i in (40, 3, 17)]
    scenario = given_rows(data, [*wanted, test_row])
    assert sorted(scenario.forget.tensors[0][:, 0].long().tolist()) == sorted(wanted)
    assert scenario.skipped_rows == {test_row: "test"}
    retained = set(scenario.retain.tensors[0][:, 0].long().tolist())
    assert not retained & set(wanted) and len(retained) == len(data.train) - 3
    assert rows_of_ids(data, [f"rec-{r}" for r in wanted]) == wanted
    assert data.input_shape == (3,)  # the id column is not a feature

    out = tmp_path / "run"
    (tmp_path / "rows.txt").write_text("\n".join(str(r) for r in [*wanted, test_row]) + "\n")
    assert main(["forget", "--data", str(path), "--id-column", "id", "--forget-rows",
                 str(tmp_path / "rows.txt"), "--method", "ssd", "--no-retrain", "--epochs", "2",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["forgotten_rows"] == ",".join(map(str, sorted(wanted)))
    assert metrics["skipped_rows"] == f"{test_row}:test"
    err = capsys.readouterr().err
    assert f"{test_row} (test)" in err and "never trained on" in err
    assert f"{test_row} (test)" in (out / "report.html").read_text()
    (tmp_path / "ids.txt").write_text("".join(f"rec-{r}\n" for r in wanted))
    by_id = tmp_path / "by-id"
    assert main(["forget", "--data", str(path), "--id-column", "id", "--forget-ids",
                 str(tmp_path / "ids.txt"), "--method", "ssd", "--no-retrain", "--epochs", "2",
                 "--out", str(by_id)]) == 0
    assert json.loads((by_id / "metrics.json").read_text())["forgotten_rows"] == metrics["forgotten_rows"]
    capsys.readouterr()
    assert main(["forget", "--data", str(path), "--id-column", "id", "--forget-indices", str(test_row),
                 "--out", str(tmp_path / "none")]) == 2
    assert "none of the 1 requested rows was trained on" in one_line_error(capsys)


def test_ulira_and_attack_power_in_a_forget_run(tmp_path):
    """--mia ulira adds <model>.ulira.* for the original (the attack's power), the
    unlearned, the retrained and every compared model; the entropy attack's own AUC on the
    original model and whether it is informative are always there."""
    out = tmp_path / "run"
    assert main(["forget", "--scenario", "random", "--method", "ssd", "--compare", "finetune",
                 "--epochs", "2", "--mia", "ulira", "--shadows", "6", "--ssd-full", "train",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for model in ("original", "unlearned", "retrain", "finetune"):
        for key in ("auc", "tpr_at_1fpr", "tpr_at_5fpr", "seconds"):
            assert isinstance(metrics[f"{model}.ulira.{key}"], float), f"{model}.ulira.{key}"
        assert 0 <= metrics[f"{model}.ulira.auc"] <= 1
    assert metrics["ulira.shadows"] == 6.0 and metrics["ssd_full"] == "train"
    assert 0 <= metrics["original.mia_auc"] <= 1
    assert metrics["mia_informative"] == float(metrics["original.mia_auc"] >= 0.6)
    html = (out / "report.html").read_text()
    assert "ulira.auc" in html and "U-LiRA AUC" in html


def test_attack_non_members_can_be_the_validation_split(digits_data, trained_mlp):
    from neuroplastic.data import full_class
    from neuroplastic.evaluate import collect, entropy_mia
    from neuroplastic.evaluate.forgetting import evaluate_forgetting

    scenario = full_class(digits_data, 3)
    got = evaluate_forgetting(trained_mlp, scenario, nonmembers="validation", attack_power=True)

    def run(dataset):
        return collect(trained_mlp, loader(dataset, batch_size=256))

    expected = entropy_mia(run(scenario.retain), run(digits_data.val), run(scenario.forget))
    assert got["mia"] == expected
    assert 0 <= got["mia_auc"] <= 1


def test_one_class_retain_set_is_said_in_words(tmp_path, capsys):
    """Forgetting one of two classes leaves a single-class retain set: retraining then
    predicts that class everywhere. Console, report and metrics.json say so."""
    from tests.test_cli_errors import csv_text

    (tmp_path / "two.csv").write_text(csv_text([str(i % 2) for i in range(60)]))
    out = tmp_path / "run"
    assert main(["forget", "--data", str(tmp_path / "two.csv"), "--forget-class", "1", "--method",
                 "ssd", "--epochs", "2", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["retain_classes"] == 1.0
    assert metrics["retrain.test_acc"] == 1.0  # the constant predictor: why it must be said
    assert "retain set holds a single class" in metrics["warnings"]
    assert "retain set holds a single class" in capsys.readouterr().err
    assert "retain set holds a single class" in (out / "report.html").read_text()


def test_continual_run_writes_matrix_metrics_and_a_heatmap(tmp_path):
    out = tmp_path / "run"
    assert main(["continual", "--method", "ewc", "--param", "lam=10", "--compare", "finetune",
                 "--scenario", "split-digits", "--epochs", "1", "--hidden", "32", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "ewc" and metrics["setting"] == "task" and metrics["tasks"] == 5.0
    for prefix in ("", "finetune."):
        matrix = [[metrics[f"{prefix}matrix.{t}.{j}"] for j in range(5)] for t in range(5)]
        final = matrix[-1]
        assert metrics[f"{prefix}acc"] == pytest.approx(sum(final) / 5)
        assert metrics[f"{prefix}bwt"] == pytest.approx(sum(final[j] - matrix[j][j] for j in range(4)) / 4)
        assert "fwt" in [k.removeprefix(prefix) for k in metrics]
    assert json.loads((out / "config.json").read_text())["params"] == {"lam": 10}
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 3


def test_continual_takes_a_built_in_architecture(tmp_path, built_architectures):
    """--model-arch cnn trains PyTorch's MNIST CNN on an image scenario (GPM then projects
    convolution gradients too); an unknown name is one line."""
    built = built_architectures
    out = tmp_path / "run"
    assert main(["continual", "--method", "gpm", "--scenario", "split-digits", "--model-arch", "cnn",
                 "--epochs", "2", "--out", str(out)]) == 0
    assert built and all(b == ("cnn", (1, 8, 8), 10, "MnistCNN") for b in built)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["acc"] > 0.55  # learned beyond the 2-way heads' chance of 0.5
    assert main(["continual", "--model-arch", "resnet", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_a_diverged_run_warns_on_the_console_in_the_report_and_in_metrics(tmp_path, capsys):
    """Plain-gradient EWC at an absurd lambda turns the weights to NaN: the run still ends
    (exit 0) but says so in all three places."""
    out = tmp_path / "run"
    assert main(["continual", "--method", "ewc", "--param", "proximal=false", "--param", "lam=1e8",
                 "--epochs", "2", "--scenario", "split-digits", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: ewc: the weights are not finite" in err
    assert "at chance level" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert "not finite" in metrics["warnings"] and "chance level" in metrics["warnings"]
    html = (out / "report.html").read_text()
    assert html.index("class='banner'>ewc: the weights are not finite") < html.index("<h2>")


def test_reports_say_what_happened_with_chance_and_params(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["continual", "--method", "gpm", "--param", "threshold=0.9", "--epochs", "2",
                 "--scenario", "split-digits", "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "gpm ended with ACC" in html and "(chance 0.500)" in html and "threshold" in html
    assert "warnings" not in json.loads((out / "metrics.json").read_text())  # a healthy run
    out = tmp_path / "l"
    assert main(["learn", "--rule", "biprop", "--epochs", "2", "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "biprop reached test accuracy" in html and "backprop of the same network" in html
    assert html.index("Headline") < html.index("Every metric")
    assert "softhebb" not in html  # the curve's title names readout epochs only for softhebb


def test_forget_class_is_the_same_command_as_forget(tmp_path):
    """`forget class` (sibling of `forget skill`) and the old spelling `forget` run the same job."""
    runs = []
    for command in (["forget"], ["forget", "class"]):
        out = tmp_path / "-".join(command)
        assert main([*command, "--forget-class", "2", "--epochs", "2", "--method", "ssd", "--no-retrain",
                     "--out", str(out)]) == 0
        runs.append(json.loads((out / "metrics.json").read_text()))
    keys = [k for k in runs[0] if k.endswith("_acc")]
    assert keys and all(runs[0][k] == runs[1][k] for k in keys)


def test_a_commands_own_warnings_reach_metrics_json(tmp_path):
    """Results carry their warnings (here a continual method that forgot a lot), and the
    run folder's metrics.json lists them beside the health checks."""
    out = tmp_path / "run"
    assert main(["continual", "--method", "finetune", "--scenario", "permuted-digits", "--tasks", "3",
                 "--epochs", "3", "--hidden", "32", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bwt"] < -0.2 and f"finetune forgot a lot: BWT {metrics['bwt']:.3f}" in metrics["warnings"]


def test_forget_takes_typed_params_like_every_command(tmp_path):
    out = tmp_path / "run"
    assert main(["forget", "--forget-class", "1", "--method", "ssd", "--param", "alpha=20",
                 "--param", "lam=0.5", "--epochs", "2", "--no-retrain", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["method_kwargs"] == {"alpha": 20.0, "lam": 0.5}


def test_sparse_train_takes_typed_params(tmp_path):
    out = tmp_path / "run"
    assert main(["sparse", "train", "--method", "granet", "--param", "death_rate=0.3", "--param",
                 "masking=parametrize", "--epochs", "1", "--out", str(out)]) == 0
    recipe = json.loads((out / "config.json").read_text())["recipe"]
    assert recipe["method_kwargs"] == {"death_rate": 0.3, "masking": "parametrize"}


def test_a_method_without_an_importance_cache_is_run_once(tmp_path, capsys, monkeypatch):
    """finetune has no cache to time a second request against: it runs once, and no "cached
    request" figure is reported for it."""
    from neuroplastic.forget import baselines

    runs = []
    original = baselines.Finetune._unlearn
    monkeypatch.setattr(baselines.Finetune, "_unlearn",
                        lambda self, *a, **k: runs.append(1) or original(self, *a, **k))
    code = main(["forget", "--forget-class", "3", *QUICK, "--method", "finetune", "--out",
                 str(tmp_path / "run"), "--json"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert runs == [1] and "cached_request_seconds" not in metrics
