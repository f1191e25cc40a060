"""Continual learning via neural pruning (Golkar, Kagan & Cho 2019, arXiv 1903.04476).

No original code exists (shared/CONTINUAL.md); this follows the paper's mechanism:
train each task with L1 weight regularisation; afterwards keep the units (ReLU neurons)
whose mean activity on the task is above the largest threshold that costs at most
``margin`` validation accuracy, freeze them, fix the weights from free units into them at
zero, and re-initialise the free units for the next task. Active -> free connections stay
trainable, so later tasks reuse old features; old tasks cannot change: zero forgetting.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from neuroplastic.checks import require_in
from neuroplastic.continual.base import ContinualMethod
from neuroplastic.data.splits import loader
from neuroplastic.data.streams import Experience, task_accuracy
from neuroplastic.distributed import all_reduce_sums_, rank_batches
from neuroplastic.errors import NeuroplasticError
from neuroplastic.intervene.gradients import GradientMask
from neuroplastic.record import LayerRecorder
from neuroplastic.registry import register


def linear_chain(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The model's Linear layers in order; each must feed the next (an MLP).

    Raises:
        NeuroplasticError: for another architecture.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if len(layers) < 2:
        raise NeuroplasticError("CLNP needs an MLP of at least two Linear layers")
    if any(isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) for m in model.modules()):
        raise NeuroplasticError("CLNP here prunes neurons of Linear layers; convolutions are not supported")
    for (_, first), (name, second) in itertools.pairwise(layers):
        if first.out_features != second.in_features:
            raise NeuroplasticError(f"CLNP needs a chain of Linear layers; {name} does not follow "
                                    "the one before")
    return layers


@register("clnp", kind="continual", needs=('labels',))
class CLNP(ContinualMethod):
    """CLNP (Golkar et al. 2019): L1 while training a task, then prune low-activity ReLU units
    of the hidden Linear layers under a validation-accuracy margin, freeze the survivors and
    their incoming weights (and the task's output units), fix free -> active weights at zero,
    re-initialise the free units. Needs task-incremental output units (one head per task):
    with a shared head the output units become frozen after the first task.

    Args:
        l1: L1 strength on the weights while training (the paper's sparsifying penalty).
        margin: validation accuracy the pruning may cost on the task just learned (graceful
            forgetting trades a larger margin for more free capacity).
        seed: seeds the re-initialisation of free units.
    """

    needs_task_labels = True

    def __init__(self, *, l1: float = 0.0, margin: float = 0.01, seed: int = 0) -> None:
        self.l1 = require_in("l1", l1, 0.0, math.inf, high_open=True)
        self.margin = require_in("margin", margin, 0.0, 1.0)
        self.generator = torch.Generator().manual_seed(seed)
        self.active: dict[str, Tensor] = {}  # layer name -> bool per output unit, frozen
        self.num_outputs = 0
        self._mask: GradientMask | None = None
        self.free_units: list[dict[str, int]] = []  # after each task, free units per hidden layer

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, loss: Tensor) -> Tensor:
        if self.l1 == 0:
            return loss
        weights = [m.weight for _, m in linear_chain(model)]
        return loss + self.l1 * sum(w.abs().sum() for w in weights)

    def before_task(self, model: nn.Module, experience: Experience) -> None:  # type: ignore[override]
        layers = linear_chain(model)
        if not self.active:
            self.active = {name: torch.zeros(m.out_features, dtype=torch.bool) for name, m in layers}
        self._mask = GradientMask(self._trainable(layers)) if any(a.any() for a in self.active.values()) \
            else None

    def after_backward(self, model: nn.Module) -> None:
        if self._mask is not None:
            self._mask.after_backward(model)

    def _trainable(self, layers: list[tuple[str, nn.Linear]]) -> dict[str, Tensor]:
        """Per weight and bias: True where it may train (rows of free units only)."""
        masks = {}
        for name, layer in layers:
            free_rows = ~self.active[name].to(layer.weight.device)
            masks[f"{name}.weight"] = free_rows[:, None].expand_as(layer.weight).clone()
            if layer.bias is not None:
                masks[f"{name}.bias"] = free_rows.clone()
        return masks

    @torch.no_grad()
    def after_task(self, model: nn.Module, experience: Experience) -> None:  # type: ignore[override]
        layers = linear_chain(model)
        hidden = layers[:-1]
        out_name, out_layer = layers[-1]
        self.num_outputs = out_layer.out_features
        activity = self._activity(model, hidden, experience)
        candidates = {name: ~self.active[name] for name, _ in hidden}
        keep = self._choose(model, layers, activity, candidates, experience)
        for name, _ in hidden:
            self.active[name] |= keep[name].cpu()
        self.active[out_name][list(experience.classes)] = True
        self._isolate(layers)
        self.free_units.append({name: int((~self.active[name]).sum()) for name, _ in hidden})

    def _activity(self, model: nn.Module, hidden: list[tuple[str, nn.Linear]],
                  experience: Experience) -> dict[str, Tensor]:
        """Mean ReLU activity of every hidden unit on the task's training data (in a process
        group each rank reads every N-th batch; sums and counts are all-reduced)."""
        from neuroplastic.batches import eval_mode, iter_batches, model_device

        sums = {name: torch.zeros(m.out_features) for name, m in hidden}
        count = 0
        with eval_mode(model), LayerRecorder(dict(hidden), inputs=False, outputs=True) as recorder:
            for x, _ in iter_batches(rank_batches(loader(experience.train, batch_size=256)),
                                     device=model_device(model), name="activity"):
                model(x)
                for name, output in recorder.outputs.items():
                    sums[name] += torch.relu(output).reshape(-1, output.shape[-1]).sum(0).cpu()
                count += len(x)
        count = all_reduce_sums_(sums, count)
        return {name: total / max(count, 1) for name, total in sums.items()}

    def _choose(self, model: nn.Module, layers: list[tuple[str, nn.Linear]], activity: dict[str, Tensor],
                candidates: dict[str, Tensor], experience: Experience) -> dict[str, Tensor]:
        """The units to keep: activity above the largest threshold whose pruning costs at most
        ``margin`` validation accuracy (pruning = zeroing the units' outgoing weights)."""
        def accuracy() -> float:
            return task_accuracy(model, experience.val, classes=experience.classes,
                                 num_outputs=self.num_outputs)

        base = accuracy()
        values = torch.cat([activity[n][candidates[n]] for n in candidates])
        thresholds = sorted(set(torch.quantile(values, torch.linspace(0, 0.99, 34)).tolist()), reverse=True) \
            if len(values) else []
        chosen = {n: candidates[n].clone() for n in candidates}
        following = {name: layers[i + 1][1] for i, (name, _) in enumerate(layers[:-1])}
        for threshold in [*thresholds, -1.0]:
            keep = {n: candidates[n] & (activity[n] > threshold) for n in candidates}
            saved = {n: following[n].weight.detach().clone() for n in candidates}
            for n in candidates:
                pruned = (candidates[n] & ~keep[n]).to(following[n].weight.device)
                following[n].weight[:, pruned] = 0.0
            acc = accuracy()
            for n in candidates:
                following[n].weight.copy_(saved[n])
            if base - acc <= self.margin:
                chosen = keep
                break
        return chosen

    def _isolate(self, layers: list[tuple[str, nn.Linear]]) -> None:
        """Zero free -> active weights (they are then frozen with the active rows) and
        re-initialise every free unit's incoming weights and bias."""
        inputs_active = None
        for name, layer in layers:
            active = self.active[name].to(layer.weight.device)
            if inputs_active is not None:
                layer.weight[active[:, None] & ~inputs_active[None, :]] = 0.0
            free = ~active
            if free.any():
                fresh = nn.Linear(layer.in_features, int(free.sum()), bias=layer.bias is not None)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
                    fresh.reset_parameters()
                layer.weight[free] = fresh.weight.to(layer.weight)
                if layer.bias is not None:
                    layer.bias[free] = fresh.bias.to(layer.bias)  # type: ignore[union-attr]
            inputs_active = active
