"""Continual-learning benchmark: every method on five small task streams and on three
Fashion-MNIST streams, 3 seeds.

Digits / MNIST-1D protocol (the pilot's in shared/CONTINUAL.md): MLP <inputs>-256-256-<outputs>,
SGD lr 0.01 momentum 0.9, batch 32, 25 epochs per task, a fresh optimizer per task.
Fashion-MNIST protocol (the HLOP and GPM papers' Permuted MNIST network): MLP 784-800-800-10,
SGD lr 0.01 momentum 0.9, batch 64; Permuted-Fashion-MNIST 10 tasks of 1 epoch (HLOP's
PMNIST schedule), Split-Fashion-MNIST 5 tasks of 2 epochs, task- and class-IL; all 55,000
training images per task, accuracies on a fixed stratified 2,000 test and 1,000 validation
images per task (the 10x10 accuracy matrix on the full sets would cost more than the training).
Each method's hyperparameter is chosen on seed 0 by the mean final VALIDATION accuracy over
the tasks (the test splits are never looked at to choose), then run on seeds 1 and 2 (seed
0's run is the chosen grid point's own).

Writes benchmarks/results/continual.json (continual-fashion.json) and the README tables
between the ``continual-benchmark`` (``continual-fashion-benchmark``) markers. Run:
``.venv/bin/python benchmarks/continual.py [--part digits|fashion]``; ``--quick --json PATH``
is a two-minute Fashion-MNIST run at toy sizes (tested; no README).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

from neuroplastic import registry
from neuroplastic.continual import ContinualRecipe, run_stream
from neuroplastic.data.splits import DataSplit
from neuroplastic.data.streams import Stream, load_stream, permuted_stream, split_stream
from neuroplastic.models import MLP
from readme_table import RESULTS as RESULTS_DIR
from readme_table import mean_std, parse_with_parts, publish, republish, run_parts, stored_results

SCENARIOS = [("split-digits", "task"), ("split-digits", "class"), ("permuted-digits", "domain"),
             ("permuted-digits", "task"), ("permuted-mnist1d", "domain")]
GRIDS: dict[str, list[dict[str, Any]]] = {
    "finetune": [{}],
    "joint": [{}],
    "ewc": [{"lam": lam} for lam in (1e2, 1e3, 1e4, 1e5, 1e6, 1e7)],  # proximal (the default)
    "si": [{"c": c} for c in (0.1, 1.0, 10.0)],  # proximal (the default)
    "gpm": [{"threshold": t} for t in (0.95, 0.97, 0.99)],
    "hlop": [{"rows": r} for r in (10, 15, 20, 25, 30)],
    "clnp": [{"margin": m, "l1": l1} for m in (0.01, 0.02, 0.05) for l1 in (0.0, 1e-5, 1e-4)],
    "classp": [{"eps": e} for e in (0.1, 1.0)],
    # HLOP with the reference's update (EMA momentum, dH clamped, a fixed eta): the form the
    # original code runs, beside this library's default (heavy ball, energy-normalised step)
    "hlop-reference": [{"rows": r, "eta": eta, "ema": True, "normalize": False}
                       for r in (20, 30) for eta in (0.001, 0.01)],
}
VARIANT_OF = {"hlop-reference": "hlop"}  # a row that is a registered method with other options
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class FashionScenario:
    """One Fashion-MNIST stream: its kind (permuted, split), setting, epochs per task, tasks,
    seeds."""

    kind: str
    setting: str
    epochs: int
    tasks: int
    seeds: tuple[int, ...] = SEEDS

    @property
    def key(self) -> str:
        return f"{self.kind}-fashion-mnist/{self.setting}"


@dataclass(frozen=True)
class FashionSizes:
    """Sizes of the Fashion-MNIST part: images per task (None: all), the MLP's hidden widths,
    and how much of each grid is tried (None: all of it)."""

    train: int | None
    val: int
    test: int
    hidden: tuple[int, ...]
    grid_points: int | None


# Permuted: 2 seeds, to fit the part in an hour on 2 cores (a joint run alone takes 4.5 minutes)
FASHION_SCENARIOS = (FashionScenario("permuted", "domain", 1, 10, seeds=(0, 1)),
                     FashionScenario("split", "task", 1, 5), FashionScenario("split", "class", 1, 5))
QUICK_SCENARIOS = (FashionScenario("permuted", "domain", 1, 3, seeds=(0, 1)),
                   FashionScenario("split", "task", 1, 5, seeds=(0, 1)),
                   FashionScenario("split", "class", 1, 5, seeds=(0, 1)))
FASHION = FashionSizes(train=None, val=1000, test=2000, hidden=(800, 800), grid_points=None)
QUICK = FashionSizes(train=3000, val=200, test=500, hidden=(100, 100), grid_points=1)
FASHION_RECIPE = {"lr": 0.01, "momentum": 0.9, "batch_size": 64}
FASHION_GRIDS: dict[str, list[dict[str, Any]]] = {
    "finetune": [{}],
    "joint": [{}],
    "ewc": [{"lam": lam} for lam in (1e3, 1e4, 1e5, 1e6)],
    "si": [{"c": c} for c in (0.1, 1.0, 10.0)],
    "gpm": [{"threshold": t} for t in (0.95, 0.97, 0.99)],
    "hlop": [{"rows": r} for r in (50, 70)],  # 70 new rows per task: the HLOP paper's PMNIST
    "clnp": [{"margin": m, "l1": l1} for m in (0.01, 0.05) for l1 in (0.0, 1e-5)],
    "classp": [{"eps": e} for e in (0.1, 1.0)],
}


def run_on(name: str, kwargs: dict[str, Any], stream: Stream, seed: int, recipe: ContinualRecipe,
           hidden: tuple[int, ...]) -> dict[str, Any]:
    """One seeded run of a method on a stream with an MLP of ``hidden`` widths: its metrics,
    the final mean validation accuracy and the wall time."""
    features = int(torch.tensor(stream.input_shape).prod())
    torch.manual_seed(seed)
    model = MLP(features, stream.num_outputs, hidden=hidden)
    method = registry.create(VARIANT_OF.get(name, name), kind="continual", **kwargs)
    start = time.perf_counter()
    result = run_stream(model, stream, method, ContinualRecipe(**{**recipe.to_dict(), "seed": seed}),
                        validate=True)
    metrics = dict(result.metrics)
    metrics["val_acc"] = float(result.val_matrix[-1].mean())  # type: ignore[index]
    metrics["wall_seconds"] = time.perf_counter() - start
    return metrics


def one_run(name: str, kwargs: dict[str, Any], scenario: str, setting: str, seed: int,
            recipe: ContinualRecipe) -> dict[str, Any]:
    """A run on one of the small streams (digits, MNIST-1D), MLP 256-256."""
    return run_on(name, kwargs, load_stream(scenario, tasks=5, setting=setting, seed=seed), seed, recipe,
                  (256, 256))


def choose(name: str, grid: list[dict[str, Any]], run: Any) -> tuple[dict, list[dict], dict]:
    """The grid point with the best validation ACC on seed 0 (``run(kwargs, seed)``), every
    grid result, and the chosen point's own seed-0 metrics."""
    tried, metrics_of = [], []
    for kwargs in grid:
        metrics = run(kwargs, 0)
        metrics_of.append(metrics)
        params = {k: v for k, v in kwargs.items() if k != "lr"}
        tried.append({"params": params, "val_acc": metrics["val_acc"]})
        print(f"  {name} {kwargs}: val {metrics['val_acc']:.3f}", flush=True)
    best = max(range(len(tried)), key=lambda i: tried[i]["val_acc"])
    return grid[best], tried, metrics_of[best]


def stored_entry(params: dict[str, Any], tried: list[dict], runs: list[dict], tasks: int) -> dict[str, Any]:
    """What the results keep of one method on one scenario: the choice, the grid, each seed's
    metrics with its accuracy matrix as a list of rows."""
    return {"chosen": {k: v for k, v in params.items() if k != "lr"}, "grid": tried,
            "runs": [{k: v for k, v in r.items() if not k.startswith("matrix.")}
                     | {"matrix": [[r[f"matrix.{t}.{j}"] for j in range(tasks)] for t in range(tasks)]}
                     for r in runs]}


@cache
def fashion_data(sizes: FashionSizes) -> DataSplit:
    """Fashion-MNIST with its fixed validation split (seed 0) and the stratified subsets."""
    from neuroplastic.data import load_data

    return load_data("fashion-mnist", seed=0).stratified_subset(train=sizes.train, val=sizes.val,
                                                                test=sizes.test, seed=0)


def fashion_stream(scenario: FashionScenario, sizes: FashionSizes, seed: int) -> Stream:
    data = fashion_data(sizes)
    if scenario.kind == "split":
        return split_stream(data, setting=scenario.setting, name="split-fashion-mnist")
    return permuted_stream(data, tasks=scenario.tasks, setting=scenario.setting, seed=seed,
                           name="permuted-fashion-mnist")


def run_fashion(scenarios: tuple[FashionScenario, ...], sizes: FashionSizes, methods: list[str],
                results: dict[str, Any]) -> dict[str, Any]:
    """Every method of ``methods`` on every Fashion-MNIST scenario, into ``results``."""
    start = time.perf_counter()
    torch.set_num_threads(results["threads"])
    for scenario in scenarios:
        recipe = ContinualRecipe(epochs=scenario.epochs, **FASHION_RECIPE)
        entries = results["scenarios"].setdefault(scenario.key, {})
        for name in methods:
            if registry.get(VARIANT_OF.get(name, name), kind="continual").needs_task_labels \
                    and scenario.setting != "task":
                continue
            print(f"{scenario.key} {name}", flush=True)

            def run(kwargs: dict[str, Any], seed: int, name: str = name,
                    recipe: ContinualRecipe = recipe, scenario: FashionScenario = scenario) -> dict[str, Any]:
                return run_on(name, kwargs, fashion_stream(scenario, sizes, seed), seed, recipe, sizes.hidden)

            grid = FASHION_GRIDS[name][:sizes.grid_points]
            params, tried, first = choose(name, grid, run)
            runs = [first, *(run(params, seed) for seed in scenario.seeds[1:])]
            entries[name] = stored_entry(params, tried, runs, scenario.tasks)
            print(f"  -> {name}: ACC {mean_std([r['acc'] for r in runs])}, BWT "
                  f"{statistics.fmean(r['bwt'] for r in runs):+.3f}, "
                  f"{statistics.fmean(r['seconds'] for r in runs):.0f} s per run", flush=True)
    results["seconds"] = results.get("seconds", 0.0) + time.perf_counter() - start
    return results


def method_row(name: str, entries: list[dict[str, Any] | None]) -> str:
    """A table row: ACC ± std / mean BWT per scenario (— where the method does not apply), then
    the chosen hyperparameters (without the fixed options a variant row sets)."""
    cells, chosen = [], []
    for entry in entries:
        if entry is None:
            cells.append("—")
            continue
        runs = entry["runs"]
        bwt = statistics.fmean(r["bwt"] for r in runs)
        cells.append(f"{mean_std([r['acc'] for r in runs])} / {bwt:+.3f}")
        chosen.append(",".join(f"{k}={v:g}" for k, v in entry["chosen"].items()
                               if k not in ("lr", "proximal", "ema", "normalize")) or "—")
    return f"| {name} | " + " | ".join(cells) + " | " + "; ".join(chosen) + " |"


def fashion_verdicts(results: dict[str, Any]) -> list[str]:
    """The issue's targets on Fashion-MNIST, met or missed, in words."""
    def acc(key: str, name: str) -> tuple[float, float] | None:
        entry = results["scenarios"].get(key, {}).get(name)
        if entry is None:
            return None
        return (statistics.fmean(r["acc"] for r in entry["runs"]),
                statistics.fmean(r["bwt"] for r in entry["runs"]))

    lines = []
    permuted = "permuted-fashion-mnist/domain"
    hlop, gpm, joint = acc(permuted, "hlop"), acc(permuted, "gpm"), acc(permuted, "joint")
    if hlop and gpm and joint:
        gap = joint[0] - hlop[0]
        met = gap <= 0.02 and hlop[1] >= -0.02 and hlop[0] >= gpm[0]
        lines.append(f"Permuted-Fashion-MNIST (domain-IL): HLOP ACC {hlop[0]:.3f}, {100 * gap:.1f} points "
                     f"below joint {joint[0]:.3f} (target <= 2), BWT {hlop[1]:+.3f} (target >= -0.02), "
                     f"GPM {gpm[0]:.3f} (target: HLOP at or above): {'met' if met else 'missed'}.")
    task = "split-fashion-mnist/task"
    clnp, joint_task = acc(task, "clnp"), acc(task, "joint")
    if clnp and joint_task:
        exact = all(r["bwt"] == 0.0 for r in results["scenarios"][task]["clnp"]["runs"])
        gap = joint_task[0] - clnp[0]
        met = exact and gap <= 0.02
        said = "exactly 0 on every seed" if exact else "not 0"
        lines.append(f"Split-Fashion-MNIST (task-IL): CLNP BWT {said}, "
                     f"ACC {clnp[0]:.3f}, {100 * gap:.1f} points below joint {joint_task[0]:.3f} "
                     f"(target <= 2): {'met' if met else 'missed'}.")
    cls = "split-fashion-mnist/class"
    if results["scenarios"].get(cls):
        ranked = sorted(((acc(cls, n) or (0.0, 0.0))[0], n) for n in results["scenarios"][cls])
        lines.append("Split-Fashion-MNIST (class-IL): "
                     + ", ".join(f"{n} {a:.3f}" for a, n in reversed(ranked))
                     + " (reported, no target).")
    return lines


def fashion_markdown(results: dict[str, Any]) -> str:
    """The README tables of the Fashion-MNIST part."""
    keys = list(results["scenarios"])
    header = [key.replace("/", " (") + "-IL)" for key in keys]
    protocol = results["protocol"]
    lines = [f"MLP 784-{'-'.join(map(str, protocol['hidden']))}-10 (outputs x tasks in task-IL), SGD lr "
             f"{protocol['lr']} momentum {protocol['momentum']}, batch {protocol['batch_size']}; "
             + "; ".join(f"{k.replace('/', ' ')}-IL {v['tasks']} tasks of {v['epochs']} epoch(s), seeds "
                         + ", ".join(map(str, v["seeds"]))
                         for k, v in protocol["scenarios"].items() if k in keys)
             + f". Every task trains on {protocol['train']:,} training images; accuracies on a fixed "
             f"stratified {protocol['test']:,} test images per task (validation {protocol['val']:,}). "
             f"Hyperparameters chosen on seed 0 by validation ACC from the grids below the tables, "
             "then mean ± std over the seeds. Cells: ACC / BWT.", "",
             "| method | " + " | ".join(header) + " | chosen (per scenario) |",
             "|---|" + "---|" * (len(keys) + 1)]
    names = [n for n in FASHION_GRIDS if any(n in results["scenarios"][k] for k in keys)]
    for name in names:
        lines.append(method_row(name, [results["scenarios"][key].get(name) for key in keys]))
    lines += ["", "Training seconds per run (mean over seeds; the accuracy matrix's evaluation not "
              "counted):", "", "| method | " + " | ".join(header) + " |", "|---|" + "---|" * len(keys)]
    for name in names:
        cells = []
        for key in keys:
            entry = results["scenarios"][key].get(name)
            cells.append("—" if entry is None else
                         f"{statistics.fmean(r['seconds'] for r in entry['runs']):.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    tried = {n: next(results["scenarios"][k][n]["grid"] for k in keys if n in results["scenarios"][k])
             for n in names}
    grids = "; ".join(f"{n}: " + ", ".join(",".join(f"{k}={v:g}" for k, v in point["params"].items())
                                           for point in tried[n])
                      for n in names if len(tried[n]) > 1) or "one point each (--quick)"
    lines += ["", f"Grids: {grids}.", "", "Targets:", "", *[f"- {v}" for v in fashion_verdicts(results)], "",
              f"{results['machine']}; Fashion-MNIST part {results['seconds'] / 60:.0f} minutes."]
    return "\n".join(lines)


def markdown(results: dict) -> str:
    lines = [f"MLP <inputs>-256-256-<outputs>, SGD lr {results['recipe']['lr']} momentum "
             f"{results['recipe']['momentum']}, batch {results['recipe']['batch_size']}, "
             f"{results['recipe']['epochs']} epochs per task, 5 tasks; hyperparameters chosen on seed 0 "
             "by validation accuracy, then mean ± std over seeds 0-2. Cells: ACC / BWT; seconds per "
             "5-task run in the last column block.", ""]
    header = [f"{s} ({m}-IL)" for s, m in SCENARIOS]
    lines.append("| method | " + " | ".join(header) + " | chosen (per scenario) |")
    lines.append("|---|" + "---|" * (len(SCENARIOS) + 1))
    for name in GRIDS:
        lines.append(method_row(name, [results["scenarios"][f"{s}/{m}"].get(name) for s, m in SCENARIOS]))
    lines += ["", "Seconds per 5-task run (mean over seeds):", "",
              "| method | " + " | ".join(header) + " |", "|---|" + "---|" * len(SCENARIOS)]
    for name in GRIDS:
        cells = []
        for scenario, setting in SCENARIOS:
            entry = results["scenarios"][f"{scenario}/{setting}"].get(name)
            seconds = None if entry is None else statistics.fmean(r["seconds"] for r in entry["runs"])
            cells.append("—" if seconds is None else f"{seconds:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"{results['machine']}; whole benchmark {results['seconds'] / 60:.0f} minutes."]
    return "\n".join(lines)


def run_digits(args: argparse.Namespace) -> None:
    """The small streams' part: every method on digits and MNIST-1D."""
    torch.set_num_threads(2)
    recipe = ContinualRecipe(epochs=args.epochs)
    start = time.perf_counter()
    results: dict[str, Any] = {"recipe": recipe.to_dict(), "seeds": list(SEEDS), "scenarios": {},
                               "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"}
    if args.merge:
        results = stored_results("continual")
    earlier = results.get("seconds", 0.0) if args.merge else 0.0
    methods = [m for m in args.methods if m in GRIDS]
    for scenario, setting in SCENARIOS:
        key = f"{scenario}/{setting}"
        results["scenarios"].setdefault(key, {})
        for name in methods:
            if registry.get(VARIANT_OF.get(name, name), kind="continual").needs_task_labels \
                    and setting != "task":
                continue
            print(f"{key} {name}", flush=True)

            def run(kwargs: dict[str, Any], seed: int, name: str = name, scenario: str = scenario,
                    setting: str = setting) -> dict[str, Any]:
                return one_run(name, kwargs, scenario, setting, seed, recipe)

            params, tried, first = choose(name, GRIDS[name], run)
            runs = [first, *(run(params, seed) for seed in SEEDS[1:])]
            results["scenarios"][key][name] = stored_entry(params, tried, runs, 5)
            accs = [r["acc"] for r in runs]
            bwt = statistics.fmean(r["bwt"] for r in runs)
            print(f"  -> {name}: ACC {mean_std(accs)}, BWT {bwt:+.3f}", flush=True)
    results["seconds"] = earlier + time.perf_counter() - start
    complete = all(name in results["scenarios"][f"{s}/{m}"] for s, m in SCENARIOS for name in GRIDS
                   if not (registry.get(VARIANT_OF.get(name, name), kind="continual").needs_task_labels
                           and m != "task"))
    publish("continual", markdown(results), results=results,
            readme=not args.no_readme and complete and args.epochs == 25)


def fashion_part(args: argparse.Namespace) -> None:
    """The Fashion-MNIST part (or its ``--quick`` version into ``--json``)."""
    scenarios, sizes = (QUICK_SCENARIOS, QUICK) if args.quick else (FASHION_SCENARIOS, FASHION)
    methods = [m for m in args.methods if m in FASHION_GRIDS]
    if args.merge:
        results = stored_results("continual-fashion")
    else:
        data = fashion_data(sizes)
        results = {"protocol": {**FASHION_RECIPE, "hidden": list(sizes.hidden),
                                "train": len(data.train), "val": len(data.val), "test": len(data.test),
                                "scenarios": {s.key: {"tasks": s.tasks, "epochs": s.epochs,
                                                      "seeds": list(s.seeds)} for s in scenarios}},
                   "scenarios": {}, "threads": args.threads,
                   "machine": f"{platform.machine()}, {args.threads} threads"}
    run_fashion(scenarios, sizes, methods, results)
    publish("continual-fashion", fashion_markdown(results), results=results, json_path=args.json,
            readme=not args.no_readme and (set(methods) == set(FASHION_GRIDS) or args.merge))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=25, help="epochs per task of the digits part")
    parser.add_argument("--methods", nargs="*", default=list(GRIDS))
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--merge", action="store_true",
                        help="rerun only --methods and merge them into the existing results")
    parser.add_argument("--from-json", action="store_true", help="only re-render the tables")
    args = parse_with_parts(parser)
    if args.from_json:
        republish("continual", markdown)
        if Path(RESULTS_DIR / "continual-fashion.json").is_file():
            republish("continual-fashion", fashion_markdown)
        return
    run_parts(args, digits=lambda: run_digits(args), fashion=lambda: fashion_part(args))


if __name__ == "__main__":
    main()
