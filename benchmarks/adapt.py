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

Fashion-MNIST part (needs ``make data``):

3. Fashion-MNIST-C: the same SmallCNN with BatchNorm trained 3 epochs on the 55,000 training
   images (Adam 1e-3, batch 64); the 11 corruptions x 5 severities of a fixed stratified
   1,000 of the test images (the full 10,000 under four methods would take hours on 2 cores);
   3 seeds. ResNet-18 does not run this protocol: at about 0.43 G multiply-adds per 28x28
   image, one training epoch is about 70 T and the four methods' passes over the 55
   corrupted sets about 200 T, hours per seed on 2 cores. ``--resnet`` runs it reduced
   (:data:`RESNET`: 10,000 training images, 3 epochs, 500 test images, one seed; about half
   an hour) into adapt-fashion-resnet.json and its own README table.
4. Concept shift on Fashion-MNIST with the reference's set-up (``lrh.py``: 784-80-60-10 ELU,
   SGD, batch 10, eta0 1e-3, moves of eta0 / 10 every 10 samples scored on the last 20,
   classes 5-9 "excitatory") for 3 epochs (the reference runs 50), 2 / 10 / 50 swaps per
   epoch (the paper's own rates are in neither its code nor its abstract); 3 seeds.

Writes benchmarks/results/adapt.json (adapt-fashion.json) and the README tables between the
``adapt-benchmark`` (``adapt-fashion-benchmark``) markers. Run:
``.venv/bin/python benchmarks/adapt.py [--part digits|fashion]``; ``--quick --json PATH`` is
a two-minute Fashion-MNIST run at toy sizes (tested; no README).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from neuroplastic.adapt.homeostasis import SHIFT_METHODS, ConceptShiftStream, shift_mlp, train_shift
from neuroplastic.adapt.runner import run_corruptions
from neuroplastic.data import load_data
from neuroplastic.data.corruptions import corruptions_for, parse_spec
from neuroplastic.models import build_architecture, default_model
from neuroplastic.models.factory import seeded_model
from neuroplastic.training import TrainConfig, fit
from readme_table import RESULTS as RESULTS_DIR
from readme_table import mean_std, parse_with_parts, publish, republish, run_parts

SEEDS = (0, 1, 2)
DATASETS = ("digits", "mnist1d")
METHODS = ("tent", "nhl")
ETA0 = (1e-3, 0.05)  # lrh.py's starting rate (the default), and the rate this table used before
SWAPS = (2, 5, 10)


def corruption_job(task: tuple[str, int]) -> tuple[str, int, dict[str, Any]]:
    data_name, seed = task
    torch.set_num_threads(1)
    split = load_data(data_name, seed=seed)
    return data_name, seed, corruption_errors(split, epochs=30, seed=seed)


def corruption_errors(split: Any, *, epochs: int, seed: int, arch: str | None = None) -> dict[str, Any]:
    """Train the BatchNorm model of ``split`` (or the built-in ``arch``) for ``epochs``, then
    the errors of source, Norm, TENT and NHL on every corruption and severity of its test
    split."""
    def build() -> torch.nn.Module:
        if arch is not None:
            return build_architecture(arch, split.input_shape, split.num_classes)
        return default_model(split.input_shape, split.num_classes, batch_norm=True)

    model = seeded_model(build, seed, "cpu")
    begin = time.perf_counter()
    fit(model, split.train, TrainConfig(epochs=epochs, seed=seed))
    train_seconds = time.perf_counter() - begin
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
    out["train_seconds"] = train_seconds
    return out


def shift_job(task: tuple[float, int, str, int]) -> tuple[float, int, str, int, dict[str, float]]:
    eta0, swaps, method, seed = task
    torch.set_num_threads(1)
    split = load_data("digits", seed=seed)
    return eta0, swaps, method, seed, shift_run(split, eta0=eta0, swaps=swaps, method=method, epochs=10,
                                                 seed=seed)


def shift_run(split: Any, *, eta0: float, swaps: int, method: str, epochs: int,
              seed: int) -> dict[str, float]:
    """One concept-shift run of ``method`` on the reference's MLP."""
    stream = ConceptShiftStream(split.train, swaps=swaps, epochs=epochs, batch_size=10, seed=seed)
    model = seeded_model(lambda: shift_mlp(math.prod(split.input_shape), split.num_classes), seed, "cpu")
    begin = time.perf_counter()
    result = train_shift(model, stream, method=method, lr=eta0, test=split.test, seed=seed)
    return {**result.metrics(), "seconds": time.perf_counter() - begin}


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
        names = sorted({k.split(".")[1] for k in digits[0] if k.startswith("source.") and k.count(".") == 2})
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


@dataclass(frozen=True)
class FashionSizes:
    """The Fashion-MNIST part's sizes: training images (None: all), corrupted test images,
    CNN epochs, concept-shift epochs, swap rates and seeds."""

    train: int | None
    test: int
    cnn_epochs: int
    shift_epochs: int
    swaps: tuple[int, ...]
    seeds: tuple[int, ...]


FASHION = FashionSizes(train=None, test=1000, cnn_epochs=3, shift_epochs=3, swaps=(2, 10, 50), seeds=SEEDS)
QUICK = FashionSizes(train=1000, test=100, cnn_epochs=1, shift_epochs=1, swaps=(10,), seeds=(0,))
FASHION_ETA0 = 1e-3  # lrh.py's


def fashion_split(sizes: FashionSizes, seed: int) -> Any:
    return load_data("fashion-mnist", seed=seed).stratified_subset(train=sizes.train, test=sizes.test, seed=0)


Job = tuple[str, tuple[Any, ...], FashionSizes]


def fashion_job(task: Job) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """One Fashion-MNIST job in a one-thread worker: ``("corruptions", (seed,))`` or
    ``("shift", (swaps, method, seed))``."""
    kind, key, sizes = task
    torch.set_num_threads(1)
    seed = key[-1]
    split = fashion_split(sizes, seed)
    if kind == "corruptions":
        return kind, key, corruption_errors(split, epochs=sizes.cnn_epochs, seed=seed)
    swaps, method, _ = key
    return kind, key, shift_run(split, eta0=FASHION_ETA0, swaps=swaps, method=method,
                                epochs=sizes.shift_epochs, seed=seed)


def fashion_verdicts(results: dict[str, Any]) -> list[str]:
    """The issue's adapt targets on Fashion-MNIST, met or missed, in words."""
    lines = []
    runs = results["corruptions"]
    if runs:
        error = {m: statistics.fmean(r[f"mean_error_3to5.{m}"] for r in runs)
                 for m in ("source", "norm", "tent")}
        below = error["tent"] < error["source"] and error["norm"] < error["source"]
        close = error["tent"] <= error["norm"] + 0.01
        lines.append(f"Fashion-MNIST-C, severities 3-5: source {100 * error['source']:.1f}%, Norm "
                     f"{100 * error['norm']:.1f}%, TENT {100 * error['tent']:.1f}% error. TENT and Norm "
                     f"below source: {'met' if below else 'missed'}; TENT <= Norm + 1 point: "
                     f"{'met' if close else 'missed'}.")
    shift = results["shift"]
    if shift:
        top = max(int(k.split("/")[0]) for k in shift)

        def recovery(method: str) -> float | None:
            values = [r["recovery_acc"] for r in shift.get(f"{top}/{method}", [])]
            return statistics.fmean(values) if values else None

        home, constant, random = recovery("homeostatic"), recovery("constant"), recovery("random")
        if home is not None and constant is not None and random is not None:
            verdict = "reproduced" if home > max(constant, random) else "not reproduced"
            lines.append(f"Homeostatic learning rate at the highest shift rate ({top} swaps per epoch): "
                         f"online accuracy after the swaps {100 * home:.1f}% against constant "
                         f"{100 * constant:.1f}% and random {100 * random:.1f}%: the claim of faster "
                         f"recovery is {verdict} here.")
    return lines


def fashion_markdown(results: dict[str, Any]) -> str:
    """The README tables of the Fashion-MNIST part."""
    sizes = results["sizes"]
    runs = results["corruptions"]
    lines = []
    if runs:
        names = sorted({k.split(".")[1] for k in runs[0] if k.startswith("source.") and k.count(".") == 2})

        def cell(method: str) -> str:
            heavy = percent([r[f"mean_error_3to5.{method}"] for r in runs])
            every = statistics.fmean(r[f"mean_error.{method}"] for r in runs) * 100
            return f"{heavy} ({every:.1f})"

        lines += [f"Fashion-MNIST-C: SmallCNN + BatchNorm2d trained {sizes['cnn_epochs']} epochs on "
                  f"{results['train_images']:,} images, {len(names)} corruptions x 5 severities of a fixed "
                  f"stratified {sizes['test']:,} test images, online batch 64 (reset between sets). Mean "
                  "error (%) at severities 3-5 (all severities in brackets), mean ± std over seeds "
                  f"{', '.join(map(str, sizes['seeds']))}:", "",
                  "| clean error | source | norm | tent | nhl | clean acc, batch stats: before / after "
                  "tent's online pass / after nhl's | cost / forward: tent, nhl |",
                  "|---|---|---|---|---|---|---|",
                  f"| {percent([1 - r['clean_acc'] for r in runs])} | {cell('source')} | {cell('norm')} | "
                  f"{cell('tent')} | {cell('nhl')} | {percent([r['clean_acc_batch_stats'] for r in runs])} / "
                  f"{percent([r['clean_acc_after.tent'] for r in runs])} / "
                  f"{percent([r['clean_acc_after.nhl'] for r in runs])} | "
                  f"{statistics.fmean(r['cost_ratio.tent'] for r in runs):.1f}x, "
                  f"{statistics.fmean(r['cost_ratio.nhl'] for r in runs):.1f}x |",
                  "", "Error (%) per corruption at severity 5, mean over seeds:", "",
                  "| corruption | source | norm | tent | nhl |", "|---|---|---|---|---|"]
        for name in names:
            cells = [f"{statistics.fmean(r[f'{m}.{name}.5'] for r in runs) * 100:.1f}"
                     for m in ("source", "norm", "tent", "nhl")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if results["shift"]:
        lines += ["", f"Concept shift on Fashion-MNIST (lrh.py's set-up, {sizes['shift_epochs']} epochs, "
                  f"batch 10, eta0 {FASHION_ETA0:g}): online accuracy (%) over the batches after each swap / "
                  "final test accuracy (%) / seconds per run, mean ± std over seeds:", "",
                  "| swaps per epoch | " + " | ".join(SHIFT_METHODS) + " |",
                  "|---|" + "---|" * len(SHIFT_METHODS)]
        for swaps in sizes["swaps"]:
            cells = []
            for method in SHIFT_METHODS:
                seeds = results["shift"].get(f"{swaps}/{method}", [])
                cells.append(f"{percent([r['recovery_acc'] for r in seeds])} / "
                             f"{percent([r['final_test_acc'] for r in seeds])} / "
                             f"{statistics.fmean(r['seconds'] for r in seeds):.0f} s" if seeds else "—")
            lines.append(f"| {swaps} | " + " | ".join(cells) + " |")
    lines += ["", "Targets:", "", *[f"- {v}" for v in fashion_verdicts(results)], "",
              f"{results['machine']}; Fashion-MNIST part {results['seconds'] / 60:.0f} minutes."]
    return "\n".join(lines)


def run_fashion(args: argparse.Namespace) -> None:
    """The Fashion-MNIST part (or its ``--quick`` version into ``--json``)."""
    sizes = QUICK if args.quick else FASHION
    tasks: list[Job] = [("corruptions", (seed,), sizes) for seed in sizes.seeds]
    tasks += [("shift", (swaps, method, seed), sizes) for swaps in sizes.swaps for method in SHIFT_METHODS
              for seed in sizes.seeds]
    start = time.perf_counter()
    results: dict[str, Any] = {"sizes": {**sizes.__dict__}, "corruptions": [], "shift": {},
                               "train_images": len(fashion_split(sizes, 0).train),
                               "machine": f"{platform.machine()}, {args.workers} workers x 1 thread"}
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for kind, key, metrics in pool.imap_unordered(fashion_job, tasks):
            if kind == "corruptions":
                results["corruptions"].append({"seed": key[0], **metrics})
                print(f"fashion-mnist-c seed {key[0]}: " + ", ".join(
                    f"{m} {metrics[f'mean_error_3to5.{m}']:.3f}" for m in ("source", "norm", "tent", "nhl")),
                    flush=True)
            else:
                swaps, method, seed = key
                results["shift"].setdefault(f"{swaps}/{method}", []).append({"seed": seed, **metrics})
                print(f"fashion-mnist shift {swaps}/epoch {method} seed {seed}: recovery "
                      f"{metrics['recovery_acc']:.3f}", flush=True)
    for seeds in [results["corruptions"], *results["shift"].values()]:
        seeds.sort(key=lambda r: r["seed"])
    results["seconds"] = time.perf_counter() - start
    publish("adapt-fashion", fashion_markdown(results), results=results, readme=not args.no_readme,
            json_path=args.json)


RESNET = {"train": 10_000, "test": 500, "epochs": 3, "seed": 0}
"""ResNet-18 on Fashion-MNIST-C: a stratified 10,000 training images for 3 epochs, 500 test
images under every corruption, one seed (a training step of 64 images takes about 1 s on 2
threads here: the whole SmallCNN protocol would take hours)."""


def run_fashion_resnet(args: argparse.Namespace) -> None:
    """``--resnet``: ResNet-18 (CIFAR stem, BatchNorm) on Fashion-MNIST-C, in this process."""
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    split = load_data("fashion-mnist", seed=RESNET["seed"]).stratified_subset(
        train=RESNET["train"], test=RESNET["test"], seed=0)
    metrics = corruption_errors(split, epochs=RESNET["epochs"], seed=RESNET["seed"], arch="resnet18")
    results = {"sizes": RESNET, "metrics": metrics, "seconds": time.perf_counter() - start,
               "machine": f"{platform.machine()}, {args.threads} threads"}
    publish("adapt-fashion-resnet", resnet_markdown(results), results=results, readme=not args.no_readme,
            json_path=args.json)


def resnet_markdown(results: dict[str, Any]) -> str:
    m, sizes = results["metrics"], results["sizes"]
    methods = ("source", "norm", "tent", "nhl")
    errors = " | ".join(f"{100 * m[f'mean_error_3to5.{k}']:.1f} ({100 * m[f'mean_error.{k}']:.1f})"
                        for k in methods)
    clean = (f"{100 * m['clean_acc_batch_stats']:.1f} / {100 * m['clean_acc_after.tent']:.1f} / "
             f"{100 * m['clean_acc_after.nhl']:.1f}")
    cost = f"{m['cost_ratio.tent']:.1f}x, {m['cost_ratio.nhl']:.1f}x"
    return "\n".join([
        f"Fashion-MNIST-C on ResNet-18 (CIFAR stem, BatchNorm): trained {sizes['epochs']} epochs on a "
        f"stratified {sizes['train']:,} training images, 11 corruptions x 5 severities of {sizes['test']} "
        f"test images, online batch 64, seed {sizes['seed']}. Mean error (%) at severities 3-5 (all "
        "severities in brackets):", "",
        "| clean error | " + " | ".join(methods)
        + " | clean acc, batch stats: before / after tent / after nhl | cost / forward: tent, nhl |",
        "|---|---|---|---|---|---|---|",
        f"| {100 * (1 - m['clean_acc']):.1f} | {errors} | {clean} | {cost} |",
        "", f"{results['machine']}; {results['seconds'] / 60:.0f} minutes."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--resnet", action="store_true",
                        help="only ResNet-18 on Fashion-MNIST-C (about half an hour, not in --part all)")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--from-json", action="store_true", help="only re-render the tables")
    args = parse_with_parts(parser)
    if args.from_json:
        republish("adapt", markdown)
        if (RESULTS_DIR / "adapt-fashion.json").is_file():
            republish("adapt-fashion", fashion_markdown)
        if (RESULTS_DIR / "adapt-fashion-resnet.json").is_file():
            republish("adapt-fashion-resnet", resnet_markdown)
        return
    if args.resnet:
        run_fashion_resnet(args)
        return
    run_parts(args, digits=lambda: run_digits(args), fashion=lambda: run_fashion(args))


def run_digits(args: argparse.Namespace) -> None:
    """The digits / MNIST-1D part."""
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
