"""Forgetting benchmark: every scenario x every method, against retraining, on the default
data (digits) and on Fashion-MNIST.

ssd and lfssd build D as the SSD reference does (retain then forget, re-batched); the row
"ssd, D = training split" is SSD with the training split in its own order as D. U-LiRA
(16 shadow models) judges random 10% and 100-sample requests.

Digits writes benchmarks/results/forget.json and the README table between the
``forget-benchmark`` markers (about 4 minutes on 2 CPU cores). Fashion-MNIST (needs
``make data``) writes benchmarks/results/forget-fashion.json and the tables between the
``forget-fashion-benchmark`` markers: the MLP on a 5,000-image training subset for all ten
classes and the random requests with U-LiRA (25 minutes with one thread of this 2-core
machine), and the CNN of PyTorch's MNIST example on another 5,000-image subset for three
classes (34 minutes with one thread; ``--setups`` runs one model, so the two can share the
two cores). Run: ``.venv/bin/python benchmarks/forget.py [--part digits|fashion]``;
``--quick --json PATH`` is a one-minute Fashion-MNIST run at toy sizes (tested; no README).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from neuroplastic.data import (
    COARSE_NAMES,
    coarse_label,
    corrective,
    digits,
    full_class,
    load_data,
    loader,
    random_samples,
    sub_class,
)
from neuroplastic.evaluate.outputs import accuracy
from neuroplastic.forget.experiment import ForgetOptions, compare_method, run_forget, trained_model
from neuroplastic.models import build_architecture, default_model
from neuroplastic.training import TrainConfig, train_epochs
from readme_table import parse_with_parts, publish, republish, run_parts

METHODS = ("ssd", "lfssd", "ssd-auto", "finetune", "neggrad+", "random-labels")
ROWS = ("retrain", "ssd-auto", "ssd", "ssd-train-d", "lfssd", "finetune", "neggrad+", "random-labels")
LABELS = {"ssd": "ssd (published D)", "ssd-train-d": "ssd, D = training split"}
KEYS = ("forget_acc", "retain_acc", "test_acc", "mia", "seconds")
ULIRA_KEYS = ("auc", "auc_std", "tpr_at_1fpr", "tpr_at_1fpr_std", "tpr_at_5fpr", "tpr_at_5fpr_std",
              "seconds")
SHADOWS = 16


@dataclass(frozen=True)
class FashionSetup:
    """One Fashion-MNIST configuration: built-in architecture, stratified subset sizes (None:
    the whole split), training epochs (Adam, lr 1e-3, batch 64, no augmentation: enough for
    >= 99% training accuracy), classes to forget, and whether to run the random requests."""

    arch: str
    train: int
    test: int | None
    epochs: int
    classes: tuple[int, ...]
    random: bool


FASHION = (FashionSetup("mlp", 5000, 5000, 100, tuple(range(10)), True),
           FashionSetup("cnn", 5000, None, 40, (0, 1, 2), False))
QUICK = (FashionSetup("mlp", 600, 600, 10, (0,), True),
         FashionSetup("cnn", 300, 300, 1, (0,), False))
QUICK_SHADOWS = 6


def epoch_seconds(data, factory, config: TrainConfig) -> float:
    """Steady-state seconds of one training epoch over the full training set (mean of 3,
    after one warm-up epoch)."""
    model = factory()
    batches = loader(data.train, batch_size=config.batch_size, shuffle=True, seed=config.seed)
    train_epochs(model, batches, epochs=1, lr=config.lr)
    start = time.perf_counter()
    train_epochs(model, batches, epochs=3, lr=config.lr)
    return (time.perf_counter() - start) / 3


def per_method(metrics: dict, epoch: float) -> dict[str, dict[str, float]]:
    """Regroup one run's flat metrics by method (ssd-auto is the run's main method)."""
    out = {"original": {"mia_auc": metrics["original.mia_auc"],
                        "mia_informative": metrics["mia_informative"],
                        **{f"ulira_{k}": metrics.get(f"original.ulira.{k}", math.nan) for k in ULIRA_KEYS}}}
    for name in ROWS:
        prefix = "unlearned" if name == "ssd-auto" else name
        row = {k: metrics.get(f"{prefix}.{k}", math.nan) for k in (*KEYS, "attack_success")}
        row.update({f"ulira_{k}": metrics.get(f"{prefix}.ulira.{k}", math.nan) for k in ULIRA_KEYS})
        if name == "ssd-auto":
            row["cached_request_seconds"] = metrics["cached_request_seconds"]
            row["repair_seconds"] = metrics.get("unlearned.repair_seconds", 0.0)
            row["repaired"] = metrics.get("choice.repaired", 0.0)
            row["alpha"] = metrics.get("choice.alpha", math.nan)
            row["lam"] = metrics.get("choice.lam", math.nan)
        elif f"{name}.cached_request_seconds" in metrics:
            row["cached_request_seconds"] = metrics[f"{name}.cached_request_seconds"]
        row["epochs"] = row["seconds"] / epoch
        row["time_vs_retrain"] = row["seconds"] / metrics["retrain.seconds"]
        out[name] = row
    return out


def run_scenario(scenario, config, factory, epoch, *, shadows: int | None = None):
    model, _ = trained_model(scenario.data, factory, config)
    options = ForgetOptions(ssd_full="published", ulira_shadows=shadows)
    run = run_forget(scenario, model, method="ssd-auto", config=config, factory=factory,
                     retrain=True, sweep=False, compare=tuple(m for m in METHODS if m != "ssd-auto"),
                     options=options)
    train_order = loader(scenario.data.train, batch_size=config.batch_size)
    extra, _, _ = compare_method("ssd", model, scenario, full=train_order, config=config,
                                 options=options, label="ssd-train-d")
    return per_method({**run.metrics, **extra}, epoch)


def summarise_classes(per_class: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and worst-case figures over the ten class-forgetting requests."""
    summary = {"original": {
        "mean_mia_auc": statistics.fmean(c["original"]["mia_auc"] for c in per_class),
        "informative_classes": sum(c["original"]["mia_informative"] for c in per_class)}}
    for name in ROWS:
        rows = [c[name] for c in per_class]
        forget_gap = [c[name]["forget_acc"] - c["retrain"]["forget_acc"] for c in per_class]
        test_gap = [c["retrain"]["test_acc"] - c[name]["test_acc"] for c in per_class]
        summary[name] = {f"mean_{k}": statistics.fmean(r[k] for r in rows)
                         for k in (*KEYS, "epochs", "time_vs_retrain")}
        summary[name]["worst_forget_gap"] = max(forget_gap)
        summary[name]["worst_test_drop"] = max(test_gap)
        if "cached_request_seconds" in rows[0]:
            summary[name]["mean_cached_request_seconds"] = statistics.fmean(
                r["cached_request_seconds"] for r in rows)
            summary[name]["cache_speedup"] = statistics.fmean(
                r["seconds"] / r["cached_request_seconds"] for r in rows)
    return summary


def class_rows(summary: dict) -> list[str]:
    """The class-forgetting table (mean over classes, worst gap to retrain)."""
    lines = ["| method | forget acc | retained test acc | MIA | worst forget gap | worst test drop "
             "| seconds | epochs of cost | time / retrain | cached request (s) | cache speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ROWS:
        r = summary[name]
        cached = r.get("mean_cached_request_seconds", math.nan)
        speedup = r.get("cache_speedup", math.nan)
        lines.append(
            f"| {LABELS.get(name, name)} | {r['mean_forget_acc']:.3f} | {r['mean_test_acc']:.3f} | "
            f"{r['mean_mia']:.3f} | {r['worst_forget_gap']:+.3f} | {r['worst_test_drop']:+.3f} | "
            f"{r['mean_seconds']:.2f} | {r['mean_epochs']:.2f} | {r['mean_time_vs_retrain']:.3f} | "
            + ("— | — |" if math.isnan(cached) else f"{cached:.3f} | {speedup:.1f}x |"))
    return lines


def ulira_rows(results: dict) -> list[str]:
    """The U-LiRA table of the random requests."""
    lines = ["| model | " + " | ".join(f"{results['descriptions'][sc]}" for sc in ("random", "random100"))
             + " | cost (s), " + results["descriptions"]["random"] + " |",
             "|---|---|---|---|"]
    for m in ("original", *[r for r in ROWS if r != "ssd-train-d"]):
        cells = []
        for scen in ("random", "random100"):
            r = results[scen][m]
            cells.append(f"{r['ulira_auc']:.3f} ± {r.get('ulira_auc_std', math.nan):.3f} / "
                         f"{r['ulira_tpr_at_1fpr']:.3f} / {r['ulira_tpr_at_5fpr']:.3f}")
        cost = results["random"][m]["ulira_seconds"]
        cells.append("—" if m == "original" else f"{cost:.1f}")
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    return lines


def scenario_rows(results: dict, scenarios: tuple[str, ...]) -> list[str]:
    """One row per scenario: forget acc / retained test acc / MIA of every method."""
    lines = ["| scenario | " + " | ".join(LABELS.get(m, m) for m in ROWS) + " | entropy attack "
             "power (AUC) |",
             "|---|" + "---|" * (len(ROWS) + 1)]
    for scen in scenarios:
        row = results[scen]
        cells = []
        for m in ROWS:
            text = f"{row[m]['forget_acc']:.2f} / {row[m]['test_acc']:.2f} / {row[m]['mia']:.2f}"
            if scen == "corrective":
                text += f" / ASR {row[m]['attack_success']:.2f}"
            cells.append(text)
        power = row["original"]
        cells.append(f"{power['mia_auc']:.2f}" + ("" if power["mia_informative"] else " (cannot tell)"))
        lines.append(f"| {results['descriptions'][scen]} | " + " | ".join(cells) + " |")
    return lines


ULIRA_CAPTION = ("U-LiRA (Hayes et al. 2024), {shadows} shadow models, each trained with the "
                 "benchmark's recipe on half of the training and test splits (complementary pairs); "
                 "the candidates are the request's samples plus as many random test samples, and "
                 "every shadow holds and unlearns exactly half of them (a request of the same size "
                 "in every model). As Hayes et al., the models under attack are trained exactly as "
                 "the shadows: each shadow in turn is attacked with the pooled-variance statistics "
                 "of the other {others}. AUC 0.5 = indistinguishable from never having seen the "
                 "samples; \"original\" is the attack's power before unlearning. Cells: AUC mean ± "
                 "std over the targets / TPR at 1% FPR / TPR at 5% FPR (means); cost = seconds to "
                 "apply the method to all shadows.")


def markdown(results: dict) -> str:
    """The README tables."""
    s = results["class_summary"]
    original = s["original"]
    lines = [
        f"Default data (digits, {results['train_size']} training images), reference CNN, "
        f"one training epoch = {results['epoch_seconds']:.3f} s, retrain = "
        f"{results['config']['epochs']} epochs. Class forgetting: mean over the 10 classes, "
        "worst = largest gap to retrain over the classes. ssd and lfssd take D as the SSD "
        "reference builds it (retain then forget, re-batched); \"ssd, D = training split\" takes "
        "the training split in its own order, as this table's ssd row did before.",
        "",
        *class_rows(s),
    ]
    lines += ["", f"The entropy attack's own power on the original model (cross-validated AUC at "
              f"telling retain-train from held-out samples): mean {original['mean_mia_auc']:.2f}; "
              f"informative (AUC >= 0.6) for {original['informative_classes']:.0f} of 10 classes.",
              "", "Per class, forget acc / retained test acc (retrain | ssd-auto | ssd with the "
              "published D | ssd with D = training split, both alpha=10), and what ssd-auto chose:", "",
              "| class | retrain | ssd-auto | ssd (published D) | ssd, D = training split "
              "| ssd-auto alpha, lambda, repaired |",
              "|---|---|---|---|---|---|"]
    for c, row in enumerate(results["classes"]):
        cells = [f"{row[m]['forget_acc']:.3f} / {row[m]['test_acc']:.3f}"
                 for m in ("retrain", "ssd-auto", "ssd", "ssd-train-d")]
        auto = row["ssd-auto"]
        cells.append(f"{auto.get('alpha', math.nan):.1f}, {auto.get('lam', math.nan):g}, "
                     + ("yes" if auto.get("repaired") else "no"))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", "Other scenarios (forget acc / retained test acc / MIA; corrective adds the "
              "attack success rate on triggered test images):", "",
              *scenario_rows(results, ("random", "random100", "subclass", "corrective"))]
    lines += ["", ULIRA_CAPTION.format(shadows=results["shadows"], others=results["shadows"] - 1), "",
              *ulira_rows(results)]
    return "\n".join(lines)


def fashion_part(setup: FashionSetup, *, shadows: int, seed: int = 0) -> dict:
    """One Fashion-MNIST setup: the original model (its training accuracy: membership is
    only visible once the model fits its training set), class requests, and with
    ``setup.random`` the random 10% and 100-sample requests judged by U-LiRA."""
    start = time.perf_counter()
    data = load_data("fashion-mnist", seed=seed).stratified_subset(train=setup.train, test=setup.test,
                                                                     seed=seed)
    config = TrainConfig(epochs=setup.epochs, seed=seed)

    def factory():
        return build_architecture(setup.arch, data.input_shape, data.num_classes)

    model, train_seconds = trained_model(data, factory, config)
    epoch = train_seconds / config.epochs
    results: dict = {"setup": asdict(setup), "config": config.to_dict(), "epoch_seconds": epoch,
                     "train_size": len(data.train), "test_size": len(data.test),
                     "parameters": sum(p.numel() for p in model.parameters()),
                     "original_train_acc": accuracy(model, loader(data.train, batch_size=256)),
                     "original_test_acc": accuracy(model, loader(data.test, batch_size=256)),
                     "classes": [], "descriptions": {}, "shadows": shadows}
    for cls in setup.classes:
        print(f"fashion-mnist {setup.arch}: class {cls}", flush=True)
        results["classes"].append(run_scenario(full_class(data, cls), config, factory, epoch))
    results["class_summary"] = summarise_classes(results["classes"])
    if setup.random:
        for name, scenario in (("random", random_samples(data, fraction=0.1, seed=seed)),
                               ("random100", random_samples(data, count=100, seed=seed + 1))):
            print(f"fashion-mnist {setup.arch}: {name}", flush=True)
            results[name] = run_scenario(scenario, config, factory, epoch, shadows=shadows)
            results["descriptions"][name] = scenario.description
    results["wall_seconds"] = time.perf_counter() - start
    return results


def within(value: float, limit: float, what: str) -> str:
    """``what`` and whether ``value`` met ``limit`` (smaller is better), as words."""
    return f"{what} {value:.3f} ({'met' if value <= limit else 'missed'}: target <= {limit:.3f})"


def fashion_verdicts(part: dict) -> list[str]:
    """The issue's targets for ssd-auto, each met or missed, in words."""
    s = part["class_summary"]
    auto, retrain = s["ssd-auto"], s["retrain"]
    lines = [f"Class requests ({len(part['classes'])}): ssd-auto's " + "; ".join([
        within(abs(auto["mean_forget_acc"] - retrain["mean_forget_acc"]), 0.02,
               "mean forget accuracy off retrain's by"),
        within(retrain["mean_test_acc"] - auto["mean_test_acc"], 0.01,
               "mean retained test accuracy below retrain's by"),
        within(auto["worst_forget_gap"], 0.05, "worst class's forget gap"),
        within(auto["worst_test_drop"], 0.02, "worst class's test drop"),
        within(auto["mean_time_vs_retrain"], 0.1, "time / retrain")]) + "."]
    if "random" in part:
        for scen in ("random", "random100"):
            r = part[scen]
            a, rt, o = r["ssd-auto"], r["retrain"], r["original"]
            visible = o["ulira_auc"] >= 0.6
            lines.append(
                f"{part['descriptions'][scen].capitalize()}: the original's U-LiRA AUC is "
                f"{o['ulira_auc']:.3f} (membership {'visible' if visible else 'NOT visible: below 0.6'}); "
                "ssd-auto's " + "; ".join([
                    within(a["ulira_auc"] - rt["ulira_auc"], 0.02, "AUC above retrain's by"),
                    within(a["ulira_tpr_at_1fpr"] / max(rt["ulira_tpr_at_1fpr"], 1e-9), 1.5,
                           "TPR at 1% FPR / retrain's"),
                    within(abs(a["test_acc"] - rt["test_acc"]), 0.01,
                           "test accuracy off retrain's by")]) + ".")
            lines[-1] += " Methods within 0.02 of retrain's AUC with test accuracy within 1 point: "
            close = [m for m in ROWS if m not in ("retrain", "ssd-train-d")
                     and r[m]["ulira_auc"] <= rt["ulira_auc"] + 0.02
                     and abs(r[m]["test_acc"] - rt["test_acc"]) <= 0.01]
            lines[-1] += (", ".join(close) if close else "none") + "."
    return lines


def fashion_markdown(results: dict) -> str:
    """The README tables of the Fashion-MNIST part."""
    lines: list[str] = []
    cores = "one thread" if results.get("threads", 1) == 1 else f"{results['threads']} threads"
    order = [s.arch for s in FASHION]  # the run's order (stored JSON keys are sorted)
    for arch, part in sorted(results["setups"].items(), key=lambda item: order.index(item[0])
                             if item[0] in order else len(order)):
        setup = part["setup"]
        test = f"{part['test_size']:,} test images" + (" (a stratified subset)" if setup["test"] else "")
        lines += [f"**Fashion-MNIST, {arch}** ({part['parameters']:,} parameters): a stratified "
                  f"{part['train_size']:,}-image training subset (seed 0) and {test}; Adam lr 1e-3, "
                  f"batch 64, {setup['epochs']} epoch{'s' if setup['epochs'] > 1 else ''}, no "
                  f"augmentation: training accuracy "
                  f"{part['original_train_acc']:.3f}, test accuracy {part['original_test_acc']:.3f}; "
                  f"one epoch = {part['epoch_seconds']:.2f} s, this part's wall time "
                  f"{part['wall_seconds'] / 60:.1f} min with {cores} of a 2-core machine. Class "
                  f"forgetting, mean over classes {', '.join(map(str, setup['classes']))}:", "",
                  *class_rows(part["class_summary"]), ""]
        if "random" in part:
            lines += ["Random requests (forget acc / retained test acc / entropy-attack MIA):", "",
                      *scenario_rows(part, ("random", "random100")), "",
                      ULIRA_CAPTION.format(shadows=part["shadows"], others=part["shadows"] - 1), "",
                      *ulira_rows(part), ""]
        lines += [f"Targets ({arch}):", "", *[f"- {v}" for v in fashion_verdicts(part)], ""]
    return "\n".join(lines).rstrip()


def run_fashion(setups: tuple[FashionSetup, ...], *, shadows: int, json_path: Path | None,
                readme: bool) -> None:
    """The Fashion-MNIST part: every setup, written to ``json_path`` (or published)."""
    results = {"torch": torch.__version__, "machine": platform.platform(),
               "threads": torch.get_num_threads(),
               "setups": {s.arch: fashion_part(s, shadows=shadows) for s in setups}}
    publish("forget-fashion", fashion_markdown(results), results=results, readme=readme, json_path=json_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--classes", type=int, nargs="*", default=list(range(10)))
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--shadows", type=int, default=SHADOWS, help="U-LiRA shadow models")
    parser.add_argument("--setups", nargs="+", choices=[s.arch for s in FASHION],
                        help="only these Fashion-MNIST models (say, one per process with --json each)")
    parser.add_argument("--from-json", action="store_true",
                        help="only re-render the tables from benchmarks/results/forget.json")
    args = parse_with_parts(parser)
    if args.from_json:
        republish("forget", markdown)
        republish("forget-fashion", fashion_markdown)
        return
    torch.set_num_threads(args.threads)

    def fashion() -> None:
        setups = QUICK if args.quick else FASHION
        run_fashion(tuple(s for s in setups if not args.setups or s.arch in args.setups), json_path=args.json,
                    shadows=QUICK_SHADOWS if args.quick else args.shadows, readme=not args.no_readme)

    run_parts(args, digits=lambda: run_digits(args), fashion=fashion)


def run_digits(args: argparse.Namespace) -> None:
    """The digits tables: every class, the random, sub-class and corrective requests."""
    config = TrainConfig()
    data = digits()

    def factory():
        return default_model(data.input_shape, data.num_classes)

    epoch = epoch_seconds(data, factory, config)
    results: dict = {"config": config.to_dict(), "epoch_seconds": epoch,
                     "train_size": len(data.train), "torch": torch.__version__,
                     "machine": platform.platform(), "threads": torch.get_num_threads(),
                     "classes": [], "descriptions": {}, "shadows": args.shadows}
    for cls in args.classes:
        print(f"class {cls}", flush=True)
        results["classes"].append(run_scenario(full_class(data, cls), config, factory, epoch))
    results["class_summary"] = summarise_classes(results["classes"])
    others = {
        "random": random_samples(data, fraction=0.1, seed=0),
        "random100": random_samples(data, count=100, seed=1),
        "subclass": sub_class(data, 8, coarse_of={d: coarse_label(d) for d in range(10)},
                              coarse_names=COARSE_NAMES),
        "corrective": corrective(data, target=0, poison_fraction=0.1, identified_fraction=0.5),
    }
    for name, scenario in others.items():
        print(name, flush=True)
        shape, classes = scenario.data.input_shape, scenario.data.num_classes
        results[name] = run_scenario(scenario, config,
                                     lambda s=shape, c=classes: default_model(s, c), epoch,
                                     shadows=args.shadows if name.startswith("random") else None)
        results["descriptions"][name] = scenario.description
    publish("forget", markdown(results), results=results,
            readme=not args.no_readme and len(args.classes) == 10)


if __name__ == "__main__":
    main()
