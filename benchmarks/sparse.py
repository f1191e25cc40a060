"""Sparse-training benchmark: dense vs GraNet, RigL, SET, GMP, SNIP and one-shot magnitude
pruning at 80/90/95% sparsity on digits (CNN) and MNIST-1D (MLP), 3 seeds each; and on
Fashion-MNIST at 80/90/95/98% with the CNN of PyTorch's MNIST example (3 seeds; GraNet also
started dense, its paper's s_i = 0 runs), plus GraNet and RigL at 90% on the CIFAR-stem
ResNet-18 (1 seed).

Writes benchmarks/results/sparse.json (digits, MNIST-1D) and sparse-fashion.json with the
README tables between the ``sparse-benchmark`` and ``sparse-fashion-benchmark`` markers.
Nothing is selected on the test split (no checkpoint selection at all: the last epoch is
reported). Run: ``.venv/bin/python benchmarks/sparse.py [--part digits|fashion]`` (digits
about 4 minutes on 2 CPU cores, ``--timing-only`` re-measures only its timings;
Fashion-MNIST, which needs ``make data``, 69 minutes measured on one core beside other work, plus
about 8 for the longer dense / GraNet pair; ``--add-variants`` runs only the dense-start
GraNet row, about 8 minutes); ``--quick --json
PATH`` is a one-minute Fashion-MNIST run at toy sizes (tested; no README).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from neuroplastic.data import digits, load_data, loader, mnist1d
from neuroplastic.data.idx import is_installed
from neuroplastic.data.splits import DataSplit
from neuroplastic.evaluate.outputs import accuracy
from neuroplastic.io import write_json
from neuroplastic.models import MLP, build_architecture, default_model, seeded_model
from neuroplastic.sparse import GraNet
from neuroplastic.sparse.experiment import run_sparse
from neuroplastic.sparse.fit import SparseRecipe, adam
from neuroplastic.sparse.inference import CSRLinear, to_csr
from neuroplastic.sparse.latency import latencies
from readme_table import parse_with_parts, publish, republish, stored_results

ROOT = Path(__file__).resolve().parent
METHODS = ("granet", "rigl", "set", "gmp", "snip", "magnitude")
# another configuration of a method, as a row of the Fashion-MNIST CNN table: GraNet started
# dense, the GraNet paper's s_i = 0 runs (its default here starts from a random ERK network at
# density 0.5, the paper's s_i = 0.5 and its scripts' setting)
VARIANTS = {"granet, dense start": ("granet", {"initial_density": 1.0})}
SPARSITIES = (0.8, 0.9, 0.95)
EPOCHS = 30
FINETUNE_EPOCHS = 10


def datasets():
    return {"digits": digits(), "mnist1d": mnist1d()}


def one_run(data, method: str, sparsity: float, seed: int) -> dict[str, float]:
    def factory():
        return default_model(data.input_shape, data.num_classes)

    if method == "magnitude":  # prune the trained dense model, then fine-tune with fixed masks
        dense = run_sparse(data, SparseRecipe(method="dense", sparsity=0.0, epochs=EPOCHS,
                                              seed=seed), factory)
        recipe = SparseRecipe(method="magnitude", sparsity=sparsity, epochs=FINETUNE_EPOCHS,
                              seed=seed)
        run = run_sparse(data, recipe, factory, initial=dense.model)
    else:
        recipe = SparseRecipe(method=method, sparsity=sparsity, epochs=EPOCHS, seed=seed)
        run = run_sparse(data, recipe, factory)
    keep = ("test_acc", "val_acc", "actual_sparsity", "train_flops_ratio", "inference_flops_ratio")
    return {k: float(run.metrics[k]) for k in keep if k in run.metrics}


def step_overhead(data, sparsity: float = 0.9, epochs: int = 10) -> dict[str, float]:
    """Masked (GraNet) vs dense training step in one process, interleaved step by step (which
    of the two goes first alternates): the ratio of the median step times over steps without
    a mask update, and the ratio of total times over all steps (the once-per-epoch updates
    included). With the fused Adam the built-in ``fit`` uses, with torch's default per-tensor
    Adam, and with the masks as parametrizations (``masking="parametrize"``, fused Adam)."""
    batches = list(loader(data.train, batch_size=64, shuffle=True))

    def factory():
        return default_model(data.input_shape, data.num_classes)

    def fused(model):
        return adam(model.parameters(), lr=1e-3)

    def loop(model):
        return torch.optim.Adam(model.parameters(), lr=1e-3)

    result: dict[str, float] = {}
    for label, make_optimizer, masking in (("", fused, "in-place"), ("_loop_adam", loop, "in-place"),
                                           ("_parametrize", fused, "parametrize")):
        dense = seeded_model(factory, 0, "cpu").train()
        masked = seeded_model(factory, 0, "cpu").train()
        sparsifier = GraNet(masked, sparsity=sparsity, total_steps=10_000,
                            update_frequency=len(batches), masking=masking)
        optimizers = {dense: make_optimizer(dense), masked: make_optimizer(masked)}

        def timed_step(model, x, y, optimizers=optimizers, sparsifier=sparsifier,
                       masked=masked) -> float:
            start = time.perf_counter()
            optimizers[model].zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizers[model].step()
            if model is masked:
                sparsifier.step()
            return time.perf_counter() - start

        times: dict[str, list[float]] = {"dense": [], "masked": [], "dense_all": [],
                                         "masked_all": []}
        for epoch in range(epochs + 1):  # the first is a warm-up
            for i, (x, y) in enumerate(batches):
                if i % 2:
                    m, d = timed_step(masked, x, y), timed_step(dense, x, y)
                else:
                    d, m = timed_step(dense, x, y), timed_step(masked, x, y)
                if epoch == 0:
                    continue
                times["dense_all"].append(d)
                times["masked_all"].append(m)
                if sparsifier.log.update_steps[-1:] != [sparsifier.step_count]:
                    times["dense"].append(d)
                    times["masked"].append(m)
        dense_median, masked_median = (statistics.median(times[k]) for k in ("dense", "masked"))
        result.update({f"dense_step_seconds{label}": dense_median,
                       f"masked_step_seconds{label}": masked_median,
                       f"step_overhead{label}": masked_median / dense_median,
                       f"step_overhead_with_updates{label}":
                           sum(times["masked_all"]) / sum(times["dense_all"])})
    return result


def export_speed(seed: int = 0) -> dict[str, float]:
    """The issue's export target: a 95%-sparse MLP with hidden width 1024 (trained with GraNet
    on MNIST-1D for 5 epochs), batch 64: CSR export vs dense form."""
    data = mnist1d()

    def factory():
        return MLP(40, 10, hidden=(1024, 1024))

    run = run_sparse(data, SparseRecipe(method="granet", sparsity=0.95, epochs=5, seed=seed),
                     factory)
    model = run.model.eval()
    x = data.test.tensors[0][:64]
    exported = to_csr(model, example=data.val.tensors[0][:64])  # layers chosen on other data
    with torch.no_grad():
        diff = float((model(x) - exported(x)).abs().max())
    times = latencies({"dense": model, "csr": exported}, x, repeats=200)
    dense_t, sparse_t = times["dense"], times["csr"]
    return {"dense_seconds": dense_t, "csr_seconds": sparse_t, "speedup": dense_t / sparse_t,
            "max_abs_diff": diff, "test_acc": accuracy(model, loader(data.test)),
            "csr_layers": sum(isinstance(m, CSRLinear) for m in exported.modules()),
            "actual_sparsity": run.metrics["actual_sparsity"]}


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def method_rows(res: dict, sparsities: tuple[float, ...] | list[float]) -> list[str]:
    """The table of every method: test accuracy per sparsity, FLOPs and sparsity at 90%."""
    lines = ["| method | " + " | ".join(f"{s:.0%} test acc" for s in sparsities)
             + " | train FLOPs at 90% | inference FLOPs at 90% | actual sparsity at 90% |",
             "|---|" + "---|" * (len(sparsities) + 3)]
    for method in [*METHODS, *(v for v in VARIANTS if v in res)]:
        cells = [mean_std(res[method][str(s)]["test_acc"]) for s in sparsities]
        at90 = res[method]["0.9"]
        cells += [f"{statistics.fmean(at90['train_flops_ratio']):.3f}",
                  f"{statistics.fmean(at90['inference_flops_ratio']):.3f}",
                  f"{statistics.fmean(at90['actual_sparsity']):.4f}"]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict) -> str:
    lines = [f"{EPOCHS} epochs of Adam (lr 1e-3, batch 64), masks updated once per epoch, ERK "
             f"layer densities; magnitude = one-shot pruning of the trained dense model + "
             f"{FINETUNE_EPOCHS} epochs of fine-tuning. Test accuracy, mean ± std over seeds "
             f"{results['seeds']}; nothing selected on the test split.", ""]
    for name in results["datasets"]:
        res = results["datasets"][name]
        dense = mean_std(res["dense"]["test_acc"])
        lines += [f"**{name}** ({res['model']}; dense: {dense})", "",
                  *method_rows(res, SPARSITIES)]
        oh = res["overhead"]
        lines += ["", f"Masked training step (GraNet, 90%) vs dense, with the fused Adam of the "
                  f"built-in fit: {oh['step_overhead']:.2f}x without a mask update "
                  f"({oh['masked_step_seconds'] * 1e3:.2f} ms vs "
                  f"{oh['dense_step_seconds'] * 1e3:.2f} ms), "
                  f"{oh['step_overhead_with_updates']:.2f}x averaged with the once-per-epoch "
                  f"updates; with torch's default per-tensor Adam "
                  f"{oh['step_overhead_loop_adam']:.2f}x and "
                  f"{oh['step_overhead_with_updates_loop_adam']:.2f}x; with the masks as "
                  f"parametrizations {oh['step_overhead_parametrize']:.2f}x and "
                  f"{oh['step_overhead_with_updates_parametrize']:.2f}x.", ""]
    ex = results["export"]
    lines.append(f"Export: a 95%-sparse MLP 40-1024-1024-10 (GraNet, actual sparsity "
                 f"{ex['actual_sparsity']:.4f}) at batch 64 runs {ex['speedup']:.2f}x faster with "
                 f"{ex['csr_layers']} of its 3 layers as CSR (those measured faster so, on a "
                 f"validation batch) ({ex['csr_seconds'] * 1e3:.2f} ms vs {ex['dense_seconds'] * 1e3:.2f} ms "
                 f"dense); largest output difference {ex['max_abs_diff']:.1e}.")
    return "\n".join(lines)


@dataclass(frozen=True)
class FashionSparse:
    """The Fashion-MNIST configuration: stratified subset sizes (None: whole split), epochs,
    mask-update interval in steps, sparsities and seeds for the CNN, and the ResNet-18 runs."""

    train: int = 5000
    val: int | None = 1000
    test: int | None = None
    epochs: int = 5
    update_frequency: int = 40
    finetune_epochs: int = 2
    sparsities: tuple[float, ...] = (0.8, 0.9, 0.95, 0.98)
    seeds: tuple[int, ...] = (0, 1, 2)
    resnet_train: int = 2560
    resnet_epochs: int = 2
    resnet_update_frequency: int = 10
    resnet_sparsity: float = 0.9
    export_sparsity: float = 0.95  # the CNN whose export is timed (GraNet, first seed)
    resnet_export: bool = True
    long_epochs: int = 20  # dense and GraNet at 90% once more, this long (every seed)


FASHION = FashionSparse()
QUICK = FashionSparse(train=320, val=200, test=500, epochs=1, update_frequency=2, finetune_epochs=1,
                      sparsities=(0.9,), seeds=(0,), resnet_train=64, resnet_epochs=1,
                      resnet_update_frequency=1, export_sparsity=0.9, resnet_export=False,
                      long_epochs=2)


def epochs_text(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def fashion_cnn(plan: FashionSparse) -> dict:
    """Every method x sparsity x seed on the CNN, dense baselines, and the export of the
    95% GraNet CNN."""
    data = load_data("fashion-mnist").stratified_subset(train=plan.train, val=plan.val, test=plan.test)

    def factory():
        return build_architecture("cnn", data.input_shape, data.num_classes)

    def recipe(method: str, sparsity: float, seed: int, epochs: int = plan.epochs) -> SparseRecipe:
        return SparseRecipe(method=method, sparsity=sparsity, epochs=epochs, seed=seed,
                            update_frequency=plan.update_frequency)

    keep = ("test_acc", "val_acc", "actual_sparsity", "train_flops_ratio", "inference_flops_ratio",
            "mean_step_seconds")
    res: dict = {"train_size": len(data.train), "val_size": len(data.val), "test_size": len(data.test),
                 "dense": {"test_acc": [], "mean_step_seconds": []}}
    dense_models = {}
    for seed in plan.seeds:
        dense = run_sparse(data, recipe("dense", 0.0, seed), factory)
        dense_models[seed] = dense.model
        for k in res["dense"]:
            res["dense"][k].append(float(dense.metrics[k]))
    for method in METHODS:
        res[method] = {}
        for sparsity in plan.sparsities:
            rows = []
            for seed in plan.seeds:
                exporting = method == "granet" and sparsity == plan.export_sparsity and seed == plan.seeds[0]
                if method == "magnitude":
                    run = run_sparse(data, recipe("magnitude", sparsity, seed, plan.finetune_epochs),
                                     factory, initial=copy.deepcopy(dense_models[seed]), export=False)
                else:
                    run = run_sparse(data, recipe(method, sparsity, seed), factory, export=exporting)
                if exporting:
                    res["export"] = {k: run.metrics[k] for k in ("export_speedup", "export_form",
                                                                 "export_max_abs_diff")}
                rows.append({k: float(run.metrics[k]) for k in keep if k in run.metrics})
            res[method][str(sparsity)] = {k: [r[k] for r in rows] for k in rows[0]}
            print("fashion-mnist cnn", method, sparsity,
                  mean_std(res[method][str(sparsity)]["test_acc"]), flush=True)
    res.update(fashion_variants(plan, data))
    return res


def fashion_variants(plan: FashionSparse, data: DataSplit | None = None) -> dict:
    """Every :data:`VARIANTS` row on the CNN: each sparsity and seed, as the methods' rows."""
    if data is None:
        data = load_data("fashion-mnist").stratified_subset(train=plan.train, val=plan.val, test=plan.test)
    keep = ("test_acc", "val_acc", "actual_sparsity", "train_flops_ratio", "inference_flops_ratio",
            "mean_step_seconds")
    out: dict = {}
    for label, (method, kwargs) in VARIANTS.items():
        out[label] = {}
        for sparsity in plan.sparsities:
            rows = []
            for seed in plan.seeds:
                recipe = SparseRecipe(method=method, sparsity=sparsity, epochs=plan.epochs, seed=seed,
                                      update_frequency=plan.update_frequency, method_kwargs=dict(kwargs))
                run = run_sparse(data, recipe, lambda: build_architecture("cnn", data.input_shape,
                                                                          data.num_classes), export=False)
                rows.append({k: float(run.metrics[k]) for k in keep if k in run.metrics})
            out[label][str(sparsity)] = {k: [r[k] for r in rows] for k in rows[0]}
            print("fashion-mnist cnn", label, sparsity, mean_std(out[label][str(sparsity)]["test_acc"]),
                  flush=True)
    return out


def fashion_long(plan: FashionSparse) -> dict:
    """Dense and GraNet at 90% on the CNN trained ``plan.long_epochs`` epochs (every seed):
    does GraNet's gap to dense close with a longer schedule?"""
    data = load_data("fashion-mnist").stratified_subset(train=plan.train, val=plan.val, test=plan.test)

    def factory():
        return build_architecture("cnn", data.input_shape, data.num_classes)

    out: dict = {"epochs": plan.long_epochs, "seeds": list(plan.seeds), "dense": [], "granet": []}
    for seed in plan.seeds:
        for method, sparsity in (("dense", 0.0), ("granet", 0.9)):
            recipe = SparseRecipe(method=method, sparsity=sparsity, epochs=plan.long_epochs, seed=seed,
                                  update_frequency=plan.update_frequency)
            out[method].append(float(run_sparse(data, recipe, factory, export=False).metrics["test_acc"]))
            print("fashion-mnist cnn long", method, seed, f"{out[method][-1]:.3f}", flush=True)
    return out


def fashion_resnet(plan: FashionSparse) -> dict:
    """Dense, GraNet and RigL at ``plan.resnet_sparsity`` on ResNet-18 (one seed), and the
    export of the GraNet model."""
    data = load_data("fashion-mnist").stratified_subset(train=plan.resnet_train, val=plan.val,
                                                          test=plan.test)

    def factory():
        return build_architecture("resnet18", data.input_shape, data.num_classes)

    res: dict = {"train_size": len(data.train), "parameters": sum(p.numel() for p in factory().parameters())}
    for method in ("dense", "granet", "rigl"):
        recipe = SparseRecipe(method=method, sparsity=0.0 if method == "dense" else plan.resnet_sparsity,
                              epochs=plan.resnet_epochs, update_frequency=plan.resnet_update_frequency)
        start = time.perf_counter()
        run = run_sparse(data, recipe, factory, export=method == "granet" and plan.resnet_export)
        res[method] = {k: run.metrics[k] for k in ("test_acc", "actual_sparsity", "train_flops_ratio",
                                                    "inference_flops_ratio", "mean_step_seconds",
                                                    "export_speedup", "export_form") if k in run.metrics}
        res[method]["seconds"] = time.perf_counter() - start
        if method == "granet":
            res[method]["export_layers"] = run.layout
        print("fashion-mnist resnet18", method, f"{run.metrics['test_acc']:.3f}", flush=True)
    return res


def below(points: float, *, digits: int = 2) -> str:
    """``1.23 points below`` / ``0.40 points above`` for a gap in points (dense minus method)."""
    return f"{abs(points):.{digits}f} points {'below' if points >= 0 else 'above'}"


def fashion_markdown(results: dict) -> str:
    """The README tables of the Fashion-MNIST part, and the issue's targets in words."""
    plan, cnn, resnet = results["plan"], results["cnn"], results["resnet18"]
    sparsities = plan["sparsities"]
    subset = (f"Stratified subsets (seed 0): {cnn['train_size']:,} training, {cnn['val_size']:,} "
              f"validation, {cnn['test_size']:,} test images")
    dense = mean_std(cnn["dense"]["test_acc"])
    lines = [f"**Fashion-MNIST, CNN of PyTorch's MNIST example** (1.2M parameters; dense: {dense}). "
             f"{subset}; {epochs_text(plan['epochs'])} of Adam (lr 1e-3, batch 64), masks updated every "
             f"{plan['update_frequency']} steps, ERK layer densities; magnitude = one-shot pruning of "
             f"the trained dense model + {epochs_text(plan['finetune_epochs'])} of fine-tuning. "
             "Test accuracy, "
             f"mean ± std over seeds {plan['seeds']}. Wall time {results['cnn_seconds'] / 60:.0f} min on "
             "one core of a 2-core machine"
             + (f" (the dense-start GraNet row, run later on its own: "
                f"{results['variants_seconds'] / 60:.0f} min)" if "variants_seconds" in results else "")
             + ".", "",
             *method_rows(cnn, sparsities)]
    lines += ["", f"**Fashion-MNIST, ResNet-18 (CIFAR stem)** ({resnet['parameters']:,} parameters), "
              f"one seed, a stratified {resnet['train_size']:,}-image training subset, "
              f"{epochs_text(plan['resnet_epochs'])}, masks updated every {plan['resnet_update_frequency']} "
              f"steps; wall time {results['resnet_seconds'] / 60:.0f} min on one core.", "",
              "| method | test acc | actual sparsity | train FLOPs | inference FLOPs | seconds |",
              "|---|---|---|---|---|---|"]
    for method in ("dense", "granet", "rigl"):
        r = resnet[method]
        ratios = ("actual_sparsity", "train_flops_ratio", "inference_flops_ratio")
        cells = [f"{r['test_acc']:.3f}"] + [f"{r[k]:.4f}" if k in r else "—" for k in ratios]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |")
    long = results.get("long")
    long_gap = None
    if long:
        long_gap = (statistics.fmean(long["dense"]) - statistics.fmean(long["granet"])) * 100
        seeds = ", ".join(map(str, long["seeds"]))
        lines += ["", f"The CNN trained {long['epochs']} epochs instead (seeds {seeds}, the same subsets): "
                  f"dense {mean_std(long['dense'])}, GraNet at 90% {mean_std(long['granet'])} "
                  f"({below(long_gap)} dense)."]
    export, rg = cnn.get("export", {}), resnet["granet"]
    gap = statistics.fmean(cnn["dense"]["test_acc"]) - statistics.fmean(cnn["granet"]["0.9"]["test_acc"])
    rigl_vs_set = [(s, statistics.fmean(cnn["rigl"][str(s)]["test_acc"])
                    - statistics.fmean(cnn["set"][str(s)]["test_acc"])) for s in sparsities]
    rows = [*METHODS, *(v for v in VARIANTS if v in cnn)]
    worst_sparsity = min(min(cnn[m][str(s)]["actual_sparsity"]) - s for m in rows for s in sparsities)
    target = (f"- GraNet at 90% is {below(gap * 100)} dense on the CNN "
              f"({'met' if gap <= 0.005 else 'missed'}: target within 0.5 points)")
    started = cnn.get("granet, dense start")
    if started:
        dense_gap = statistics.fmean(cnn["dense"]["test_acc"]) - statistics.fmean(started["0.9"]["test_acc"])
        target += (f"; started dense (`initial_density=1`, the GraNet paper's s_i = 0 runs) it is "
                   f"{below(dense_gap * 100, digits=3)} ({'met' if dense_gap <= 0.005 else 'missed'}), at "
                   f"{statistics.fmean(started['0.9']['train_flops_ratio']):.3f} of dense training's "
                   f"FLOPs against {statistics.fmean(cnn['granet']['0.9']['train_flops_ratio']):.3f}")
    if long_gap is not None:
        target += (f"; trained {long['epochs']} epochs it is {below(long_gap)} dense "
                   f"({'met' if long_gap <= 0.5 else 'missed'})")
    lines += ["", "Targets:", "", target + ".",
              "- RigL minus SET, test accuracy by sparsity: "
              + ", ".join(f"{s:.0%} {d * 100:+.2f} points" for s, d in rigl_vs_set)
              + (" (RigL >= SET at every sparsity)." if all(d >= 0 for _, d in rigl_vs_set)
                 else " (RigL is NOT >= SET everywhere)."),
              f"- Actual sparsity minus target, lowest over every run: {worst_sparsity:+.4f}.",
              f"- Export of the {plan['export_sparsity']:.0%} GraNet CNN (fastest form on a "
              "validation batch: "
              f"{export.get('export_form', '—')}): {export.get('export_speedup', float('nan')):.2f}x at "
              f"batch 64, largest output difference {export.get('export_max_abs_diff', float('nan')):.1e}. "
              f"ResNet-18 GraNet at {plan['resnet_sparsity']:.0%}: fastest form "
              f"{rg.get('export_form', '—')}, "
              f"{rg.get('export_speedup', float('nan')):.2f}x."]
    return "\n".join(lines)


def run_fashion(plan: FashionSparse, *, json_path: Path | None) -> None:
    """The Fashion-MNIST part, written to ``json_path`` (or published to the README)."""
    start = time.perf_counter()
    results: dict = {"plan": asdict(plan), "torch": torch.__version__, "machine": platform.platform(),
                     "threads": torch.get_num_threads(), "cnn": fashion_cnn(plan)}
    results["cnn_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    results["resnet18"] = fashion_resnet(plan)
    results["resnet_seconds"] = time.perf_counter() - start
    results["long"] = fashion_long(plan)
    publish("sparse-fashion", fashion_markdown(results), results=results, json_path=json_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--from-json", action="store_true")
    parser.add_argument("--timing-only", action="store_true",
                        help="re-measure only the step overhead and the export speed-up; keep "
                             "the accuracy results")
    parser.add_argument("--add-variants", action="store_true",
                        help="only run the CNN rows of VARIANTS and add them to the stored "
                             "Fashion-MNIST results")
    parser.add_argument("--add-long", action="store_true",
                        help="only run the longer dense / GraNet pair and add it to the stored "
                             "Fashion-MNIST results")
    args = parse_with_parts(parser)
    if args.add_long or args.add_variants:
        torch.set_num_threads(args.threads)
        stored = stored_results("sparse-fashion")
        plan = FashionSparse(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored["plan"].items()})
        if args.add_long:
            stored["long"] = fashion_long(plan)
        else:
            start = time.perf_counter()
            stored["cnn"].update(fashion_variants(plan))
            stored["variants_seconds"] = time.perf_counter() - start
        publish("sparse-fashion", fashion_markdown(stored), results=stored)
        return
    path = ROOT / "results" / "sparse.json"
    if args.quick or args.part == "fashion":
        torch.set_num_threads(args.threads)
        run_fashion(QUICK if args.quick else FASHION, json_path=args.json)
        return
    if args.from_json:
        republish("sparse-fashion", fashion_markdown)
        results = stored_results("sparse")
    elif args.timing_only:
        torch.set_num_threads(args.threads)
        results = stored_results("sparse")
        for name, data in datasets().items():
            results["datasets"][name]["overhead"] = step_overhead(data)
        results["export"] = export_speed()
        write_json(path, results)
    else:
        torch.set_num_threads(args.threads)
        seeds = list(range(args.seeds))
        results = {"seeds": seeds, "torch": torch.__version__, "machine": platform.platform(),
                   "datasets": {}}
        for name, data in datasets().items():
            res: dict = {"model": type(default_model(data.input_shape, data.num_classes)).__name__,
                         "dense": {"test_acc": []}}
            for seed in seeds:
                dense = run_sparse(data, SparseRecipe(method="dense", sparsity=0.0, epochs=EPOCHS,
                                                      seed=seed),
                                   lambda d=data: default_model(d.input_shape, d.num_classes))
                res["dense"]["test_acc"].append(dense.metrics["test_acc"])
            for method in METHODS:
                res[method] = {}
                for sparsity in SPARSITIES:
                    rows = [one_run(data, method, sparsity, seed) for seed in seeds]
                    res[method][str(sparsity)] = {k: [r[k] for r in rows] for k in rows[0]}
                    print(name, method, sparsity, mean_std(res[method][str(sparsity)]["test_acc"]),
                          flush=True)
            results["datasets"][name] = res
        for name, data in datasets().items():
            results["datasets"][name]["overhead"] = step_overhead(data)
        results["export"] = export_speed()
        write_json(path, results)
    publish("sparse", markdown(results))
    if args.part == "all" and not (args.from_json or args.timing_only):
        if is_installed("fashion-mnist"):
            run_fashion(FASHION, json_path=args.json)
        else:
            print("Fashion-MNIST part skipped: the files are not installed (make data)", flush=True)


if __name__ == "__main__":
    main()
