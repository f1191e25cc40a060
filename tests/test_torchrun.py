"""Every command under ``torchrun --nproc-per-node 2`` (gloo, CPU) against the same command in
one process: the metrics agree (timings aside), rank 0 alone writes its run folder, and an
error on one rank ends both ranks with one ``error:`` line."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TIMINGS = ("second", "speedup", "overhead", "per_batch", "cost", "time")
MEASURED = ("export_form", "export_max_abs_diff", "warnings")  # follow the form measured fastest


def _command(args: list[str], *, processes: int) -> list[str]:
    """``neuroplastic <args>`` in one process, or under torchrun with ``processes``."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={processes}"] if processes > 1 else [sys.executable]
    return [*launcher, "-m", "neuroplastic", *args]


def _env(cwd: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "NEUROPLASTIC_CACHE_DIR": str(cwd / "cache"), "OMP_NUM_THREADS": "1",
           "GLOO_SOCKET_IFNAME": "lo", **extra}
    env.pop("WORLD_SIZE", None)
    return env


def _run(args: list[str], cwd: Path, *, processes: int) -> subprocess.CompletedProcess:
    return subprocess.run(_command(args, processes=processes), cwd=cwd, env=_env(cwd),
                          capture_output=True, text=True, timeout=420)


def _pair(tmp_path: Path, args: list[str], *, share_cache: bool = False) -> tuple[Path, Path]:
    """Run ``args`` in one process and in two, each in a folder of its own; return the two
    run folders, after checking that each folder holds nothing but its run and cache.
    ``share_cache``: the two-process run starts with the one-process run's cache (its
    trained base model)."""
    folders = []
    for processes in (1, 2):
        cwd = tmp_path / f"p{processes}"
        cwd.mkdir()
        if share_cache and processes == 2:
            shutil.copytree(tmp_path / "p1" / "cache", cwd / "cache")
        done = _run([*args, "--out", "run"], cwd, processes=processes)
        assert done.returncode == 0, done.stderr[-3000:]
        assert sorted(p.name for p in cwd.iterdir() if p.name != "cache") == ["run"]
        assert not [p for p in (cwd / "run").iterdir() if p.name.startswith(".")]
        folders.append(cwd / "run")
    return folders[0], folders[1]


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def _assert_same_metrics(one: Path, two: Path, *, tolerance: float) -> int:
    """Every metric but timings agrees within ``tolerance``; returns how many were compared."""
    a, b = _metrics(one), _metrics(two)
    assert set(a) - set(MEASURED) == set(b) - set(MEASURED)
    compared = 0
    for key, value in a.items():
        if any(word in key for word in TIMINGS) or key in MEASURED:
            continue
        if isinstance(value, float) and math.isfinite(value):
            assert abs(value - b[key]) <= tolerance, (key, value, b[key])
            compared += 1
        else:
            assert value == b[key], key
    return compared


def test_continual_under_torchrun_equals_one_process(tmp_path):
    one, two = _pair(tmp_path, ["continual", "--scenario", "split-digits", "--method", "ewc",
                                "--epochs", "2"])
    assert _assert_same_metrics(one, two, tolerance=1e-4) >= 3
    assert _metrics(one)["acc"] > 0.9  # it learned: the comparison is not of two blank runs


def test_sparse_training_under_torchrun_takes_the_same_masks(tmp_path):
    one, two = _pair(tmp_path, ["sparse", "train", "--method", "granet", "--sparsity", "0.9",
                                "--epochs", "3"])
    _assert_same_metrics(one, two, tolerance=1e-6)
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    masked = [name for name in a if name.endswith("weight") and bool((a[name] == 0).any())]
    assert masked, "no layer was pruned"
    for name in a:
        assert torch.equal(a[name] == 0, b[name] == 0), name  # the masks, bit for bit
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_export_under_torchrun_writes_the_one_process_model(tmp_path):
    done = _run(["sparse", "train", "--method", "set", "--sparsity", "0.9", "--epochs", "1",
                 "--out", "trained"], tmp_path, processes=1)
    assert done.returncode == 0, done.stderr[-3000:]
    trained = tmp_path / "trained"
    (tmp_path / "export").mkdir()
    one, two = _pair(tmp_path / "export", ["sparse", "export", "--model", str(trained / "model.safetensors")])
    assert _assert_same_metrics(one, two, tolerance=1e-6) >= 1
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert a.keys() == b.keys() and any(bool((a[name] == 0).any()) for name in a)
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_list_under_torchrun_prints_once_what_one_process_prints(tmp_path):
    one, two = (_run(["list"], tmp_path, processes=processes) for processes in (1, 2))
    assert one.returncode == two.returncode == 0, two.stderr[-2000:]
    assert one.stdout.count("ssd-auto") >= 1 and two.stdout == one.stdout


def test_make_demo_under_torchrun_trains_the_one_process_model(tmp_path):
    """10 steps of the demo language model: its loss is a mean over answer tokens, so the
    ranks' parts are weighted by their token shares (rows hold different numbers)."""
    models = []
    for processes in (1, 2):
        cwd = tmp_path / f"p{processes}"
        cwd.mkdir()
        done = _run(["skills", "make-demo", "--steps", "10", "--out", "model"], cwd, processes=processes)
        assert done.returncode == 0, done.stderr[-3000:]
        assert sorted(p.name for p in cwd.iterdir() if p.name != "cache") == ["model"]
        models.append(load_file(cwd / "model" / "model.safetensors"))
    one, two = models
    assert one.keys() == two.keys()
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=1e-5, atol=1e-6)


def test_pruning_under_torchrun_takes_the_same_masks(tmp_path):
    # from the same dense model (its 30 epochs under torchrun end up to a few % apart in single
    # weights: Adam turns rounding-sized gradients into full steps), pruned and finetuned
    one, two = _pair(tmp_path, ["sparse", "prune", "--sparsity", "0.8", "--finetune-epochs", "2"],
                     share_cache=True)
    _assert_same_metrics(one, two, tolerance=1e-6)
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert any(bool((a[name] == 0).any()) for name in a)
    for name in a:  # 2 epochs of finetuning: rounding grows to a few 1e-6
        assert torch.equal(a[name] == 0, b[name] == 0), name
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def test_ctrl_c_under_torchrun_says_so_once_and_keeps_only_the_checkpoint(tmp_path):
    proc = subprocess.Popen(
        _command(["sparse", "train", "--epochs", "1000", "--out", "run"], processes=2),
        cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group: a terminal's Ctrl-C reaches every process
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 180  # both ranks train once rank 0 wrote an epoch's checkpoint
        while not (tmp_path / "run" / "checkpoint.safetensors").exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        assert proc.poll() is None
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    said = [line for line in err.splitlines() if "interrupted" in line and "SignalException" not in line]
    assert len(said) == 1 and said[0].startswith("interrupted") and "--resume" in said[0], err[-2000:]
    assert not [line for line in err.splitlines() if line.startswith("error:")]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["run"]


def test_forget_under_torchrun_equals_one_process(tmp_path):
    """The request (sharded importance passes, all-reduced sums, the dampening) from the same
    trained model. Training under torchrun is not bit for bit one process's: rounding differs,
    and over 10 epochs Adam makes it a few % in single weights of this CNN (rounding-sized
    gradients get full steps), so the base model is shared and retraining is left out (the
    training rows are tested on their own)."""
    one, two = _pair(tmp_path, ["forget", "--forget-class", "3", "--method", "ssd", "--epochs", "10",
                                "--no-retrain"], share_cache=True)
    assert _assert_same_metrics(one, two, tolerance=1e-6) >= 5
    metrics = _metrics(one)
    assert metrics["original.forget_acc"] > 0.5 and metrics["choice.selected_fraction"] > 0  # it dampened


def test_ulira_shadows_split_between_ranks_give_the_one_process_attack(tmp_path):
    one, two = _pair(tmp_path, ["forget", "--scenario", "random", "--fraction", "0.1", "--method", "ssd",
                                "--mia", "ulira", "--shadows", "6", "--no-retrain", "--epochs", "10"])
    # the model under test is trained with sharded batches (float rounding moves the entropy
    # attack's AUC by about 1e-6); every shadow is trained by one rank alone, as in one process
    _assert_same_metrics(one, two, tolerance=1e-4)
    metrics, split = _metrics(one), _metrics(two)
    attack = [k for k in metrics if ".ulira." in k and "seconds" not in k]
    assert len(attack) >= 10 and all(metrics[k] == split[k] for k in attack)
    assert 0.0 <= metrics["unlearned.ulira.auc"] <= 1.0 and metrics["ulira.shadows"] == 6


@pytest.mark.parametrize("args", [
    ["learn", "--epochs", "2"],                                     # dis-inhibitory control
    ["learn", "--rule", "biprop", "--epochs", "2"],
    ["shift", "--swaps", "5", "--epochs", "1"],
], ids=["learn-dic", "learn-biprop", "shift"])
def test_learn_and_shift_under_torchrun_equal_one_process(tmp_path, args):
    one, two = _pair(tmp_path, args)
    assert _assert_same_metrics(one, two, tolerance=1e-5) >= 2


def test_adapt_under_torchrun_equals_one_process_from_the_same_source_model(tmp_path):
    # the source CNN has BatchNorm, whose batch statistics are per rank on CPU (torch's
    # SyncBatchNorm needs GPUs): its training under torchrun is close to one process's but not
    # equal, so both runs adapt the one-process source model
    one, two = _pair(tmp_path, ["adapt", "--corruption", "gaussian_noise:3", "--epochs", "2"],
                     share_cache=True)
    assert _assert_same_metrics(one, two, tolerance=1e-6) >= 2


def test_forget_skill_under_torchrun_equals_one_process(tmp_path):
    one, two = _pair(tmp_path, ["forget", "skill", "--demo-skill", "sorting", "--method", "na"])
    assert _assert_same_metrics(one, two, tolerance=1e-6) >= 3


FACTORY = '''
import os
from torch import nn

def build():
    if os.environ.get("RANK") == "1":
        raise ValueError("rank 1 cannot build this model")
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
'''


def test_an_error_on_one_rank_ends_both_with_one_line(tmp_path):
    (tmp_path / "badrank.py").write_text(FACTORY)
    begin = time.perf_counter()
    done = _run(["forget", "--forget-class", "3", "--model-factory", "badrank.py:build", "--out", "run"],
                tmp_path, processes=2)
    assert time.perf_counter() - begin < 120  # no rank hangs
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: badrank.py:build raised ValueError: rank 1 cannot build this model"]
    # torchrun's own summary: both workers ended with our exit code 2 (torchrun itself exits 1)
    assert done.returncode != 0 and done.stderr.count("exitcode  : 2 ") == 2, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["badrank.py"]


def test_a_bad_setting_every_rank_reads_is_one_line(tmp_path):
    done = subprocess.run(_command(["list"], processes=2), cwd=tmp_path,
                          env=_env(tmp_path, NEUROPLASTIC_COLLECTIVE_TIMEOUT="soon"),
                          capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: $NEUROPLASTIC_COLLECTIVE_TIMEOUT must be a number of seconds > 0, got 'soon'"]
    assert done.returncode != 0
