"""The Fashion-MNIST benchmarks' two-minute ``--quick`` runs: they run end to end on the real
files, write only the JSON they are given (never the README or benchmarks/results), and
their figures obey what must hold whatever the method's quality: a retrained model never
predicts a class it never saw, masks hold the target sparsity, attack AUCs are AUCs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuroplastic.data.idx import DEBIAN_FOLDERS

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not Path(DEBIAN_FOLDERS["fashion-mnist"]).is_dir(),
                                reason="Fashion-MNIST is not installed (make data, or apt-get install "
                                       "dataset-fashion-mnist)")


def tree_digest() -> str:
    paths = [ROOT / "README.md", *sorted((ROOT / "benchmarks" / "results").glob("*"))]
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in paths)).hexdigest()


def run_quick(script: str, tmp_path: Path) -> dict:
    before = tree_digest()
    out = tmp_path / f"{script}.json"
    env = {**os.environ, "NEUROPLASTIC_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("NEUROPLASTIC_DATA_DIR", None)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--quick",
                           "--json", str(out), "--threads", "1"],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert tree_digest() == before  # the README and the stored results are untouched
    assert "Targets" in done.stdout
    return json.loads(out.read_text())


def test_quick_forget_benchmark(tmp_path):
    results = run_quick("forget", tmp_path)
    mlp, cnn = results["setups"]["mlp"], results["setups"]["cnn"]
    for part in (mlp, cnn):
        retrain = part["classes"][0]["retrain"]
        assert retrain["forget_acc"] == 0.0  # never saw the class: never predicts it
        assert 0.0 <= part["original_train_acc"] <= 1.0 and part["wall_seconds"] > 0
    assert mlp["parameters"] == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    for scenario in ("random", "random100"):
        for name, row in mlp[scenario].items():
            if name == "ssd-train-d":  # a row of the digits table only, not attacked by U-LiRA
                continue
            assert 0.0 <= row["ulira_auc"] <= 1.0
            assert 0.0 <= row["ulira_tpr_at_1fpr"] <= row["ulira_tpr_at_5fpr"] <= 1.0
        # the attack sees a model retrained without the request differently from the original
        assert mlp[scenario]["original"]["ulira_auc"] != mlp[scenario]["retrain"]["ulira_auc"]
    assert "random" not in cnn


def test_quick_sparse_benchmark(tmp_path):
    results = run_quick("sparse", tmp_path)
    cnn = results["cnn"]
    for method in ("granet", "rigl", "set", "gmp", "snip", "magnitude", "granet, dense start"):
        # the masks hold 10% of the weights; a weight regrown at zero that got no gradient
        # stays an exact zero, so the counted sparsity may exceed the target, never fall short
        assert 0.9 - 1e-4 <= cnn[method]["0.9"]["actual_sparsity"][0] <= 0.91, method
        assert 0.0 < cnn[method]["0.9"]["inference_flops_ratio"][0] < 1.0
    assert cnn["export"]["export_max_abs_diff"] < 1e-4  # the export computes the same function
    # started dense, GraNet trains denser than from its 50% start: more training FLOPs
    started, default = cnn["granet, dense start"]["0.9"], cnn["granet"]["0.9"]
    assert started["train_flops_ratio"][0] > default["train_flops_ratio"][0]
    resnet = results["resnet18"]
    assert resnet["parameters"] == 11_172_810  # torchvision's resnet18 with a 1-channel 3x3 stem
    for method in ("granet", "rigl"):
        assert 0.9 - 1e-4 <= resnet[method]["actual_sparsity"] <= 0.91


def test_quick_continual_benchmark(tmp_path):
    results = run_quick("continual", tmp_path)
    shapes = {"permuted-fashion-mnist/domain": 3, "split-fashion-mnist/task": 5,
              "split-fashion-mnist/class": 5}
    for key, tasks in shapes.items():
        for entry in results["scenarios"][key].values():
            for run in entry["runs"]:
                matrix = np.array(run["matrix"])
                assert matrix.shape == (tasks, tasks)
                assert run["acc"] == pytest.approx(matrix[-1].mean())
                assert run["bwt"] == pytest.approx(np.mean(matrix[-1, :-1] - np.diag(matrix)[:-1]))
    # CLNP freezes what earlier tasks use and masks the other tasks' units: nothing is forgotten
    clnp = results["scenarios"]["split-fashion-mnist/task"]["clnp"]["runs"]
    assert [run["bwt"] for run in clnp] == [0.0, 0.0]
    assert "clnp" not in results["scenarios"]["split-fashion-mnist/class"]  # needs task labels


def test_quick_learn_benchmark(tmp_path):
    results = run_quick("local", tmp_path)
    labels = [run["label"] for run in results["schedule"]]
    assert set(results["runs"]) == set(labels)
    for label, seeds in results["runs"].items():
        assert [r["seed"] for r in seeds] == results["seeds"]
        for run in seeds:
            assert 0.0 <= run["test_acc"] <= 1.0 and run["seconds"] > 0
            if not label.startswith("fgsm-at"):  # every rule has its backprop twin on the same net
                assert 0.0 <= run["backprop.test_acc"] <= 1.0
    softhebb = next(seeds for label, seeds in results["runs"].items() if label.startswith("softhebb"))
    assert "random_features.test_acc" in softhebb[0]  # SoftHebb's control
    for prefix in ("biprop", "fgsm-at"):  # the robustness rows are measured under every attack
        seeds = next(seeds for label, seeds in results["runs"].items() if label.startswith(prefix))
        for key in ("robust.fgsm.0.1", "robust.fgsm.0.2", "robust.pgd.0.1", "robust.pgd.0.2",
                    "robust.noise.0.3"):
            assert all(0.0 <= run[key] <= 1.0 for run in seeds), (prefix, key)


def test_quick_adapt_benchmark(tmp_path):
    results = run_quick("adapt", tmp_path)
    (run,) = results["corruptions"]
    for method in ("source", "norm", "tent", "nhl"):
        errors = [run[f"{method}.{name}.{severity}"] for name in ("gaussian_noise", "fog")
                  for severity in range(1, 6)]
        assert all(0.0 <= e <= 1.0 for e in errors)
    for method in ("source", "tent"):  # the headline figure is the mean of its cells
        cells = [v for k, v in run.items()
                 if k.startswith(f"{method}.") and k.count(".") == 2 and k.endswith((".3", ".4", ".5"))]
        assert len(cells) == 3 * 11
        assert run[f"mean_error_3to5.{method}"] == pytest.approx(sum(cells) / len(cells))
    for key, seeds in results["shift"].items():
        assert key.split("/")[1] in ("homeostatic", "constant", "random-lr")
        assert all(0.0 <= r["recovery_acc"] <= 1.0 and 0.0 <= r["final_test_acc"] <= 1.0 for r in seeds)
