"""Bad invocations, table-driven: each gives exit code 2, exactly one `error:` line on
stderr, no traceback, no run folder, and leaves every input file byte-identical. Run in
process (fast); the console script, Ctrl-C and the current folder's importability are
checked in subprocesses below."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from neuroplastic.cli import main
from neuroplastic.io import save_model

FACTORIES = """
from torch import nn

def good():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

def raises():
    raise RuntimeError("the factory broke")

def wrong_width():
    return nn.Linear(5, 3)

def too_few():
    return nn.Linear(4, 2)

def not_module():
    return 3
"""


def csv_text(labels: list[str], *, features: int = 4, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    rows = [",".join(f"{v:.3f}" for v in rng.normal(size=features)) + f",{label}" for label in labels]
    return ",".join(f"f{i}" for i in range(features)) + ",label\n" + "\n".join(rows) + "\n"


def make_inputs(root: Path) -> None:
    """Every input file the table refers to."""
    good = [str(i % 3) for i in range(60)]
    (root / "good.csv").write_text(csv_text(good))
    (root / "single.csv").write_text(csv_text(["1"] * 30))
    (root / "huge.csv").write_text(csv_text([*good[:57], "1000000000", "0", "1"]))
    (root / "frac.csv").write_text(csv_text([*good[:10], "2.5", *good[11:]]))
    (root / "neg.csv").write_text(csv_text([*good[:5], "-1", *good[6:]]))
    (root / "nonnum.csv").write_text("a,b,label\n1,2,0\n1,x,1\n")
    ragged = csv_text(good).splitlines()
    ragged[7] += ",9.9"
    (root / "ragged.csv").write_text("\n".join(ragged) + "\n")
    (root / "notzip.npz").write_text("not a zip")
    np.savez(root / "nokey.npz", inputs=np.zeros((3, 2)))
    np.savez(root / "mismatch.npz", x=np.zeros((3, 2)), y=np.zeros(4))
    (root / "data.json").write_text("{}")
    (root / "bad.safetensors").write_bytes(b"\x00garbage")
    save_model(torch.nn.Linear(3, 3), root / "wrong.safetensors")
    (root / "factories.py").write_text(FACTORIES)
    (root / "afile").write_text("a file")
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("precious")
    (root / "prompts.jsonl").write_text('{"prompt": "add 1+1=", "answer": "2"}\n')
    (root / "llm").mkdir()
    (root / "rows.txt").write_text("1\n2\n")
    (root / "ids.txt").write_text("a\nb\n")


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


F = "factories.py"
CASES = [
    # usage errors from the command-line parser
    (["forget", "--bogus"], "No such option: --bogus"),
    (["forget", "--epochs", "x"], "Invalid value for '--epochs'"),
    (["forget", "--out", "run", "--epochs"], "requires an argument"),
    (["forget", "foo"], "No such command 'foo'"),
    (["wat"], "No such command 'wat'"),
    (["sparse", "wat"], "No such command 'wat'"),
    (["sparse", "export"], "Missing option '--model'"),
    (["list", "--bogus"], "No such option"),
    (["forget", "skill", "--bogus"], "No such option"),
    # numeric ranges and choices, checked before anything is loaded
    (["forget", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["forget", "--epochs", "-3"], "--epochs must be >= 1, got -3"),
    (["forget", "--lr", "-1"], "--lr must be a number > 0"),
    (["forget", "--lr", "0"], "--lr must be a number > 0"),
    (["forget", "--lr", "nan"], "--lr must be a number > 0"),
    (["forget", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["forget", "--device", "cuda"], "no CUDA device"),
    (["forget", "--device", "bogus"], "is not a torch device"),
    (["forget", "--device", "meta"], "use cpu, cuda or mps"),
    (["forget", "--forget-class", "-1"], "--forget-class must be >= 0"),
    (["forget", "--target-class", "-2", "--scenario", "corrective"], "--target-class must be >= 0"),
    (["forget", "--scenario", "weird"], "unknown scenario 'weird'"),
    (["forget", "--method", "magic", "--forget-class", "1"], "unknown forget method 'magic'"),
    (["forget", "--compare", "magic", "--forget-class", "1"], "unknown forget method 'magic'"),
    (["forget", "--alpha", "20", "--forget-class", "1"], "chooses alpha itself"),
    (["forget", "--method", "ssd", "--alpha", "-1", "--forget-class", "1"], "--alpha must be a number > 0"),
    (["forget", "--method", "ssd", "--alpha", "nan", "--forget-class", "1"], "--alpha must be a number > 0"),
    (["forget", "--method", "ssd", "--lam", "0", "--forget-class", "1"], "--lam must be a number > 0"),
    (["forget", "--scenario", "random", "--fraction", "0"], "--fraction must lie in (0, 1)"),
    (["forget", "--scenario", "random", "--fraction", "1.5"], "--fraction must lie in (0, 1)"),
    (["forget", "--scenario", "corrective", "--poison-fraction", "0"], "--poison-fraction must lie"),
    (["forget", "--scenario", "corrective", "--identified", "0"], "--identified must lie in (0, 1]"),
    # the request
    (["forget", "--forget-class", "42"], "forget class 42 is not among the labels"),
    (["forget", "--forget-indices", ""], "--forget-indices is empty"),
    (["forget", "--forget-indices", "1,x"], "--forget-indices: rows must be integers, got 'x'"),
    (["forget", "--forget-indices", "1,99999"], "row 99999 is not in the data (rows 0..1796)"),
    (["forget", "--scenario", "class"], "needs --forget-class"),
    (["forget", "--mia", "ulira", "--shadows", "3"], "--shadows must be an even number >= 6"),
    (["forget", "--shadows", "8"], "--shadows applies with --mia ulira"),
    (["sparse", "train", "--param", "sparsity=0.5"], "sparsity is not a hyperparameter of granet"),
    (["sparse", "train", "--param", "death_rate=2"], "death_rate must be a number in"),
    (["sparse", "train", "--method", "rigl", "--param", "nope=1"], "'nope'; it takes:"),
    (["forget", "--method", "ssd", "--alpha", "5", "--param", "alpha=6"], "alpha is given twice"),
    (["forget", "--method", "ssd", "--param", "alpha=-1"], "alpha must be a number in"),
    (["forget", "--method", "ssd", "--param", "typo=1"], "has no hyperparameter 'typo'; it takes: alpha"),
    (["forget", "--epochs", "3", "skill"], "--epochs is an option of `neuroplastic forget`"),
    (["forget", "--json", "skill"], "--json is an option of `neuroplastic forget`"),
    (["forget", "--model-arch", "vgg"], "--model-arch must be one of mlp, cnn, resnet18"),
    (["sparse", "train", "--model-arch", "cnn", "--data", "mnist1d"], "needs (channels, height, width)"),
    (["adapt", "--model-arch", "resnet18", "--model-factory", "m:f"], "not both"),
    (["learn", "--model-arch", "cnn"], "--model-arch: disinhibitory trains its own network type"),
    (["forget", "--data", "kmnist"], "kmnist not found"),
    (["forget", "--compare", "ssd-auto"], "--compare ssd-auto is the --method itself"),
    (["forget", "--compare", "ssd", "--compare", "ssd"], "--compare names a method twice"),
    (["forget", "--compare", "retrain"], "retraining always runs beside the method"),
    (["forget", "--ulira-variance", "global"], "--ulira-variance applies with --mia ulira"),
    (["forget", "--mia", "ulira", "--ulira-variance", "wide"], "--ulira-variance must be one of"),
    (["forget", "--mia", "lira"], "--mia must be basic or ulira"),
    (["forget", "--ssd-full", "all"], "ssd_full must be one of published, train"),
    (["forget", "--mia-nonmembers", "train"], "--mia-nonmembers must be test-retain or validation"),
    (["forget", "--forget-rows", "missing.txt"], "rows file not found: missing.txt"),
    (["forget", "--forget-rows", "prompts.jsonl"], "rows must be integers"),
    (["forget", "--forget-ids", "prompts.jsonl"], "--forget-ids needs --id-column"),
    (["forget", "--forget-indices", "1", "--forget-rows", "rows.txt"], "name the records once"),
    (["forget", "--id-column", "id", "--forget-ids", "ids.txt"], "--id-column applies to CSV files only"),
    (["forget", "--data", "good.csv", "--id-column", "nope", "--forget-ids", "ids.txt"],
     "has no column 'nope'"),
    (["forget", "--data", "good.csv", "--forget-indices", "100000"], "row 100000 is not in the data"),
    (["forget", "--scenario", "subclass", "--data", "good.csv"], "digits data only"),
    # data files
    (["forget", "--data", "nowhere.npz", "--forget-class", "1"], "data not found: nowhere.npz"),
    (["forget", "--data", "notzip.npz", "--forget-class", "1"], "not an NPZ archive"),
    (["forget", "--data", "nokey.npz", "--forget-class", "1"], "no array 'x'"),
    (["forget", "--data", "mismatch.npz", "--forget-class", "1"], "3 inputs but 4 labels"),
    (["forget", "--data", "data.json", "--forget-class", "1"], "unknown data format '.json'"),
    (["forget", "--data", "nonnum.csv", "--forget-class", "1"], "line 3: non-numeric value 'x'"),
    (["forget", "--data", "ragged.csv", "--forget-class", "1"], "line 8: 6 values, but the header has 5"),
    (["forget", "--data", "single.csv", "--forget-class", "1"], "needs at least two classes"),
    (["forget", "--data", "huge.csv", "--forget-class", "1"], "label 1000000000 in line 59"),
    (["forget", "--data", "frac.csv", "--forget-class", "1"], "label 2.5 in line 12 is not an integer"),
    (["forget", "--data", "neg.csv", "--forget-class", "1"], "label -1 in line 7 is negative"),
    # weights and models
    (["forget", "--model", "bad.safetensors", "--forget-class", "1"], "cannot read safetensors"),
    (["forget", "--model", "none.safetensors", "--forget-class", "1"], "checkpoint not found"),
    (["forget", "--model", "wrong.safetensors", "--forget-class", "1"], "does not fit the model"),
    (["forget", "--model-factory", "nomodule:build", "--forget-class", "1"], "cannot import model factory"),
    (["forget", "--model-factory", "justtext", "--forget-class", "1"], "must look like"),
    (["forget", "--model-factory", f"{F}:missing", "--forget-class", "1"], "has no callable 'missing'"),
    (["forget", "--model-factory", f"{F}:raises", "--data", "good.csv", "--forget-class", "1"],
     "raised RuntimeError: the factory broke"),
    (["forget", "--model-factory", f"{F}:not_module", "--data", "good.csv", "--forget-class", "1"],
     "returned int, not an nn.Module"),
    (["forget", "--model-factory", f"{F}:wrong_width", "--data", "good.csv", "--forget-class", "1"],
     "cannot take this data's inputs of shape (4,)"),
    (["forget", "--model-factory", f"{F}:too_few", "--data", "good.csv", "--forget-class", "1"],
     "returns 2 logits but the data has 3 classes"),
    # output folders
    (["forget", "--forget-class", "1", "--out", "afile/run"], "lies under afile, which is a file"),
    (["forget", "--forget-class", "1", "--out", "afile"], "is a file, not a folder"),
    (["forget", "--forget-class", "1", "--out", "full"], "already exists and is not empty"),
    # forget skill
    (["forget", "skill", "--method", "nope"], "unknown skill method 'nope'"),
    (["forget", "skill", "--percent", "3"], "--percent applies to na and na-ksd"),
    (["forget", "skill", "--method", "na", "--percent", "0"], "percent must be in (0, 100]"),
    (["forget", "skill", "--h", "2"], "--h applies to ksd"),
    (["sparse", "train", "--method", "dense"], "dense is the baseline, not a sparse method"),
    (["forget", "skill", "--param", "nope=1"], "skill method 'ksd-calibrated' has no hyperparameter 'nope'"),
    (["forget", "skill", "--method", "na", "--percent", "3", "--param", "percent=2"],
     "percent is given twice"),
    (["forget", "skill", "--method", "na", "--param", "percent=300"], "percent"),
    (["forget", "skill", "--method", "ksd", "--h", "-1"], "--h must be > 0"),
    (["forget", "skill", "--false-abstain", "2"], "--false-abstain must lie in (0, 1)"),
    (["forget", "skill", "--demo-skill", "juggling"], "unknown demo skill 'juggling'"),
    (["forget", "skill", "--device", "bogus"], "is not a torch device"),
    (["forget", "skill", "--forget", "prompts.jsonl"], "need --model"),
    (["forget", "skill", "--model", "nowhere", "--forget", "prompts.jsonl"], "model folder not found"),
    (["forget", "skill", "--model", "llm"], "--model needs --forget"),
    (["forget", "skill", "--model", "llm", "--forget", "missing.jsonl"], "prompt file not found"),
    (["forget", "skill", "--out", "full"], "already exists and is not empty"),
    # sparse
    (["sparse", "train", "--sparsity", "1.0"], "sparsity must be in [0, 1)"),
    (["sparse", "train", "--sparsity", "-0.1"], "sparsity must be in [0, 1)"),
    (["sparse", "train", "--method", "nope"], "unknown sparse method 'nope'"),
    (["sparse", "train", "--method", "magnitude"], "use `sparse prune`"),
    (["sparse", "train", "--resume"], "--resume needs --out"),
    (["sparse", "train", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["sparse", "train", "--lr", "-1"], "--lr must be a number > 0"),
    (["sparse", "train", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["sparse", "train", "--density-init", "foo"], "--density-init must be erk or uniform"),
    (["sparse", "train", "--update-frequency", "0"], "--update-frequency must be >= 1"),
    (["sparse", "train", "--device", "cuda"], "no CUDA device"),
    (["sparse", "train", "--data", "single.csv"], "needs at least two classes"),
    (["sparse", "train", "--model-factory", f"{F}:too_few", "--data", "good.csv"], "returns 2 logits"),
    (["sparse", "prune", "--sparsity", "2"], "sparsity must be in [0, 1)"),
    (["sparse", "prune", "--scope", "glboal"], "--scope must be global or layer"),
    (["sparse", "prune", "--finetune-epochs", "-1"], "--finetune-epochs must be >= 0"),
    (["sparse", "prune", "--model", "none.safetensors"], "checkpoint not found"),
    (["sparse", "export", "--model", "none.safetensors"], "checkpoint not found"),
    (["sparse", "export", "--model", "bad.safetensors"], "cannot read safetensors"),
    (["sparse", "export", "--model", "wrong.safetensors", "--data", "digits"], "does not fit the model"),
    # continual
    (["continual", "--method", "nope"], "unknown continual method 'nope'"),
    (["continual", "--scenario", "split-cifar"], "unknown scenario 'split-cifar'"),
    (["continual", "--tasks", "1"], "--tasks must lie in 2-50"),
    (["continual", "--setting", "bogus"], "--setting must be task, domain or class"),
    (["continual", "--method", "clnp", "--epochs", "1", "--hidden", "8"], "clnp needs task labels"),
    (["continual", "--param", "lam"], "--param must look like name=value"),
    (["continual", "--method", "ewc", "--param", "lam=-1"], "lam must be a number in"),
    (["continual", "--method", "ewc", "--param", "typo=1"], "'typo'; it takes: lam: float"),
    (["continual", "--method", "ewc", "--param", "proximal=maybe"], "--param proximal must be true or false"),
    (["continual", "--method", "hlop", "--param", "rows=1.5"], "rows must be an integer or a JSON list"),
    (["continual", "--method", "hlop", "--param", "rows=-5"], "rows must be an integer >= 1"),
    (["continual", "--method", "hlop", "--param", "rows=0"], "rows must be an integer >= 1"),
    (["continual", "--method", "hlop", "--param", "rows=[5]"], "rows lists 1 layer(s)"),
    (["continual", "--method", "ewc", "--param", "lam=1", "--param", "lam=2"], "--param lam is given twice"),
    (["continual", "--method", "gpm", "--param", "threshold=0.9", "--param", "rows=3"],
     "gpm takes threshold or rows, not both"),
    (["continual", "--scenario", "split-digits", "--tasks", "3"],
     "--tasks applies to permuted and rotated scenarios"),
    (["continual", "--tasks", "100000"], "--tasks must lie in 2-50"),
    (["continual", "--method", "ewc", "--compare", "ewc"], "--compare ewc is the --method itself"),
    (["continual", "--hidden", "100000000"], "--hidden widths must be <= 65536"),
    (["learn", "--rule", "softhebb", "--param", "hebbian_epochs=abc"], "hebbian_epochs must be a number"),
    (["learn", "--rule", "softhebb", "--param", "seed=3"],
     "learn method 'softhebb' has no hyperparameter 'seed'"),
    (["learn", "--rule", "backprop", "--param", "lr=3"],
     "learn method 'backprop' has no hyperparameter 'lr'; it takes: none"),
    (["adapt", "--param", "episodic=true"], "--param episodic is not a hyperparameter of tent"),
    (["adapt", "--cifar10c", "."], "brightness.npy not found"),
    (["shift", "--batch-size", "100000"], "--batch-size 100000 exceeds the"),
    (["forget", "--mia", "ulira", "--shadows", "0"], "--shadows must be an even number >= 6"),
    (["continual", "--hidden", "a,b"], "--hidden must be comma-separated integers"),
    (["continual", "--momentum", "1.5"], "--momentum must lie in [0, 1)"),
    (["continual", "--epochs", "0"], "--epochs must be >= 1"),
    # learn
    (["learn", "--rule", "hebb"], "--rule must be one of backprop, biprop, disinhibitory"),
    (["learn", "--hidden", "8,x"], "--hidden must be comma-separated integers"),
    (["learn", "--param", "variant=approximate"], "variant must be one of"),
    (["learn", "--param", "dt=5", "--param", "horizon=1"], "must not exceed the horizon"),
    (["learn", "--rule", "biprop", "--param", "typo=1"], "has no hyperparameter 'typo'"),
    (["learn", "--model-factory", "factories:good"], "--model-factory: disinhibitory trains its own"),
    (["learn", "--rule", "biprop", "--data", "good.csv", "--model-factory", "factories:wrong_width"],
     "cannot take this data's inputs"),
    (["learn", "--rule", "softhebb", "--hidden", "8,8", "--epochs", "1"],
     "softhebb's default network has one"),
    (["learn", "--data", "frac.csv"], "frac.csv"),
    (["learn", "--data", "single.csv"], "needs at least two classes"),
    (["learn", "--epochs", "0"], "--epochs must be >= 1"),
    (["learn", "--lr", "-1"], "--lr must be a number > 0"),
    (["learn", "--out", "full"], "already exists and is not empty"),
    (["learn", "--robustness-samples", "5"],
     "--robustness-samples: a test subset must hold between 10 and 360 samples, got 5"),
    (["learn", "--robustness-samples", "-1"], "--robustness-samples: robustness samples must be >= 0"),
    # adapt and shift
    (["adapt", "--method", "sar"], "--method must be one of nhl, norm, source, tent"),
    (["adapt", "--corruption", "snow:2", "--epochs", "1"], "unknown corruption 'snow'"),
    (["adapt", "--corruption", "fog:9", "--epochs", "1"], "severity must be 1-5"),
    (["adapt", "--data", "good.csv", "--corruption", "defocus_blur", "--epochs", "1"],
     "unknown corruption 'defocus_blur' for this data"),
    (["adapt", "--data", "good.csv", "--model-factory", "factories:good", "--corruption", "contrast:1",
      "--epochs", "1"], "tent adapts normalisation layers, and this model has none"),
    (["adapt", "--data", "good.csv", "--corruption", "contrast:1", "--epochs", "1", "--batch-size", "1"],
     "a batch of 1 sample(s)"),
    (["adapt", "--model", "missing.safetensors"], "checkpoint not found"),
    (["adapt", "--param", "lr=-1"], "lr must be a number in"),
    (["adapt", "--cifar10c", "afile"], "not a folder"),
    (["shift", "--method", "need"], "--method must be one of constant, homeostatic, random-lr"),
    (["shift", "--swaps", "-1"], "--swaps must be >= 0"),
    (["shift", "--swaps", "1000", "--epochs", "1"], "exceeds the 125 batches of an epoch"),
    (["shift", "--lr", "0"], "--lr must be a number > 0"),
    # the demo model
    (["skills", "make-demo", "--steps", "0"], "--steps must be >= 1"),
    (["skills", "make-demo", "--out", "full"], "already exists and is not empty"),
    (["skills", "make-demo", "--out", "x", "--replace-shipped"], "not both"),
    (["skills", "make-demo", "--device", "bogus"], "is not a torch device"),
]
WITH_OUT = {("forget",), ("forget", "skill"), ("sparse", "train"), ("sparse", "prune"),
            ("sparse", "export"), ("skills", "make-demo"), ("continual",), ("learn",), ("adapt",),
            ("shift",)}


def test_the_table_is_large_enough():
    assert len(CASES) >= 60
    commands = {tuple(a for a in args[:2] if not a.startswith("-")) for args, _ in CASES}
    for command in (("forget", "skill"), ("sparse", "train"), ("sparse", "prune"), ("sparse", "export"),
                    ("skills", "make-demo")):
        assert command in commands


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_invocation(tmp_path, monkeypatch, capsys, args, message):
    make_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)  # a default runs/ folder would appear here
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # a user factory's __pycache__
    before = snapshot(tmp_path)
    command = tuple(a for a in args[:2] if not a.startswith("-"))
    out = [] if "--out" in args or "--replace-shipped" in args or command not in WITH_OUT \
        else ["--out", "run"]
    capsys.readouterr()
    code = main([*args, *out])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert "Traceback" not in captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert snapshot(tmp_path) == before  # no run folder, no staging folder, inputs unchanged


def test_library_errors_are_one_line_too(tmp_path, monkeypatch, capsys):
    """An unexpected exception inside a command: one line naming its type, exit 2; the
    traceback only with NEUROPLASTIC_DEBUG=1."""
    import neuroplastic.data.loaders as loaders

    def broken(*args, **kwargs):
        raise OSError("disk on fire\nsecond line")

    monkeypatch.setattr(loaders, "digits", broken)
    monkeypatch.chdir(tmp_path)
    assert main(["forget", "--forget-class", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: OSError: disk on fire (NEUROPLASTIC_DEBUG=1 shows the traceback)"]
    monkeypatch.setenv("NEUROPLASTIC_DEBUG", "1")
    with pytest.raises(OSError, match="disk on fire"):
        main(["forget", "--forget-class", "1"])
    assert list(tmp_path.iterdir()) == []


def console_script() -> str:
    return str(Path(sys.executable).with_name("neuroplastic"))


def test_console_script_usage_error_and_factory_from_the_current_folder(tmp_path):
    bad = subprocess.run([console_script(), "forget", "--bogus"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: No such option: --bogus (Possible options: --out)"]
    (tmp_path / "mymodels.py").write_text(FACTORIES)
    (tmp_path / "good.csv").write_text(csv_text([str(i % 3) for i in range(60)]))
    ran = subprocess.run([console_script(), "forget", "--data", "good.csv", "--model-factory",
                          "mymodels:good", "--forget-class", "1", "--method", "ssd", "--epochs", "2",
                          "--no-retrain", "--out", "run"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "run" / "metrics.json").is_file()


def interrupt(args: list[str], cwd: Path, *, ready, env: dict | None = None) -> tuple[int, str]:
    """Run the console script with ``args``, wait for ``ready()``, send a real SIGINT; return
    the exit code and stderr. The command must still be running when the signal is sent."""
    # a shell starts background jobs (`make test &`, nohup) with SIGINT ignored and the child
    # would inherit that: restore the default, as a terminal's foreground job has it
    # faulthandler: a child still running long after the signal prints its stacks on SIGABRT
    env = {**(os.environ if env is None else env), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen([console_script(), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        ready()
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=60)
            pytest.fail(f"still running 120 s after Ctrl-C; its Python stacks:\n{err[-8000:]}")
        return proc.returncode, err
    finally:
        if proc.poll() is None:  # a failed assertion or a timeout: never leave it running
            proc.kill()
            proc.communicate()


def test_ctrl_c_exits_130_with_one_line_and_no_run_folder(tmp_path):
    """A real SIGINT while the base model trains: `interrupted`, exit 130, nothing left."""
    env = {**os.environ, "NEUROPLASTIC_CACHE_DIR": str(tmp_path / "cache")}
    # 6 s: past the imports, loading data and training (1000 epochs take minutes)
    code, err = interrupt(["forget", "--forget-class", "1", "--epochs", "1000", "--out", "run"],
                          tmp_path, ready=lambda: time.sleep(6.0), env=env)
    assert code == 130, err
    lines = [line for line in err.splitlines() if line.strip() and "interrupted" in line]
    assert lines == ["interrupted"], err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == []


@pytest.mark.parametrize("delay", [0.3, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5])
def test_ctrl_c_at_any_moment_of_start_up_exits_130(tmp_path, delay):
    """Ctrl-C while the command still imports its libraries (a KeyboardInterrupt inside an
    import once left half-initialised modules and an `error: RecursionError`)."""
    code, err = interrupt(["continual", "--epochs", "1000", "--out", "run"], tmp_path,
                          ready=lambda: time.sleep(delay))
    assert code == 130, err
    assert [line for line in err.splitlines() if line.strip()][-1] == "interrupted", err
    assert "error" not in err and not (tmp_path / "run").exists()


EARLY_INTERRUPT = """
import os, signal, sys

class SignalWhileImporting:  # sends Ctrl-C to this process as the command line imports typer
    def find_spec(self, name, path, target=None):
        if name == "typer":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, SignalWhileImporting())
sys.argv = ["neuroplastic", "continual", "--epochs", "1000", "--out", "run"]
from neuroplastic.__main__ import run
run()
"""


def test_ctrl_c_while_the_command_line_imports_its_libraries_exits_130(tmp_path):
    """The console script guards Ctrl-C before it imports typer and rich (a Ctrl-C in the
    first few hundred milliseconds used to end in a KeyboardInterrupt traceback, exit -2)."""
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="neuroplastic")
    assert script.value == "neuroplastic.__main__:run"
    done = subprocess.run([sys.executable, "-c", EARLY_INTERRUPT], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 130, done.stderr[-2000:]
    assert [line for line in done.stderr.splitlines() if line.strip()] == ["interrupted"], done.stderr
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_sparse_training_keeps_only_the_resumable_checkpoint(tmp_path):
    def after_a_checkpoint() -> None:
        deadline = time.time() + 120
        while not (tmp_path / "run" / "checkpoint.safetensors").exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # a few more epochs: the signal may land anywhere, even mid-checkpoint

    code, err = interrupt(["sparse", "train", "--epochs", "1000", "--out", "run"], tmp_path,
                          ready=after_a_checkpoint)
    assert code == 130, err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and "checkpoint in run is kept" in lines[0] and "--resume" in lines[0], err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_ctrl_c_in_the_first_epoch_of_sparse_training_promises_no_checkpoint(tmp_path, monkeypatch, capsys):
    """Ctrl-C before any epoch finished (a ResNet-18 epoch on Fashion-MNIST is a quarter of an
    hour): no checkpoint exists, so none is offered for --resume (the hint used to name one)."""
    from neuroplastic.sparse import experiment

    def interrupted_in_the_first_epoch(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "run_sparse", interrupted_in_the_first_epoch)
    code = main(["sparse", "train", "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 130
    assert [line for line in err.splitlines() if line.strip()] == [
        "interrupted; no epoch had finished, so there is no checkpoint to resume from"], err
    assert list(tmp_path.iterdir()) == []
