"""Sparse-training benchmark: dense vs GraNet, RigL, SET, GMP, SNIP and one-shot magnitude
pruning at 80/90/95% sparsity on digits (CNN) and MNIST-1D (MLP), 3 seeds each.

Writes benchmarks/results/sparse.json and the README table between the
``sparse-benchmark`` markers. Nothing is selected on the test split (no
checkpoint selection at all: the last epoch is reported). Run:
``.venv/bin/python benchmarks/sparse.py`` (about 4 minutes on 2 CPU cores; ``--timing-only``
re-measures only the timings).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from neuroplastic.data import digits, loader, mnist1d
from neuroplastic.evaluate.outputs import accuracy
from neuroplastic.io import write_json
from neuroplastic.models import MLP, default_model, seeded_model
from neuroplastic.sparse import GraNet
from neuroplastic.sparse.experiment import run_sparse
from neuroplastic.sparse.fit import SparseRecipe, adam
from neuroplastic.sparse.inference import CSRLinear, to_csr
from neuroplastic.sparse.latency import latencies
from readme_table import publish, stored_results

ROOT = Path(__file__).resolve().parent
METHODS = ("granet", "rigl", "set", "gmp", "snip", "magnitude")
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


def markdown(results: dict) -> str:
    lines = [f"{EPOCHS} epochs of Adam (lr 1e-3, batch 64), masks updated once per epoch, ERK "
             f"layer densities; magnitude = one-shot pruning of the trained dense model + "
             f"{FINETUNE_EPOCHS} epochs of fine-tuning. Test accuracy, mean ± std over seeds "
             f"{results['seeds']}; nothing selected on the test split.", ""]
    for name in results["datasets"]:
        res = results["datasets"][name]
        dense = mean_std(res["dense"]["test_acc"])
        lines += [f"**{name}** ({res['model']}; dense: {dense})", "",
                  "| method | " + " | ".join(f"{s:.0%} test acc" for s in SPARSITIES)
                  + " | train FLOPs at 90% | inference FLOPs at 90% | actual sparsity at 90% |",
                  "|---|" + "---|" * (len(SPARSITIES) + 3)]
        for method in METHODS:
            cells = [mean_std(res[method][str(s)]["test_acc"]) for s in SPARSITIES]
            at90 = res[method]["0.9"]
            cells += [f"{statistics.fmean(at90['train_flops_ratio']):.3f}",
                      f"{statistics.fmean(at90['inference_flops_ratio']):.3f}",
                      f"{statistics.fmean(at90['actual_sparsity']):.4f}"]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--from-json", action="store_true")
    parser.add_argument("--timing-only", action="store_true",
                        help="re-measure only the step overhead and the export speed-up; keep "
                             "the accuracy results")
    args = parser.parse_args()
    path = ROOT / "results" / "sparse.json"
    if args.from_json:
        results = stored_results("sparse")
    elif args.timing_only:
        torch.set_num_threads(2)
        results = stored_results("sparse")
        for name, data in datasets().items():
            results["datasets"][name]["overhead"] = step_overhead(data)
        results["export"] = export_speed()
        write_json(path, results)
    else:
        torch.set_num_threads(2)
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


if __name__ == "__main__":
    main()
