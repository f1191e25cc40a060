"""What the one training loop costs: seconds per step of ``loop.fit`` (no plugin, and with a
do-nothing plugin on every event) against a bare hand-written loop, on the same model, data
and optimizer, interleaved epoch by epoch in rotating order so drift hits all alike. Target: <= 1.02x.

Writes benchmarks/results/loop.json and the README table between ``loop-benchmark`` markers.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn

from neuroplastic import loop
from neuroplastic.data import digits, loader, mnist1d
from neuroplastic.models import MLP, SmallCNN
from readme_table import publish


class Idle(loop.Plugin):
    """Implements every event and does nothing: the price of dispatching them."""

    def before_task(self, model, task): ...
    def loss(self, model, x, y, loss): return loss
    def after_backward(self, model): ...
    def after_step(self, model, step): ...
    def after_epoch(self, model, epoch): ...
    def should_stop(self, step): return False
    def after_task(self, model, task): ...


def bare_epoch(model: nn.Module, data, optimizer) -> float:
    start = time.perf_counter()
    model.train()
    steps = 0
    for x, y in data:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        steps += 1
    return (time.perf_counter() - start) / steps


def loop_epoch(model: nn.Module, data, optimizer, plugins) -> float:
    start = time.perf_counter()
    result = loop.fit(model, data, optimizer=optimizer, epochs=1, plugins=plugins)
    return (time.perf_counter() - start) / result.steps


def measure(name: str, model: nn.Module, dataset, *, epochs: int) -> dict[str, float]:
    data = loader(dataset, batch_size=64, shuffle=True, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    bare_epoch(model, data, optimizer)  # warm-up
    times: dict[str, list[float]] = {"bare": [], "loop": [], "loop + idle plugin": []}
    runs = {"bare": lambda: bare_epoch(model, data, optimizer),
            "loop": lambda: loop_epoch(model, data, optimizer, ()),
            "loop + idle plugin": lambda: loop_epoch(model, data, optimizer, (Idle(),))}
    order = list(runs)
    for epoch in range(epochs):  # the order rotates, so no variant always runs first
        for name in order[epoch % 3:] + order[:epoch % 3]:
            times[name].append(runs[name]())
    row = {k: statistics.median(v) for k, v in times.items()}
    row["loop_ratio"] = row["loop"] / row["bare"]
    row["plugin_ratio"] = row["loop + idle plugin"] / row["bare"]
    print(f"{name}: bare {row['bare'] * 1e3:.3f} ms, loop {row['loop_ratio']:.3f}x, "
          f"with a plugin {row['plugin_ratio']:.3f}x", flush=True)
    return row


def markdown(results: dict) -> str:
    lines = ["| model | bare step | loop.fit | ratio | loop.fit + a plugin on every event | ratio |",
             "|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        lines.append(f"| {name} | {r['bare'] * 1e3:.3f} ms | {r['loop'] * 1e3:.3f} ms | "
                     f"{r['loop_ratio']:.3f}x | {r['loop + idle plugin'] * 1e3:.3f} ms | "
                     f"{r['plugin_ratio']:.3f}x |")
    lines += ["", f"Median over {results['epochs']} interleaved epochs (Adam, batch 64), "
              f"{results['machine']}; the loop also checks the first batch's form and finiteness."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    d, m = digits(), mnist1d()
    models = {"digits SmallCNN": measure("digits SmallCNN", SmallCNN(1, 10), d.train, epochs=args.epochs),
              "MNIST-1D MLP": measure("MNIST-1D MLP", MLP(40, 10), m.train, epochs=args.epochs)}
    results = {"epochs": args.epochs, "models": models,
               "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"}
    publish("loop", markdown(results), results=results, readme=not args.no_readme)


if __name__ == "__main__":
    main()
