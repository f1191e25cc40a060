"""Several processes on this machine: importance and training throughput with 1 and 2
processes (torch.distributed, gloo, one thread each), beside one process with 2 threads.

Workloads, on fixed-seed synthetic data (4,096 examples of 784 features, 10 classes) and the
MLP 784-800-800-10: per-sample Fisher importance (batch 128; each process takes every second
batch, sums all-reduced) and one training epoch through ``loop.fit`` (SGD, global batch 128;
each process takes its half of every batch, gradients all-reduced). Median of 3 repeats after
a warm-up; examples per second. Each run also checks that the 2-process scores and weights
equal the 1-process ones (largest relative difference reported).

Writes benchmarks/results/distributed.json and the README table between the
``distributed-benchmark`` markers. Run: ``.venv/bin/python benchmarks/distributed.py``
(about 2 minutes); ``--quick --json PATH`` is a small run (no README).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from neuroplastic import loop
from neuroplastic.distributed import rank_batches
from neuroplastic.importance import Fisher
from readme_table import publish

REPEATS = 3


def _setup(size: int, width: int) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, 10))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(size, 784, generator=gen)
    y = torch.randint(0, 10, (size,), generator=gen)
    return model, list(zip(x.split(128), y.split(128), strict=True))


def _measure(size: int, width: int) -> dict[str, Any]:
    """Seconds of each workload (median of the repeats after a warm-up) and its results."""
    model, batches = _setup(size, width)
    fisher = Fisher(mode="per_sample")
    times: dict[str, list[float]] = {"importance": [], "training": []}
    scores: dict[str, torch.Tensor] = {}
    for repeat in range(REPEATS + 1):
        start = time.perf_counter()
        scores = fisher.estimate(model, rank_batches(batches))
        if repeat:
            times["importance"].append(time.perf_counter() - start)
    trained: dict[str, torch.Tensor] = {}
    for repeat in range(REPEATS + 1):
        net, _ = _setup(size, width)
        start = time.perf_counter()
        loop.fit(net, batches, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), epochs=1)
        if repeat:
            times["training"].append(time.perf_counter() - start)
        trained = {k: v.clone() for k, v in net.state_dict().items()}
    if dist.is_initialized():  # the same epoch with torch's DDP wrapper reducing the gradients
        times["training_ddp"] = []
        for repeat in range(REPEATS + 1):
            net, _ = _setup(size, width)
            wrapped = DistributedDataParallel(net)
            start = time.perf_counter()
            loop.fit(wrapped, batches, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), epochs=1)
            if repeat:
                times["training_ddp"].append(time.perf_counter() - start)
    return {"seconds": {k: statistics.median(v) for k, v in times.items()}, "scores": scores,
            "weights": trained}


def _worker(rank: int, store: str, size: int, width: int, out: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=300))
    try:
        found = _measure(size, width)
        if rank == 0:
            torch.save(found, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    os._exit(0)  # gloo's threads can abort a normal teardown


def _largest_relative(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-30)) for k in a)


def run(size: int, width: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    one = _measure(size, width)
    torch.set_num_threads(2)
    threads = _measure(size, width)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        out = str(Path(scratch) / "two.pt")
        mp.spawn(_worker, args=(str(Path(scratch) / "store"), size, width, out), nprocs=2, join=True)
        two = torch.load(out, weights_only=True)
    rows = {}
    for work in ("importance", "training"):
        rows[work] = {
            "one_process_1_thread": size / one["seconds"][work],
            "one_process_2_threads": size / threads["seconds"][work],
            "two_processes": size / two["seconds"][work],
        }
    rows["training_ddp"] = {"one_process_1_thread": rows["training"]["one_process_1_thread"],
                            "one_process_2_threads": rows["training"]["one_process_2_threads"],
                            "two_processes": size / two["seconds"]["training_ddp"]}
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "examples": size, "width": width, "repeats": REPEATS, "examples_per_second": rows,
        "scores_max_relative_difference": _largest_relative(one["scores"], two["scores"]),
        "weights_max_relative_difference": _largest_relative(one["weights"], two["weights"]),
    }


def render(results: dict[str, Any]) -> str:
    width = results["width"]
    lines = [f"Examples per second on {results['machine']}; MLP 784-{width}-{width}-10, "
             f"{results['examples']:,} examples, median of {results['repeats']}.", "",
             "| workload | 1 process, 1 thread | 1 process, 2 threads | 2 processes (gloo), 1 thread each "
             "| 2 processes / 1 process, 1 thread |", "|---|---|---|---|---|"]
    names = {"importance": "per-sample Fisher importance", "training": "training epoch (loop.fit, SGD)",
             "training_ddp": "the same, model wrapped in DistributedDataParallel"}
    for work, row in results["examples_per_second"].items():
        one, two = row["one_process_1_thread"], row["two_processes"]
        lines.append(f"| {names[work]} | {one:,.0f} | {row['one_process_2_threads']:,.0f} | {two:,.0f} "
                     f"| {two / one:.2f}x |")
    scores, weights = results["scores_max_relative_difference"], results["weights_max_relative_difference"]
    lines += ["", f"2 processes vs 1: largest relative difference {scores:.1e} in the importance scores, "
              f"{weights:.1e} in the trained weights."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="512 examples, width 64")
    parser.add_argument("--json", type=Path, help="write the results here only (no README)")
    args = parser.parse_args()
    size, width = (512, 64) if args.quick else (4096, 800)
    results = run(size, width)
    publish("distributed", render(results), results=results, json_path=args.json)


if __name__ == "__main__":
    main()
