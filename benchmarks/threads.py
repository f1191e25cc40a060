"""How torch's thread count changes the cost of one training step, quiet and on a busy
machine: the measurement behind ``neuroplastic.threads`` (one thread below 2M parameters,
every core above) and the CLI's ``--threads``.

MLPs 784-w-w-10 (w = 64, 256, 1024, 2048), batch 64, SGD; median seconds per step over 30
steps (10 when busy), after 3 warm-up steps, with 1 thread and with every core. "Busy": as many other
processes as cores, each a torch job multiplying matrices on every core (torch's default),
beside it (as on a shared machine, or pytest workers side by side).

Writes benchmarks/results/threads.json and the README table between ``threads-benchmark``
markers. Run: ``.venv/bin/python benchmarks/threads.py`` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import statistics
import time

import torch
from torch import nn

from neuroplastic.threads import SMALL_MODEL, auto_threads, available_cores
from readme_table import publish

WIDTHS = (64, 256, 1024, 2048)


def spin(stop) -> None:  # type: ignore[no-untyped-def]
    """Another torch job: matrix products on every core (torch's default threads)."""
    a = torch.randn(512, 512)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def step_seconds(width: int, threads: int, steps: int = 30) -> tuple[int, float]:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    times = []
    for i in range(steps + 3):
        start = time.perf_counter()
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return sum(p.numel() for p in model.parameters()), statistics.median(times)


def measure(cores: int, *, steps: int) -> list[dict[str, float]]:
    rows = []
    for width in WIDTHS:
        params, one = step_seconds(width, 1, steps)
        _, every = step_seconds(width, cores, steps)
        print(f"{params:>9,} parameters: 1 thread {one * 1e3:.2f} ms, {cores} threads {every * 1e3:.2f} ms",
              flush=True)
        rows.append({"width": width, "parameters": params, "one_thread": one, "all_cores": every,
                     "auto_threads": auto_threads(params, cores=cores, busy=False)})
    return rows


def markdown(results: dict) -> str:
    lines = ["Median seconds per training step (MLP 784-w-w-10, batch 64, SGD), one thread against "
             f"every core ({results['cores']}); busy = {results['cores']} other torch processes "
             "multiplying matrices on every core beside it. `auto` = the count "
             "`neuroplastic.threads.auto_threads` picks on a quiet machine (one below "
             f"{SMALL_MODEL:,} parameters; one always when the machine is busy).", "",
             "| parameters | quiet: 1 thread | quiet: all cores | busy: 1 thread | busy: all cores | auto |",
             "|---|---|---|---|---|---|"]
    for quiet, busy in zip(results["quiet"], results["busy"], strict=True):
        lines.append(f"| {quiet['parameters']:,} | {quiet['one_thread'] * 1e3:.2f} ms | "
                     f"{quiet['all_cores'] * 1e3:.2f} ms | {busy['one_thread'] * 1e3:.2f} ms | "
                     f"{busy['all_cores'] * 1e3:.2f} ms | {quiet['auto_threads']} |")
    lines += ["", f"{results['machine']}, torch {results['torch']}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    cores = available_cores()
    results = {"cores": cores, "machine": platform.machine(), "torch": torch.__version__,
               "quiet": measure(cores, steps=30)}
    context = multiprocessing.get_context("spawn")  # a forked child of an OpenMP process can hang
    stop = context.Event()
    hogs = [context.Process(target=spin, args=(stop,)) for _ in range(cores)]
    for hog in hogs:
        hog.start()
    time.sleep(5)  # the hogs import torch and start multiplying
    try:
        results["busy"] = measure(cores, steps=10)  # slow when contended: fewer steps
    finally:
        stop.set()
        for hog in hogs:
            hog.join()
    publish("threads", markdown(results), results=results, readme=not args.no_readme)


if __name__ == "__main__":
    main()
