"""Cost at size: how every method's cost grows with the model.

A ladder of models, each trained and measured on fixed-seed synthetic data of the model's
input shape: ``TRAIN`` samples (10 classes; each class a fixed random pattern plus unit
Gaussian noise, so one or two epochs fit it and a forget request meets a trained model),
batch 64, Adam 1e-3. Every figure is a ratio of two times measured in this one run
(median of ``--repeats``): forget requests in epochs of the same model on the same data,
steps over a plain step, adaptation over a forward pass, generation with an intervention
over plain generation. Peak extra memory of the importance pass over the parameter bytes
is counted in tensor bytes from torch's profiler (exact; the target's figure) and as the
rise of the process's resident set (sampled every millisecond; noisy). ``--sections
memory`` measures only that.

The ladder: MLP 784-800-800-10, the small CNN (``MnistCNN``) on 1x28x28, ResNet-18 (CIFAR
stem) on 1x28x28 and on 3x32x32; learn rules on their own MLPs (dis-inhibitory control on
the paper's Fashion-MNIST networks 784-256-10 and 784-256-256-256-10, batch 100; SoftHebb
784-2000 at its batch 10; biprop on a 784-256-10 sigmoid MLP); the skill guards on a
Llama-style causal LM of about 100M parameters built from a ``LlamaConfig`` (random
weights, the demo's character tokenizer).

Writes benchmarks/results/cost.json, cost.md and cost.png (ratio against parameter count)
and the README table between the ``cost-benchmark`` markers.
Run: ``.venv/bin/python benchmarks/cost.py`` (about an hour on 2 cores); ``--quick`` runs
the two smallest models with fewer repeats and writes only to ``--json``.
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

import neuroplastic as npl
from neuroplastic import loop
from neuroplastic.data.splits import DataSplit, loader
from neuroplastic.data.streams import Experience, Stream
from neuroplastic.errors import NeuroplasticError
from neuroplastic.importance.cache import ImportanceCache
from neuroplastic.models import build_architecture
from neuroplastic.models.reference import MLP
from readme_table import RESULTS, publish, stored_results

TRAIN = 2048
BATCH = 64
CLASSES = 10
SIGNAL = 0.3  # pattern scale against unit noise: a margin a forget request can remove
LADDER: dict[str, tuple[str, tuple[int, ...]]] = {
    "MLP 784-800-800": ("mlp", (1, 28, 28)),
    "CNN 28x28": ("cnn", (1, 28, 28)),
    "ResNet-18 1x28x28": ("resnet18", (1, 28, 28)),
    "ResNet-18 3x32x32": ("resnet18", (3, 32, 32)),
}
MODEL_SECTIONS = ("forget", "fisher", "memory", "sparse", "continual", "adapt")  # forget includes both
TARGETS = {  # issue 21's targets, at the ResNet-18 size unless named
    "ssd cold": ("<=", 1.5), "ssd cached speed-up": (">=", 5.0),
    "ssd-auto cold": ("<=", 2.5), "ssd-auto cached speed-up": (">=", 3.0),
    "importance extra tensor memory": ("<=", 2.0), "per-sample Fisher speed-up": (">=", 5.0),
    "masked step (GraNet schedule)": ("<=", 1.10),
    "ewc step": ("<=", 1.3), "online-ewc step": ("<=", 1.3), "si step": ("<=", 1.3),
    "classp step": ("<=", 1.3), "gpm step": ("<=", 1.5), "hlop step": ("<=", 1.5),
    "ewc end of task": ("<=", 1.0), "online-ewc end of task": ("<=", 1.0), "si end of task": ("<=", 1.0),
    "gpm end of task": ("<=", 1.0), "hlop end of task": ("<=", 1.0),
    "tent per batch": ("<=", 3.0), "nhl per batch": ("<=", 3.0),
    "disinhibitory step (784-256-10)": ("<=", 2.0), "disinhibitory step (784-256-256-256-10)": ("<=", 2.0),
    "calibrated guard generation overhead": ("<=", 1.05),
}


# ----- measuring -----
def median_seconds(fn: Callable[[], Any], *, repeats: int,
                   setup: Callable[[], Any] | None = None) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls (``setup()`` before each, untimed)."""
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@contextmanager
def peak_rss() -> Iterator[dict[str, int]]:
    """The rise of the resident set over its value at entry, sampled every millisecond."""
    found = {"peak": 0}
    base = resident_bytes()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            found["peak"] = max(found["peak"], resident_bytes() - base)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield found
    finally:
        stop.set()
        sampler.join()
        found["peak"] = max(found["peak"], resident_bytes() - base)


def parameter_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


# ----- data and models -----
def synthetic(shape: tuple[int, ...], count: int, *, seed: int) -> TensorDataset:
    """``count`` samples of 10 classes: a fixed random pattern per class plus unit noise."""
    patterns = torch.randn(CLASSES, *shape, generator=torch.Generator().manual_seed(1234))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (count,), generator=g)
    x = SIGNAL * patterns[y] + torch.randn(count, *shape, generator=g)
    return TensorDataset(x, y)


def build(arch: str, shape: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    if arch == "mlp":
        return MLP(math.prod(shape), CLASSES, hidden=(800, 800))
    return build_architecture(arch, shape, CLASSES)


def adam(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=1e-3)


def train_epochs(model: nn.Module, data: TensorDataset, *, epochs: int, first_seed: int = 0) -> list[float]:
    """Train ``epochs`` epochs (a fresh Adam each call); the seconds of each."""
    optimizer = adam(model)
    seconds = []
    for epoch in range(first_seed, first_seed + epochs):
        start = time.perf_counter()
        loop.fit(model, loader(data, batch_size=BATCH, shuffle=True, seed=epoch), optimizer=optimizer,
                 epochs=1)
        seconds.append(time.perf_counter() - start)
    return seconds


def step_seconds(model: nn.Module, data: TensorDataset, *, steps: int, plugins: list[Any] | None = None,
                 optimizer: torch.optim.Optimizer | None = None, task: Any = 0,
                 loss_fn: Any = None) -> list[float]:
    """Wall time of every step of ``loop.fit`` over the first ``steps`` batches."""
    batches = list(loader(data, batch_size=BATCH, shuffle=True, seed=0))[:steps]
    result = loop.fit(model, batches, optimizer=optimizer or adam(model), epochs=1, plugins=plugins or [],
                      task=task, loss_fn=loss_fn, time_steps=True)
    return result.step_seconds


def peak_tensor_bytes(fn: Callable[[], Any]) -> int:
    """The peak rise of the bytes held by CPU tensors while ``fn()`` runs: torch's profiler
    records every allocation and free (``profile_memory``), each as its op's own memory,
    and their running sum in time order peaks here. The CPU counterpart of
    ``torch.cuda.max_memory_allocated``: exact and repeatable, where the resident set also
    moves with the allocator's caching and page reuse."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage),
                    key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


# ----- sections -----
def importance_memory(arch: str, shape: tuple[int, ...]) -> dict[str, float]:
    """In fresh processes (so no memory freed earlier is reused unseen), median of three:
    the resident set's peak rise during the importance pass over the full data, and during a plain training
    epoch's forward and backward passes, over the parameter bytes; their difference is what
    the importance pass needs beyond what training the model already needs. The same two
    peaks in tensor bytes (:func:`peak_tensor_bytes`, exact) give the figure the target is
    judged on ("importance extra tensor memory")."""
    import multiprocessing

    threads = torch.get_num_threads()
    peaks = {}
    for kind in ("importance", "training"):  # each in its own process, median of 3 (RSS is noisy)
        runs = []
        for _ in range(3):
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                runs.append(pool.apply(_peak_memory, (arch, shape, threads, kind, TRAIN)))
        peaks[kind] = statistics.median(runs)
    model = build(arch, shape)  # tensor bytes are exact: measured once, in this process
    full = loader(synthetic(shape, TRAIN, seed=0), batch_size=BATCH)
    tensors = {kind: peak_tensor_bytes(lambda kind=kind: _importance_or_training(model, full, kind))
               / parameter_bytes(model) for kind in ("importance", "training")}
    print(f"    importance pass peak memory {peaks['importance']:.2f}x the parameters (training "
          f"{peaks['training']:.2f}x); tensors alone {tensors['importance']:.2f}x (training "
          f"{tensors['training']:.2f}x)", flush=True)
    return {"importance peak memory": peaks["importance"], "training peak memory": peaks["training"],
            "importance extra memory": peaks["importance"] - peaks["training"],
            "importance peak tensor memory": tensors["importance"],
            "training peak tensor memory": tensors["training"],
            "importance extra tensor memory": tensors["importance"] - tensors["training"]}


def _importance_or_training(model: nn.Module, full: Any, kind: str) -> None:
    """The importance pass over ``full``, or a plain training epoch's forward and backward."""
    if kind == "importance":
        npl.importance.Fisher(mode="batch_sq").estimate(model, full)
    else:
        for x, y in full:
            nn.functional.cross_entropy(model(x), y).backward()
        model.zero_grad(set_to_none=True)


def _peak_memory(arch: str, shape: tuple[int, ...], threads: int, kind: str, train: int) -> float:
    torch.set_num_threads(threads)
    model = build(arch, shape)
    full = loader(synthetic(shape, train, seed=0), batch_size=BATCH)
    x, y = next(iter(full))
    nn.functional.cross_entropy(model(x[:2]), y[:2]).backward()  # kernels and autograd loaded
    model.zero_grad(set_to_none=True)
    with peak_rss() as peak:
        _importance_or_training(model, full, kind)
    return peak["peak"] / parameter_bytes(model)


def forget_costs(model: nn.Module, arch: str, shape: tuple[int, ...], data: TensorDataset,
                 holdout: TensorDataset, epoch: float, *, repeats: int) -> dict[str, float]:
    """ssd / lfssd / ssd-auto cold and cached (epochs), per-sample Fisher against a loop of
    batch size 1, and the importance pass's peak extra memory."""
    x, y = data.tensors
    forget_rows = y == 0
    forget = loader(TensorDataset(x[forget_rows], y[forget_rows]), batch_size=BATCH)
    retain = loader(TensorDataset(x[~forget_rows], y[~forget_rows]), batch_size=BATCH)
    full = loader(data, batch_size=BATCH)
    held = loader(holdout, batch_size=BATCH)
    row: dict[str, float] = {}
    for name in ("ssd", "lfssd", "ssd-auto"):
        def request(cache: ImportanceCache, name: str = name) -> None:
            method = npl.create(name, kind="forget")
            method.cache = cache
            method.unlearn(copy.deepcopy(model), forget, retain, full=full, holdout=held)

        cold = median_seconds(lambda request=request: request(ImportanceCache()), repeats=repeats)
        warm = ImportanceCache()
        request(warm)
        cached = median_seconds(lambda request=request, warm=warm: request(warm), repeats=repeats)
        row[f"{name} cold"] = cold / epoch
        row[f"{name} cached"] = cached / epoch
        row[f"{name} cached speed-up"] = cold / cached
        row[f"{name} cached seconds"] = cached
        print(f"    {name}: cold {cold / epoch:.2f} epochs, cached {cached / epoch:.2f} "
              f"({cold / cached:.1f}x)", flush=True)
    row.update(fisher_costs(model, data, repeats=repeats))
    row.update(importance_memory(arch, shape))
    return row


def fisher_costs(model: nn.Module, data: TensorDataset, *, repeats: int) -> dict[str, float]:
    """Per-sample Fisher on 32 samples in one batch against a loop of batch size 1."""
    x, y = data.tensors
    row: dict[str, float] = {}
    sample = TensorDataset(x[:32], y[:32])
    per_sample = npl.importance.Fisher(mode="per_sample")
    loop_one = npl.importance.Fisher(mode="batch_sq")
    found: dict[str, Any] = {}

    def estimate(key: str, estimator: Any, batch_size: int) -> None:
        found[key] = estimator.estimate(model, loader(sample, batch_size=batch_size))

    fast = median_seconds(lambda: estimate("fast", per_sample, 32), repeats=repeats)
    slow = median_seconds(lambda: estimate("slow", loop_one, 1), repeats=repeats)
    worst = max(float((found["fast"][k] - found["slow"][k]).abs().max()
                      / found["slow"][k].abs().max().clamp_min(1e-30)) for k in found["slow"])
    row["per-sample Fisher speed-up"] = slow / fast
    row["per-sample Fisher max relative difference"] = worst
    print(f"    per-sample Fisher {slow / fast:.1f}x the batch-size-1 loop (max rel. diff {worst:.1e})",
          flush=True)
    return row


def sparse_costs(model: nn.Module, data: TensorDataset, *, repeats: int) -> dict[str, float]:
    """Dense step against GraNet's masked step without and with a mask update, the update
    itself, the average over GraNet's schedule (an update every 100 steps) and the export's
    inference speed-up."""
    steps, frequency = 15, 5  # updates at steps 5 and 10 (the end of the pruning window)
    dense = statistics.median(step_seconds(copy.deepcopy(model), data, steps=steps)[1:])
    sparse_model = copy.deepcopy(model)
    granet = npl.sparse.GraNet(sparse_model, sparsity=0.9, total_steps=steps, update_frequency=frequency,
                               prune_window=(0.0, 0.67))
    times = step_seconds(sparse_model, data, steps=steps, plugins=[granet])
    updates = set(granet.log.update_steps)
    # the step before an update keeps the dense gradient, the step after syncs the optimizer's
    # state with the new masks: both belong to the update's cost
    touched = {s + d for s in updates for d in (-1, 0, 1)}
    plain = statistics.median(t for i, t in enumerate(times, start=1) if i not in touched and i > 1)
    update = statistics.median(sum(times[s + d - 1] for d in (-1, 0, 1)) - 3 * plain for s in updates)
    default_frequency = 100  # GraNet's
    row = {"masked step": plain / dense, "mask update": update / dense,
           "masked step (GraNet schedule)": (plain + update / default_frequency) / dense}
    exported = granet.export()
    example = data.tensors[0][:BATCH]
    fast, form = npl.sparse.fastest_export(exported, example)
    with torch.no_grad():
        base = median_seconds(lambda: exported.eval()(example), repeats=max(5, repeats))
        sped = median_seconds(lambda: fast.eval()(example), repeats=max(5, repeats))
    row["export speed-up"] = base / sped
    print(f"    masked step {row['masked step']:.2f}x dense, mask update {row['mask update']:.2f} "
          "dense steps, "
          f"GraNet schedule {row['masked step (GraNet schedule)']:.3f}x; export ({form}) {base / sped:.2f}x",
          flush=True)
    return row


CONTINUAL = (("ewc", {}), ("online-ewc", {"mode": "online"}), ("si", {}), ("classp", {}), ("gpm", {}),
             ("hlop", {}), ("clnp", {}))


def continual_costs(model: nn.Module, data: TensorDataset, epoch: float, *, steps: int) -> dict[str, float]:
    """A step on the second task with each method over a plain step, and the end-of-task
    work after the first task in epochs."""
    x, y = data.tensors
    half = len(x) // 2
    permutation = torch.randperm(x[0].numel(), generator=torch.Generator().manual_seed(5))
    second = x[half:].flatten(1)[:, permutation].reshape(x[half:].shape)
    tasks = [TensorDataset(x[:half], y[:half]), TensorDataset(second, y[half:])]
    experiences = [Experience(i, t, t, t, tuple(range(CLASSES))) for i, t in enumerate(tasks)]
    stream = Stream("synthetic", "domain", experiences, CLASSES)
    plain = statistics.median(step_seconds(copy.deepcopy(model), tasks[1], steps=steps)[1:])
    row: dict[str, float] = {}
    for label, params in CONTINUAL:
        try:
            step, end = continual_method(copy.deepcopy(model), stream, label, params, steps=steps)
        except NeuroplasticError as err:
            print(f"    {label}: n/a ({err})", flush=True)
            continue
        row[f"{label} step"] = step / plain
        row[f"{label} end of task"] = end / epoch
        print(f"    {label}: step {step / plain:.2f}x plain, end of task {end / epoch:.3f} epochs",
              flush=True)
    return row


def continual_method(model: nn.Module, stream: Stream, label: str, params: dict[str, Any], *,
                     steps: int) -> tuple[float, float]:
    """(median step seconds on the second task, seconds of the end of the first task)."""
    method = npl.create(label.removeprefix("online-"), kind="continual", **params)
    method.set_learning_rate(1e-3)
    ends: list[float] = []
    original_end = method.after_task

    def timed_end(m: nn.Module, e: Experience) -> None:
        start = time.perf_counter()
        original_end(m, e)
        ends.append(time.perf_counter() - start)

    method.after_task = timed_end  # type: ignore[method-assign]
    try:
        step_seconds(model, stream[0].train, steps=steps, plugins=[method], task=stream[0],
                     loss_fn=stream.loss_fn())
        times = step_seconds(model, stream[1].train, steps=steps, plugins=[method], task=stream[1],
                             loss_fn=stream.loss_fn())
    finally:
        method.cleanup(model)
    return statistics.median(times[1:]), ends[0]


def adapt_costs(model: nn.Module, data: TensorDataset, *, repeats: int) -> dict[str, float]:
    """Norm, TENT and NHL per test batch over an eval-mode forward pass."""
    batch = data.tensors[0][:BATCH]
    model.eval()
    with torch.no_grad():
        forward = median_seconds(lambda: model(batch), repeats=max(5, repeats))
    row: dict[str, float] = {}
    for name in ("norm", "tent", "nhl"):
        adapter = npl.create(name, kind="adapt")
        target = copy.deepcopy(model)
        try:
            adapter.adapt(target, batch)
        except NeuroplasticError as err:
            print(f"    {name}: n/a ({err})", flush=True)
            continue
        row[f"{name} per batch"] = median_seconds(lambda a=adapter, t=target: a.adapt(t, batch),
                                                  repeats=max(5, repeats)) / forward
        adapter.reset()
    print("    " + ", ".join(f"{k} {v:.2f}x" for k, v in row.items()) + " a forward pass", flush=True)
    return row


def rung(label: str, arch: str, shape: tuple[int, ...], *, repeats: int, quick: bool,
         sections: set[str]) -> dict[str, Any]:
    print(f"{label}:", flush=True)
    torch.manual_seed(0)
    data, holdout = synthetic(shape, TRAIN, seed=0), synthetic(shape, TRAIN // 4, seed=1)
    model = build(arch, shape)
    epochs: list[float] = []
    accuracy = 0.0
    fit = 0.0
    while fit < 0.99 and len(epochs) < (3 if quick else 8):  # until it fits its training data
        epochs += train_epochs(model, data, epochs=1, first_seed=len(epochs))
        fit = npl.evaluate.collect(model, loader(data, batch_size=256)).accuracy
    accuracy = npl.evaluate.collect(model, loader(holdout, batch_size=256)).accuracy
    epoch = statistics.median(epochs[1:] or epochs)
    print(f"  epoch {epoch:.2f} s ({TRAIN} samples); after {len(epochs)} epochs training accuracy {fit:.3f}, "
          f"holdout {accuracy:.3f}", flush=True)
    row: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters()), "epoch seconds": epoch,
                           "accuracy": accuracy, "training accuracy": fit, "training epochs": len(epochs)}
    if "forget" in sections:
        print("  forget", flush=True)
        row.update(forget_costs(model, arch, shape, data, holdout, epoch, repeats=repeats))
    else:
        if "fisher" in sections:
            print("  per-sample Fisher", flush=True)
            row.update(fisher_costs(model, data, repeats=repeats))
        if "memory" in sections:
            print("  importance memory", flush=True)
            row.update(importance_memory(arch, shape))
    if "sparse" in sections:
        print("  sparse", flush=True)
        row.update(sparse_costs(model, data, repeats=repeats))
    if "continual" in sections:
        print("  continual", flush=True)
        row.update(continual_costs(model, data, epoch, steps=6 if quick else 10))
    if "adapt" in sections and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        print("  adapt", flush=True)
        row.update(adapt_costs(model, data, repeats=repeats))
    return row


EPOCH_SECTIONS = {"forget", "continual"}  # their figures are in epochs of the rung's own training run
TRAINING_FIELDS = ("epoch seconds", "accuracy", "training accuracy", "training epochs")


def merge_rung(stored: dict[str, Any], measured: dict[str, Any], sections: set[str]) -> dict[str, Any]:
    """A rung's stored figures with a re-run's put in. The training run's fields (its epoch,
    accuracies) are replaced only when a re-run section is measured in epochs: otherwise the
    stored epoch-unit figures keep the epoch they were measured against."""
    keep = bool(stored) and not sections & EPOCH_SECTIONS
    return {**stored, **{k: v for k, v in measured.items() if not (keep and k in TRAINING_FIELDS)}}


# ----- learn rules on their own networks -----
def learn_images(count: int) -> tuple[TensorDataset, str]:
    """The first ``count`` Fashion-MNIST training images where the files are installed
    (``make data``), else ``count`` synthetic ones; and which it is, in words. The
    dis-inhibitory closed loop does less work the smaller the output error, so its cost is
    measured on data that keeps the error up as training goes (the synthetic patterns are
    learnt within two passes, after which the loop settles in one evaluation)."""
    try:
        split = npl.data.load_data("fashion-mnist")
    except NeuroplasticError:
        return (synthetic((1, 28, 28), count, seed=2),
                f"{count:,} synthetic images (Fashion-MNIST not installed)")
    images, labels = split.train.tensors
    return TensorDataset(images[:count], labels[:count]), f"the first {count:,} Fashion-MNIST training images"


def learn_costs(*, repeats: int, passes: int, quick: bool = False) -> tuple[dict[str, float], str]:
    """Each learn rule's training step over backprop's on the same network (dis-inhibitory
    control and SoftHebb: ``passes`` timed passes after an untimed one); and the data the
    dis-inhibitory steps ran on, in words."""
    from neuroplastic.local.bidirectional import Biprop
    from neuroplastic.local.protocol import LearnContext
    from neuroplastic.local.softhebb import hebbian_phase, softhebb_mlp

    print("learn rules:", flush=True)
    row: dict[str, float] = {}
    images, source = learn_images(500 if quick else 2000)
    print(f"  dis-inhibitory control on {source}", flush=True)
    for hidden in ((256,), (256, 256, 256)):
        label = "disinhibitory step (784-" + "-".join(map(str, hidden)) + "-10)"
        row[label], row[label.replace("step", "root evaluations")] = disinhibitory_ratio(hidden, images,
                                                                                           passes=passes)
        print(f"  {label}: {row[label]:.2f}x a backprop step", flush=True)
    # SoftHebb: Hebbian epochs (batch 10) against backprop's of the same network on the same
    # batches, each run as its training runs, epoch after epoch (the median after an untimed
    # one). The ratio moves with the allocator's state: 2.1-2.2x here, after the dis-inhibitory
    # runs, 1.1-1.3x in a fresh process, 2.2-2.4x with the two alternating epoch by epoch
    # (measured)
    hebb_data = loader(synthetic((1, 28, 28), 500, seed=3), batch_size=10)
    torch.manual_seed(0)
    net = softhebb_mlp(784, CLASSES, width=2000)
    twin = softhebb_mlp(784, CLASSES, width=2000)
    twin_optimizer = adam(twin)
    epochs = passes + 1
    hebbian = [median_seconds(lambda: hebbian_phase(net, hebb_data, epochs=1), repeats=1)
               for _ in range(epochs)]
    backprop = [median_seconds(lambda: loop.fit(twin, hebb_data, optimizer=twin_optimizer, epochs=1),
                               repeats=1) for _ in range(epochs)]
    row["softhebb step (784-2000)"] = statistics.median(hebbian[1:]) / statistics.median(backprop[1:])
    print(f"  softhebb: {row['softhebb step (784-2000)']:.2f}x a backprop step", flush=True)
    # biprop: classifier + generator step against the classifier's backprop step
    data = synthetic((1, 28, 28), 500, seed=2)
    split = DataSplit("synthetic", data, data, data, CLASSES)
    method = Biprop()
    ctx = LearnContext(split=split, epochs=1, lr=1e-3, batch_size=BATCH, seed=0,
                       batches=lambda size: loader(data, batch_size=size, shuffle=True, seed=0),
                       example=data.tensors[0][:2])
    net = method.network(split, (256,))
    twin = copy.deepcopy(net)
    both = median_seconds(lambda: method.train(net, ctx), repeats=repeats)
    plain = median_seconds(lambda: npl.create("backprop", kind="learn").train(twin, ctx), repeats=repeats)
    row["biprop step (784-256-10)"] = both / plain
    print(f"  biprop: {both / plain:.2f}x a backprop step", flush=True)
    return row, source


def disinhibitory_ratio(hidden: tuple[int, ...], data: TensorDataset, *,
                        passes: int) -> tuple[float, float]:
    """(a dis-inhibitory training step over a backprop step of the same network, mean root
    evaluations per batch). Two twins train on the same batches, one with each rule, for
    ``passes`` timed passes over ``data`` (batch 100, every batch a different one: on a
    batch seen again and again the closed loop settles ever faster, so a fixed batch
    flatters the rule); their steps alternate batch by batch so drift hits both alike; the
    ratio is the median over passes of their summed step times, after one untimed pass."""
    from neuroplastic.local.disinhibitory import DisinhibitoryControl, DisinhibitoryMLP

    torch.manual_seed(0)
    model = DisinhibitoryMLP(784, CLASSES, hidden=hidden)
    twin = copy.deepcopy(model)
    rule = DisinhibitoryControl()
    optimizer, twin_optimizer = adam(model), adam(twin)
    batches = [(x.flatten(1), y) for x, y in loader(data, batch_size=100)]

    def rule_step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        rule.batch_grads(model, x, y)
        optimizer.step()

    def backprop_step(x: torch.Tensor, y: torch.Tensor) -> None:
        twin_optimizer.zero_grad(set_to_none=True)
        rule.loss(twin(x), rule.targets(y, CLASSES)).backward()
        twin_optimizer.step()

    ratios = []
    for epoch in range(passes + 1):
        seconds = [0.0, 0.0]
        for x, y in batches:
            for index, step in enumerate((rule_step, backprop_step)):
                start = time.perf_counter()
                step(x, y)
                seconds[index] += time.perf_counter() - start
        if epoch > 0:
            ratios.append(seconds[0] / seconds[1])
    return statistics.median(ratios), rule.stats.steps / max(rule.stats.solves, 1)


# ----- skills on a ~100M causal LM -----
def skill_costs(*, repeats: int, quick: bool) -> dict[str, float]:
    from transformers import LlamaConfig, LlamaForCausalLM

    from neuroplastic.importance.activations import ActivationStats
    from neuroplastic.skills.demo import char_tokenizer
    from neuroplastic.skills.evaluation import generation_overhead, retained_examples
    from neuroplastic.skills.experiment import demo_request
    from neuroplastic.skills.lm import encoded_batches
    from neuroplastic.skills.neuron_adjust import example_texts
    from neuroplastic.skills.sites import mlp_sites

    tokenizer = char_tokenizer()
    width, layers, heads, mlp = (256, 4, 4, 688) if quick else (768, 12, 12, 2560)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=mlp,
                         max_position_embeddings=128, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    parameters = sum(p.numel() for p in model.parameters())
    print(f"causal LM ({parameters / 1e6:.0f}M parameters):", flush=True)
    request = demo_request("addition", fit_count=16 if quick else 64, eval_count=16)
    retained = retained_examples(request.evaluation, forget_skill=request.forget_skill)[:16]
    row: dict[str, float] = {"parameters": parameters}
    for label, name in (("calibrated guard", "ksd-calibrated"), ("neuron adjust", "na")):
        intervention = npl.create(name, kind="skill").apply(model, tokenizer, request.forget, request.retain)
        try:
            row[f"{label} generation overhead"] = generation_overhead(
                model, tokenizer, retained, generate=intervention.generate, repeats=repeats)
        finally:
            intervention.remove()
        print(f"  {label}: generation {row[f'{label} generation overhead']:.3f}x plain", flush=True)
    texts = example_texts(request.retain)
    batches = list(encoded_batches(tokenizer, texts, batch_size=16))
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    stats = ActivationStats(sites=mlp_sites(model))
    with torch.no_grad():
        collected = median_seconds(lambda: stats.estimate(model, batches), repeats=repeats)
        plain = median_seconds(lambda: [model(**b) for b in batches], repeats=repeats)
    row["ActivationStats tokens per second"] = tokens / collected
    row["ActivationStats over a forward pass"] = collected / plain
    print(f"  ActivationStats: {tokens / collected:.0f} tokens/s, {collected / plain:.2f}x a forward pass",
          flush=True)
    return row


# ----- output -----
def verdict(name: str, value: float) -> str:
    if name not in TARGETS:
        return ""
    op, bound = TARGETS[name]
    met = value <= bound if op == "<=" else value >= bound
    return f" ({'met' if met else 'missed'}: {op} {bound:g})"


def markdown(results: dict[str, Any]) -> str:
    models = results["models"]
    names = list(models)
    keys: list[str] = []
    for row in models.values():
        keys += [k for k in row if k not in keys and k not in ("parameters", "epoch seconds", "accuracy",
                                                                "training epochs", "training accuracy")]
    lines = ["| ratio | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
             "| parameters | " + " | ".join(f"{models[n]['parameters'] / 1e6:.2f}M" for n in names) + " |",
             "| epoch (s) | " + " | ".join(f"{models[n]['epoch seconds']:.2f}" for n in names) + " |"]
    for key in keys:
        cells = []
        for n in names:
            value = models[n].get(key)
            if value is None:
                cells.append("—")
            else:
                cells.append(f"{value:.1e}" if "difference" in key else f"{value:.2f}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if results["learn"]:
        data = results.get("learn data", "synthetic images, one batch trained on again and again")
        passes = results.get("learn passes", 3)
        lines += ["", "Learn rules (one training step over a backprop step of the same network; "
                  f"dis-inhibitory control on {data}, batch 100, two twins trained on the same batches "
                  f"with their steps alternating, the median over {passes} passes after an untimed one):", ""]
        lines += [f"- {k}: {v:.2f}" + verdict(k, v) for k, v in results["learn"].items()]
    skills = results["skills"]
    if skills:
        lines += ["", f"Skills on a {skills['parameters'] / 1e6:.0f}M-parameter Llama-style LM:", ""]
        lines += [(f"- {k}: {v:.3f}" if "overhead" in k or "over" in k else f"- {k}: {v:.0f}") + verdict(k, v)
                  for k, v in skills.items() if k != "parameters"]
    big = models.get("ResNet-18 3x32x32") or models[names[-1]]
    lines += ["", "Targets at the largest image model:", ""]
    lines += [f"- {k}: {big[k]:.2f}{verdict(k, big[k])}" for k in TARGETS if k in big]
    lines += ["", f"Forget in epochs of the same model on the same data ({results['train']} synthetic "
              f"samples, batch {BATCH}); steps over a plain Adam step; adaptation over an eval-mode forward "
              f"pass; medians of {results['repeats']} repeats. {results['machine']}; whole benchmark "
              f"{results['seconds'] / 60:.0f} minutes."]
    if "rebuilt_from_log" in results:
        lines.append("The run's table writer crashed after the last measurement; its results were rebuilt "
                     "from the run's log, to the printed precision (the root-evaluation counts of the "
                     "learn rules were not printed and are missing).")
    for rerun in results.get("rerun", []):
        note = f" Note: {rerun['note']}." if rerun.get("note") else ""
        lines.append(f"Re-run on {rerun['date']}: {', '.join(rerun['sections'])} on "
                     f"{', '.join(rerun['models']) or 'no image model'} "
                     f"({rerun['seconds'] / 60:.0f} minutes).{note}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    # the ladder in order of size (two ResNet-18s share a parameter count: then by epoch time)
    names = sorted(models, key=lambda n: (models[n]["parameters"], models[n]["epoch seconds"]))
    figure, axis = plt.subplots(figsize=(9, 5))
    keys = ("ssd cold", "ssd cached", "ssd-auto cold", "lfssd cold", "masked step (GraNet schedule)",
            "ewc step", "si step", "gpm step", "hlop step", "classp step", "tent per batch", "nhl per batch")
    colors = plt.get_cmap("tab20").colors
    for index, key in enumerate(keys):
        points = [(i, models[n][key]) for i, n in enumerate(names) if key in models[n]]
        if points:
            axis.plot(*zip(*points, strict=True), marker="o", color=colors[index % len(colors)], label=key,
                      linestyle="-" if index % 2 == 0 else "--")
    axis.set_xticks(range(len(names)),
                    [f"{n}\n{models[n]['parameters'] / 1e6:.1f}M parameters" for n in names], fontsize=8)
    axis.set_xlabel("model (in order of size)")
    axis.set_ylabel("ratio (epochs for forget requests, x plain otherwise)")
    axis.set_title("Cost against model size")
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help="the MLP on 512 samples and a small LM, one repeat (needs --json)")
    parser.add_argument("--json", type=Path,
                        help="write the results here and leave benchmarks/results alone")
    parser.add_argument("--sections", nargs="*", default=[*MODEL_SECTIONS, "learn", "skills"],
                        choices=[*MODEL_SECTIONS, "learn", "skills"])
    parser.add_argument("--models", nargs="*", choices=list(LADDER), help="only these rungs")
    parser.add_argument("--from-json", action="store_true", help="only re-render the table and plot")
    parser.add_argument("--merge", action="store_true",
                        help="put the re-run sections into the stored results instead of starting anew")
    args = parser.parse_args()
    if args.quick and args.json is None:
        parser.error("--quick writes only to --json PATH")
    if args.from_json:
        results = stored_results("cost")
        plot(results, RESULTS / "cost.png")
        publish("cost", markdown(results), echo=False)
        return
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    global TRAIN
    if args.quick:  # the MLP rung on 512 samples, one repeat, a 3M-parameter LM
        TRAIN = 512
    ladder = dict(list(LADDER.items())[:1]) if args.quick else LADDER
    if args.models:
        ladder = {k: v for k, v in ladder.items() if k in args.models}
    sections = set(args.sections)
    repeats = 1 if args.quick else args.repeats
    results: dict[str, Any] = {
        "train": TRAIN, "batch": BATCH, "repeats": repeats, "models": {}, "learn": {}, "skills": {},
        "signal": SIGNAL,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"}
    if args.merge:
        results = stored_results("cost")
    for label, (arch, shape) in ladder.items():
        if sections & set(MODEL_SECTIONS):
            measured = rung(label, arch, shape, repeats=repeats, quick=args.quick, sections=sections)
            results["models"][label] = merge_rung(results["models"].get(label, {}), measured, sections)
    if "learn" in sections:
        results["learn passes"] = 1 if args.quick else max(3, repeats)  # timed, after an untimed one
        results["learn"], results["learn data"] = learn_costs(repeats=repeats, passes=results["learn passes"],
                                                              quick=args.quick)
    if "skills" in sections:
        results["skills"] = skill_costs(repeats=repeats, quick=args.quick)
    seconds = time.perf_counter() - start
    if args.merge:
        measured = list(ladder) if sections & set(MODEL_SECTIONS) else []  # learn and skills bring their own
        results.setdefault("rerun", []).append({"sections": sorted(sections), "models": measured,
                                                "seconds": seconds, "date": time.strftime("%Y-%m-%d")})
    else:
        results["seconds"] = seconds
    if args.json is not None:
        import json

        args.json.write_text(json.dumps(results, indent=1))
        print(markdown(results))
        return
    plot(results, RESULTS / "cost.png")
    publish("cost", markdown(results), results=results)


if __name__ == "__main__":
    main()
