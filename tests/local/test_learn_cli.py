"""``neuroplastic learn`` end to end (in process): run folders, metric keys, warnings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

from neuroplastic.cli import main
from neuroplastic.data import load_data


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict, str]:
    code = main(["learn", *args, "--out", str(tmp_path / "run"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads(captured.out)
    for name in ("config.json", "metrics.json", "report.html", "model.safetensors"):
        assert (tmp_path / "run" / name).is_file()
    return metrics, captured.err


def test_biprop_run_reports_itself_and_backprop_with_robustness(tmp_path, capsys) -> None:
    metrics, _ = run(tmp_path, capsys, "--rule", "biprop", "--epochs", "3")
    for prefix in ("", "backprop."):
        for key in ("test_acc", "train_acc", "seconds", "robust.fgsm.0.2", "robust.pgd.0.1",
                    "robust.noise.0.3"):
            assert 0 <= metrics[prefix + key] <= (1 if key != "seconds" else 1e4), key
        # a stronger attack never scores above a weaker one by more than noise
        assert metrics[prefix + "robust.pgd.0.3"] <= metrics[prefix + "robust.fgsm.0.3"] + 0.02
    assert metrics["rule"] == "biprop" and metrics["data"] == "digits"
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Accuracy after every epoch" in html and "FGSM" in html


def test_disinhibitory_reports_alignment_and_warns_when_the_loop_does_not_settle(tmp_path, capsys) -> None:
    metrics, err = run(tmp_path, capsys, "--data", "circles", "--hidden", "8", "--epochs", "1",
                       "--param", "solver=euler", "--param", "horizon=0.02", "--no-compare")
    assert set(k for k in metrics if k.startswith("alignment.")) == {
        "alignment.hidden.0", "alignment.hidden.0.sign", "alignment.readout", "alignment.readout.sign"}
    assert metrics["closed_loop.unconverged"] == metrics["closed_loop.solves"] > 0
    assert "did not reach steady state within the horizon (0.02 s)" in err
    assert not any(k.startswith("backprop.") for k in metrics)


def test_softhebb_is_compared_with_backprop_and_random_features(tmp_path, capsys) -> None:
    metrics, _ = run(tmp_path, capsys, "--rule", "softhebb", "--epochs", "2", "--param", "hebbian_epochs=1",
                     "--param", "t_invert=0.5", "--param", "anti_hebbian=false")
    assert {"test_acc", "backprop.test_acc", "random_features.test_acc", "weight_norm.mean"} <= set(metrics)


def test_biprop_trains_a_user_model(tmp_path, capsys) -> None:
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n\ndef net():\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(),\n"
        "                         nn.Linear(256, 12), nn.Tanh(), nn.Linear(12, 10))\n")
    metrics, _ = run(tmp_path, capsys, "--rule", "halfbiprop", "--epochs", "2", "--model-factory",
                     f"{tmp_path / 'nets.py'}:net", "--no-compare")
    assert metrics["test_acc"] > 0.1


def test_generated_toy_data_is_what_it_says() -> None:
    for name, linear_at_most, linear_at_least in (("circles", 0.7, 0.0), ("moons", 1.0, 0.8)):
        split = load_data(name, seed=0)
        x, y = split.train.tensors
        assert x.shape[1] == 2 and split.num_classes == 2
        score = LogisticRegression().fit(x.numpy(), y.numpy()).score(*(t.numpy() for t in split.test.tensors))
        assert linear_at_least <= score <= linear_at_most, (name, score)


def test_robustness_on_a_stratified_test_subset_is_the_evaluation_of_that_subset(tmp_path, capsys) -> None:
    """--robustness-samples N: every network's robustness is that of the seeded, stratified
    subset of N test samples (recomputed here from the trained model), accuracies still use the
    whole test split; 0 skips the evaluation."""
    import torch

    from neuroplastic.data.splits import loader
    from neuroplastic.evaluate.outputs import accuracy
    from neuroplastic.evaluate.robustness import robustness
    from neuroplastic.local.runner import input_bounds, learn

    split = load_data("digits", seed=0)
    result = learn("backprop", split, epochs=2, compare=False, robustness_samples=40)
    trained = result.runs["backprop"]
    subset = split.stratified_subset(test=40, seed=0).test
    assert torch.bincount(subset.tensors[1]).tolist() == [4] * 10
    again = robustness(trained.model, loader(subset, batch_size=512), bounds=input_bounds(split), seed=0)
    assert trained.robustness is not None and trained.robustness.metrics() == again.metrics()
    assert trained.metrics["robust.samples"] == 40
    assert trained.metrics["test_acc"] == accuracy(trained.model, loader(split.test, batch_size=512))

    metrics, err = run(tmp_path / "subset", capsys, "--rule", "backprop", "--epochs", "1",
                       "--robustness-samples", "40")
    assert metrics["robust.samples"] == 40 and "robust.pgd.0.2" in metrics
    assert "robustness measured on 40 of the 360 test samples" in " ".join(err.split())
    metrics, _ = run(tmp_path / "none", capsys, "--rule", "backprop", "--epochs", "1",
                     "--robustness-samples", "0")
    assert not any(k.startswith("robust.") for k in metrics) and "test_acc" in metrics
