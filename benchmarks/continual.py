"""Continual-learning benchmark: every method on five task streams, 3 seeds.

Protocol (the pilot's in shared/CONTINUAL.md): MLP <inputs>-256-256-<outputs>, SGD lr 0.01
momentum 0.9, batch 32, 25 epochs per task, a fresh optimizer per task. Each method's
hyperparameter is chosen on seed 0 by the mean final VALIDATION accuracy over the tasks
(the test splits are never looked at to choose), then run on seeds 0, 1, 2.

Writes benchmarks/results/continual.json and the README table between the
``continual-benchmark`` markers. Run: ``.venv/bin/python benchmarks/continual.py``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any

import torch

from neuroplastic import registry
from neuroplastic.continual import ContinualRecipe, run_stream
from neuroplastic.data.streams import load_stream
from neuroplastic.models import MLP
from readme_table import mean_std, publish, republish, stored_results

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


def one_run(name: str, kwargs: dict[str, Any], scenario: str, setting: str, seed: int,
            recipe: ContinualRecipe) -> dict[str, Any]:
    stream = load_stream(scenario, tasks=5, setting=setting, seed=seed)
    features = int(torch.tensor(stream.input_shape).prod())
    torch.manual_seed(seed)
    model = MLP(features, stream.num_outputs, hidden=(256, 256))
    method = registry.create(VARIANT_OF.get(name, name), kind="continual", **kwargs)
    start = time.perf_counter()
    result = run_stream(model, stream, method, ContinualRecipe(**{**recipe.to_dict(), "seed": seed}),
                        validate=True)
    metrics = dict(result.metrics)
    metrics["val_acc"] = float(result.val_matrix[-1].mean())  # type: ignore[index]
    metrics["wall_seconds"] = time.perf_counter() - start
    return metrics


def choose(name: str, scenario: str, setting: str, recipe: ContinualRecipe) -> tuple[dict, list[dict]]:
    """The grid point with the best validation ACC on seed 0, and every grid result."""
    tried = []
    for kwargs in GRIDS[name]:
        metrics = one_run(name, kwargs, scenario, setting, 0, recipe)
        params = {k: v for k, v in kwargs.items() if k != "lr"}
        tried.append({"params": params, "val_acc": metrics["val_acc"]})
        print(f"  {name} {kwargs}: val {metrics['val_acc']:.3f}", flush=True)
    best = max(range(len(tried)), key=lambda i: tried[i]["val_acc"])
    return GRIDS[name][best], tried


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
        cells, chosen = [], []
        for scenario, setting in SCENARIOS:
            entry = results["scenarios"][f"{scenario}/{setting}"].get(name)
            if entry is None:
                cells.append("—")
                continue
            runs = entry["runs"]
            bwt = statistics.fmean(r["bwt"] for r in runs)
            cells.append(f"{mean_std([r['acc'] for r in runs])} / {bwt:+.3f}")
            chosen.append(",".join(f"{k}={v:g}" for k, v in entry["chosen"].items()
                                   if k not in ("lr", "proximal", "ema", "normalize")) or "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + "; ".join(chosen) + " |")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--methods", nargs="*", default=list(GRIDS))
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--merge", action="store_true",
                        help="rerun only --methods and merge them into the existing results")
    parser.add_argument("--from-json", action="store_true", help="only re-render the tables")
    args = parser.parse_args()
    if args.from_json:
        republish("continual", markdown)
        return
    torch.set_num_threads(2)
    recipe = ContinualRecipe(epochs=args.epochs)
    start = time.perf_counter()
    results: dict[str, Any] = {"recipe": recipe.to_dict(), "seeds": list(SEEDS), "scenarios": {},
                               "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"}
    if args.merge:
        results = stored_results("continual")
    earlier = results.get("seconds", 0.0) if args.merge else 0.0
    for scenario, setting in SCENARIOS:
        key = f"{scenario}/{setting}"
        results["scenarios"].setdefault(key, {})
        for name in args.methods:
            if registry.get(VARIANT_OF.get(name, name), kind="continual").needs_task_labels \
                    and setting != "task":
                continue
            print(f"{key} {name}", flush=True)
            params, tried = choose(name, scenario, setting, recipe)
            runs = [one_run(name, params, scenario, setting, seed, recipe) for seed in SEEDS]
            results["scenarios"][key][name] = {
                "chosen": {k: v for k, v in params.items() if k != "lr"}, "grid": tried,
                "runs": [{k: v for k, v in r.items() if not k.startswith("matrix.")} | {
                    "matrix": [[r[f"matrix.{t}.{j}"] for j in range(5)] for t in range(5)]} for r in runs]}
            accs = [r["acc"] for r in runs]
            bwt = statistics.fmean(r["bwt"] for r in runs)
            print(f"  -> {name}: ACC {mean_std(accs)}, BWT {bwt:+.3f}", flush=True)
    results["seconds"] = earlier + time.perf_counter() - start
    complete = all(name in results["scenarios"][f"{s}/{m}"] for s, m in SCENARIOS for name in GRIDS
                   if not (registry.get(VARIANT_OF.get(name, name), kind="continual").needs_task_labels
                           and m != "task"))
    publish("continual", markdown(results), results=results,
            readme=not args.no_readme and complete and args.epochs == 25)


if __name__ == "__main__":
    main()
