"""benchmarks/cost.py --quick: it runs end to end, writes only the JSON it is given, and its
figures obey what must hold whatever the machine's speed (no timing is asserted): the
per-sample Fisher equals the batch-size-1 loop, the masks' accounting adds up, every rung
has every section's ratios, and the learn and skill parts ran."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from tests.test_benchmarks_quick import tree_digest

ROOT = Path(__file__).resolve().parent.parent


def test_quick_cost_benchmark(tmp_path):
    before = tree_digest()
    out = tmp_path / "cost.json"
    env = {**os.environ, "NEUROPLASTIC_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, str(ROOT / "benchmarks" / "cost.py"), "--quick", "--json", str(out),
               "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert tree_digest() == before  # the README and the stored results are untouched
    results = json.loads(out.read_text())
    (mlp,) = results["models"].values()
    assert mlp["parameters"] == 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10
    assert mlp["training accuracy"] >= 0.99  # trained until it fits, as a forget request expects
    assert mlp["per-sample Fisher max relative difference"] < 1e-4
    for key in ("ssd cold", "ssd cached", "lfssd cold", "ssd-auto cold", "ssd-auto cached", "masked step",
                "mask update", "masked step (GraNet schedule)", "export speed-up", "ewc step",
                "ewc end of task", "si step", "gpm step", "hlop step", "clnp step",
                "importance peak memory", "training peak memory", "importance peak tensor memory",
                "training peak tensor memory"):
        assert math.isfinite(mlp[key]) and mlp[key] >= 0, key
    # the schedule's average: a masked step plus the mask update spread over GraNet's 100 steps
    assert math.isclose(mlp["masked step (GraNet schedule)"], mlp["masked step"] + mlp["mask update"] / 100)
    learn = results["learn"]
    assert 1 <= learn["disinhibitory root evaluations (784-256-10)"] < 50
    skills = {"calibrated guard generation overhead", "neuron adjust generation overhead",
              "ActivationStats tokens per second"}
    assert set(results["skills"]) >= skills
    assert "Targets" in done.stdout


def test_peak_tensor_bytes_is_the_largest_sum_of_live_tensors():
    """Against hand-counted allocations: 4 MB, then 2 MB more while the first lives, both
    freed, then 5 MB alone: the peak is 6 MB, never the 11 MB allocated in all."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from cost import peak_tensor_bytes
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import torch

    def allocate() -> None:
        first = torch.ones(1_000_000)  # 4,000,000 bytes of float32
        second = torch.ones(500_000)
        del first, second
        third = torch.ones(1_250_000)
        del third

    assert peak_tensor_bytes(allocate) == 6_000_000


def test_a_merged_rerun_keeps_the_epoch_its_stored_figures_were_measured_against():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from cost import merge_rung
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    stored = {"parameters": 10, "epoch seconds": 2.0, "accuracy": 0.9, "training accuracy": 1.0,
              "training epochs": 3, "ssd cold": 1.1, "importance extra tensor memory": 0.5}
    rerun = {"parameters": 10, "epoch seconds": 9.0, "accuracy": 0.8, "training accuracy": 0.99,
             "training epochs": 4, "importance extra tensor memory": 0.3}
    memory_only = merge_rung(stored, rerun, {"memory"})
    assert memory_only == {**stored, "importance extra tensor memory": 0.3}
    with_forget = merge_rung(stored, {**rerun, "ssd cold": 1.4}, {"memory", "forget"})
    assert with_forget == {**rerun, "ssd cold": 1.4}
    assert merge_rung({}, rerun, {"memory"}) == rerun  # a new rung takes its own training run
