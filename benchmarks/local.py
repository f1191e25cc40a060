"""Local-learning benchmark: every rule against backprop of the same architecture on circles,
two-moons, digits and MNIST-1D (3 seeds), and robustness on digits for biprop, halfbiprop and
HAN against backprop and FGSM adversarial training.

Each rule runs through ``neuroplastic.local.runner.learn`` with its CLI defaults (see
each method's ``defaults``) except on the 2-D toy sets, where the dis-inhibitory network is 2-32-32-2
(the demo's, shared/LOCAL.md) trained 100 epochs and the bidirectional ones 300: with 700
training points an epoch is only seven batches, and the demo's 20 epochs left backprop itself
at 90-97% on circles. Nothing is tuned on the test
split. Workers run one thread each, two at a time.

Writes benchmarks/results/local.json and the README table between the ``local-benchmark``
markers. Run: ``.venv/bin/python benchmarks/local.py``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import statistics
import time
from typing import Any

import torch

from neuroplastic import loop
from neuroplastic.data import load_data, loader
from neuroplastic.evaluate.outputs import accuracy
from neuroplastic.evaluate.robustness import fgsm_training_loss, robustness
from neuroplastic.local.runner import build_network, defaults_of, input_bounds, learn
from neuroplastic.models.factory import seeded_model
from readme_table import mean_std, publish, republish, stored_results

DATASETS = ("circles", "moons", "digits", "mnist1d")
RULES = ("disinhibitory", "disinhibitory:lin-thresh", "softhebb", "biprop", "halfbiprop", "han")
SEEDS = (0, 1, 2)
ADVERSARIAL_EPS = 0.2


def job(task: tuple[str, str, int]) -> tuple[str, str, int, dict[str, float]]:
    data_name, rule, seed = task
    torch.set_num_threads(1)
    split = load_data(data_name, seed=seed)
    if rule == "fgsm-at":
        return data_name, rule, seed, adversarial_training(split, seed)
    name, _, variant = rule.partition(":")
    params: dict[str, Any] = {"variant": variant} if variant else {}
    options: dict[str, Any] = {}
    if data_name in ("circles", "moons") and name == "disinhibitory":
        options = {"hidden": (32, 32), "epochs": 100}
    elif data_name in ("circles", "moons") and name in ("biprop", "halfbiprop", "han"):
        options = {"epochs": 300}  # 7 batches per epoch: 100 epochs leave backprop short of fitting
    result = learn(name, split, seed=seed, params=params, measure_robustness=data_name == "digits",
                   **options)
    return data_name, rule, seed, result.metrics()


def adversarial_training(split: Any, seed: int) -> dict[str, float]:
    """Backprop on the biprop architecture with FGSM adversarial training (eps 0.2)."""
    base = defaults_of("biprop")
    model = seeded_model(lambda: build_network("biprop", split, base.hidden), seed, "cpu")
    begin = time.perf_counter()
    loop.fit(model, loader(split.train, batch_size=base.batch_size, shuffle=True, seed=seed),
             optimizer=torch.optim.Adam(model.parameters(), lr=base.lr), epochs=base.epochs,
             batch_loss=fgsm_training_loss(eps=ADVERSARIAL_EPS, bounds=input_bounds(split)))
    seconds = time.perf_counter() - begin
    test = loader(split.test, batch_size=512)
    found = robustness(model, test, bounds=input_bounds(split), seed=seed)
    train = loader(split.train, batch_size=512)
    return {"test_acc": accuracy(model, test), "train_acc": accuracy(model, train), "seconds": seconds,
            **{k: v for k, v in found.metrics().items() if k != "robust.clean"}}


def cell(runs: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in runs if key in r]
    return mean_std(values, scale=100, decimals=1) if values else "—"


def markdown(results: dict[str, Any]) -> str:
    table = results["runs"]
    lines = ["Test accuracy (%), mean ± std over seeds 0-2: the rule / backprop on the same "
             "architecture (same init, data order, epochs and Adam learning rate).", "",
             "| rule | " + " | ".join(DATASETS) + " |", "|---|" + "---|" * len(DATASETS)]
    for rule in RULES:
        cells = []
        for data in DATASETS:
            runs = table.get(data, {}).get(rule, [])
            cells.append(f"{cell(runs, 'test_acc')} / {cell(runs, 'backprop.test_acc')}" if runs else "—")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    cells = [cell(table.get(d, {}).get("softhebb", []), "random_features.test_acc") for d in DATASETS]
    lines.append("| random features (softhebb's width) | " + " | ".join(cells) + " |")
    lines += ["", "Dis-inhibitory control: cosine of its update with backprop's gradient after the last "
              "epoch (validation batch), mean over seeds:", "",
              "| variant | " + " | ".join(DATASETS) + " |", "|---|" + "---|" * len(DATASETS)]
    for rule in ("disinhibitory", "disinhibitory:lin-thresh"):
        cells = []
        for data in DATASETS:
            runs = table.get(data, {}).get(rule, [])
            keys = sorted(k for k in (runs[0] if runs else {}) if k.startswith("alignment.") and
                          not k.endswith(".sign"))
            cells.append(", ".join(f"{k.removeprefix('alignment.')} "
                                   f"{statistics.fmean(r[k] for r in runs):.2f}" for k in keys) or "—")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    digits = table.get("digits", {})
    columns = [("test_acc", "clean"), ("robust.fgsm.0.1", "FGSM 0.1"), ("robust.fgsm.0.2", "FGSM 0.2"),
               ("robust.fgsm.0.3", "FGSM 0.3"), ("robust.pgd.0.1", "PGD 0.1"), ("robust.pgd.0.2", "PGD 0.2"),
               ("robust.noise.0.3", "noise σ 0.3"), ("robust.noise.0.5", "noise σ 0.5")]
    lines += ["", "Robustness on digits (64-16-10 sigmoid MLP, test accuracy %, mean ± std over seeds; "
              "PGD 20 steps, 2 restarts):", "", "| training | " + " | ".join(c for _, c in columns) + " |",
              "|---|" + "---|" * len(columns)]
    rows = [("backprop", digits.get("biprop", []), "backprop."), ("biprop", digits.get("biprop", []), ""),
            ("halfbiprop", digits.get("halfbiprop", []), ""), ("han", digits.get("han", []), ""),
            (f"FGSM adversarial training (eps {ADVERSARIAL_EPS})", digits.get("fgsm-at", []), "")]
    for label, runs, prefix in rows:
        lines.append(f"| {label} | " + " | ".join(cell(runs, prefix + k) for k, _ in columns) + " |")
    seconds = {rule: statistics.fmean(r["seconds"] for r in digits.get(rule, [])) for rule in RULES
               if digits.get(rule)}
    lines += ["", "Seconds per training run on digits (one thread): " +
              ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + ".",
              f"{results['machine']}; whole benchmark {results['seconds'] / 60:.0f} minutes."]
    for rerun in results.get("rerun", []):
        lines.append(f"Re-run on {rerun['date']}: {', '.join(rerun['rules'])} on {', '.join(rerun['data'])} "
                     f"({rerun['seconds'] / 60:.0f} minutes).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", nargs="*", default=list(DATASETS))
    parser.add_argument("--rules", nargs="*", default=[*RULES, "fgsm-at"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--from-json", action="store_true", help="only re-render the tables")
    parser.add_argument("--merge", action="store_true",
                        help="re-run only --rules and put their runs into the stored results")
    args = parser.parse_args()
    if args.from_json:
        republish("local", markdown)
        return
    tasks = [(d, r, s) for d in args.data for r in args.rules for s in SEEDS
             if r != "fgsm-at" or d == "digits"]
    start = time.perf_counter()
    results: dict[str, Any] = {"seeds": list(SEEDS), "runs": {},
                               "machine": f"{platform.machine()}, {args.workers} workers x 1 thread"}
    if args.merge:
        results = stored_results("local")
        for rules in results["runs"].values():
            for rule in args.rules:
                rules.pop(rule, None)
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for data_name, rule, seed, metrics in pool.imap_unordered(job, tasks):
            results["runs"].setdefault(data_name, {}).setdefault(rule, []).append({"seed": seed, **metrics})
            twin = metrics.get("backprop.test_acc")
            print(f"{data_name} {rule} seed {seed}: test {metrics['test_acc']:.3f}"
                  + (f" (backprop {twin:.3f})" if twin is not None else ""), flush=True)
    for rules in results["runs"].values():
        for runs in rules.values():
            runs.sort(key=lambda r: r["seed"])
    if args.merge:  # the whole-benchmark time stays the stored one; say what was re-run
        results.setdefault("rerun", []).append(
            {"rules": args.rules, "data": args.data, "seconds": time.perf_counter() - start,
             "date": time.strftime("%Y-%m-%d")})
    else:
        results["seconds"] = time.perf_counter() - start
    complete = args.merge or (set(args.data) == set(DATASETS) and set(args.rules) >= set(RULES))
    publish("local", markdown(results), results=results, readme=not args.no_readme and complete)


if __name__ == "__main__":
    main()
