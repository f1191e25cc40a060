"""Adapt benchmark: test-time adaptation on corrupted inputs, and learning through concept
shift.

1. A SmallCNN with BatchNorm trained on digits (and an MLP with BatchNorm1d on MNIST-1D,
   which takes the flat-vector corruptions), 30 epochs of the reference recipe; every
   corruption x severity of the test split; source / Norm / TENT / NHL with their defaults,
   online within each corruption x severity (reset between, as TENT's reference), batch 64;
   3 seeds (split, model and corruption draws).
2. Concept shift on digits: the reference's 64-80-60-10 ELU MLP, SGD, batch 10, eta0 0.05,
   10 epochs, 2 / 5 / 10 label swaps per epoch; homeostatic vs constant vs random learning
   rate; 3 seeds.

Writes benchmarks/results/adapt.json and the README table between the ``adapt-benchmark``
markers. Run: ``.venv/bin/python benchmarks/adapt.py``.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import platform
import statistics
import time
from typing import Any

import torch

from neuroplastic.adapt.homeostasis import SHIFT_METHODS, ConceptShiftStream, shift_mlp, train_shift
from neuroplastic.adapt.runner import run_corruptions
from neuroplastic.data import load_data
from neuroplastic.data.corruptions import corruptions_for, parse_spec
from neuroplastic.models import default_model
from neuroplastic.models.factory import seeded_model
from neuroplastic.training import TrainConfig, fit
from readme_table import mean_std, publish, republish

SEEDS = (0, 1, 2)
DATASETS = ("digits", "mnist1d")
METHODS = ("tent", "nhl")
ETA0 = (1e-3, 0.05)  # lrh.py's starting rate (the default), and the rate this table used before
SWAPS = (2, 5, 10)


def corruption_job(task: tuple[str, int]) -> tuple[str, int, dict[str, Any]]:
    data_name, seed = task
    torch.set_num_threads(1)
    split = load_data(data_name, seed=seed)
    model = seeded_model(lambda: default_model(split.input_shape, split.num_classes, batch_norm=True), seed,
                         "cpu")
    fit(model, split.train, TrainConfig(epochs=30, seed=seed))
    x, y = split.test.tensors
    train_x = split.train.tensors[0]
    bounds = (float(train_x.min()), float(train_x.max()))
    specs = parse_spec("all", available=corruptions_for(x))
    out: dict[str, Any] = {}
    for method in METHODS:
        result = run_corruptions(model, x, y, specs, method=method, bounds=bounds, seed=seed)
        out.update(result.metrics())
        out[f"clean_acc_after.{method}"] = result.clean_acc_after
        out[f"cost_ratio.{method}"] = result.seconds_per_batch / result.forward_seconds_per_batch
    return data_name, seed, out


def shift_job(task: tuple[float, int, str, int]) -> tuple[float, int, str, int, dict[str, float]]:
    eta0, swaps, method, seed = task
    torch.set_num_threads(1)
    split = load_data("digits", seed=seed)
    stream = ConceptShiftStream(split.train, swaps=swaps, epochs=10, batch_size=10, seed=seed)
    model = seeded_model(lambda: shift_mlp(math.prod(split.input_shape), split.num_classes), seed, "cpu")
    result = train_shift(model, stream, method=method, lr=eta0, test=split.test, seed=seed)
    return eta0, swaps, method, seed, result.metrics()


def percent(values: list[float]) -> str:
    return mean_std(values, scale=100, decimals=1)


def markdown(results: dict[str, Any]) -> str:
    lines = ["Mean test error (%) over every corruption at severities 3-5 (all severities in brackets), "
             "mean ± std over seeds 0-2:", "",
             "| data (model) | clean error | source | norm | tent | nhl | clean acc, batch stats: "
             "before / after tent's online pass / after nhl's | tent cost / forward |",
             "|---|---|---|---|---|---|---|---|"]
    models = {"digits": "SmallCNN + BatchNorm2d, 11 corruptions",
              "mnist1d": "MLP + BatchNorm1d, 5 flat corruptions"}
    for data in DATASETS:
        runs = results["corruptions"].get(data, [])
        if not runs:
            continue

        def cell(method: str, runs: list[dict[str, Any]] = runs) -> str:
            heavy = percent([r[f"mean_error_3to5.{method}"] for r in runs])
            every = statistics.fmean(r[f"mean_error.{method}"] for r in runs) * 100
            return f"{heavy} ({every:.1f})"

        clean = percent([1 - r["clean_acc"] for r in runs])
        after = (f"{percent([r['clean_acc_batch_stats'] for r in runs])} / "
                 f"{percent([r['clean_acc_after.tent'] for r in runs])} / "
                 f"{percent([r['clean_acc_after.nhl'] for r in runs])}")
        cost = statistics.fmean(r["cost_ratio.tent"] for r in runs)
        lines.append(f"| {data} ({models[data]}) | {clean} | {cell('source')} | {cell('norm')} | "
                     f"{cell('tent')} | {cell('nhl')} | {after} | {cost:.1f}x |")
    digits = results["corruptions"].get("digits", [])
    if digits:
        names = sorted({k.split(".")[1] for k in digits[0] if k.startswith("source.")})
        lines += ["", "Digits, error (%) per corruption at severity 5, mean over seeds:", "",
                  "| corruption | source | norm | tent | nhl |", "|---|---|---|---|---|"]
        for name in names:
            cells = [f"{statistics.fmean(r[f'{m}.{name}.5'] for r in digits) * 100:.1f}"
                     for m in ("source", "norm", "tent", "nhl")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Concept shift on digits (10 epochs, batch 10): online accuracy (%) over the batches "
              "after each swap (20, or half the spacing of swaps when closer) / final test accuracy (%), "
              "mean ± std over seeds; starting rate eta0 = lrh.py's 1e-3 (the default) and 0.05:", "",
              "| eta0 | swaps per epoch | " + " | ".join(SHIFT_METHODS) + " |",
              "|---|---|" + "---|" * len(SHIFT_METHODS)]
    for eta0 in ETA0:
        for swaps in SWAPS:
            cells = []
            for method in SHIFT_METHODS:
                runs = results["shift"].get(f"{eta0:g}/{swaps}/{method}", [])
                cells.append(f"{percent([r['recovery_acc'] for r in runs])} / "
                             f"{percent([r['final_test_acc'] for r in runs])}" if runs else "—")
            lines.append(f"| {eta0:g} | {swaps} | " + " | ".join(cells) + " |")
    lines += ["", f"{results['machine']}; whole benchmark {results['seconds'] / 60:.0f} minutes."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--from-json", action="store_true", help="only re-render the tables")
    args = parser.parse_args()
    if args.from_json:
        republish("adapt", markdown)
        return
    start = time.perf_counter()
    results: dict[str, Any] = {"seeds": list(SEEDS), "corruptions": {}, "shift": {},
                               "machine": f"{platform.machine()}, {args.workers} workers x 1 thread"}
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        shift = pool.map_async(shift_job, [(eta0, s, m, seed) for eta0 in ETA0 for s in SWAPS
                                           for m in SHIFT_METHODS for seed in SEEDS])
        for data_name, seed, metrics in pool.imap_unordered(corruption_job, [(d, s) for d in DATASETS
                                                                             for s in SEEDS]):
            results["corruptions"].setdefault(data_name, []).append({"seed": seed, **metrics})
            print(f"{data_name} seed {seed}: source {metrics['mean_error_3to5.source']:.3f} norm "
                  f"{metrics['mean_error_3to5.norm']:.3f} tent {metrics['mean_error_3to5.tent']:.3f} nhl "
                  f"{metrics['mean_error_3to5.nhl']:.3f}", flush=True)
        for eta0, swaps, method, seed, metrics in shift.get():
            results["shift"].setdefault(f"{eta0:g}/{swaps}/{method}", []).append({"seed": seed, **metrics})
    for runs in [*results["corruptions"].values(), *results["shift"].values()]:
        runs.sort(key=lambda r: r["seed"])
    results["seconds"] = time.perf_counter() - start
    publish("adapt", markdown(results), results=results, readme=not args.no_readme)


if __name__ == "__main__":
    main()
