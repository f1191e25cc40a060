"""The sparse verb: a ``Sparsifier`` plugs into any training loop (``step()`` after
``optimizer.step()``) and owns the model's weight masks."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from neuroplastic import distributed
from neuroplastic.checks import require_choice
from neuroplastic.errors import NeuroplasticError
from neuroplastic.importance.simple import Magnitude
from neuroplastic.select import fraction_selected, top_k, top_k_mask
from neuroplastic.sharded import whole
from neuroplastic.sparse.density import erk_counts, uniform_counts
from neuroplastic.sparse.masks import SparseMasks
from neuroplastic.sparse.parametrized_masks import ParametrizedMasks
from neuroplastic.targets import Targets
from neuroplastic.types import Masks

#: How a sparsifier keeps masked weights at zero.
MASKINGS: dict[str, type[SparseMasks]] = {"in-place": SparseMasks, "parametrize": ParametrizedMasks}

#: Default targets: the weights of every linear and convolution layer, classifier included.
PRUNABLE = Targets(include=("*weight",), module_types=(nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))


def check_sparsity(sparsity: float) -> float:
    if not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise NeuroplasticError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return float(sparsity)


def prunable_weights(model: nn.Module, targets: Targets | None) -> dict[str, nn.Parameter]:
    """The weights a sparsifier masks; a one-line error if there are none."""
    try:
        return dict((targets or PRUNABLE).named_parameters(model))
    except NeuroplasticError:
        raise NeuroplasticError(
            f"{type(model).__name__} has no prunable layers (linear or convolution weights)"
        ) from None


def random_masks(weights: dict[str, Tensor], counts: dict[str, int],
                 generator: torch.Generator) -> Masks:
    """Uniformly random masks with the given number of active entries per tensor."""
    return {name: top_k_mask(torch.rand(w.shape, generator=generator).to(w.device), counts[name])
            for name, w in weights.items()}


def magnitude_masks(weights: dict[str, Tensor], *, active: int | None = None,
                    counts: dict[str, int] | None = None) -> Masks:
    """Keep the largest |w| (:meth:`~neuroplastic.importance.Magnitude.of`): ``active``
    entries globally, or ``counts[name]`` per tensor."""
    scores = Magnitude.of(weights)
    if counts is not None:
        return {n: top_k_mask(score, counts[n]) for n, score in scores.items()}
    return top_k(scores, k=int(active or 0))


def drop_and_grow(weight: Tensor, mask: Tensor, grow_scores: Tensor, n: int) -> Tensor:
    """Drop the ``n`` smallest-magnitude active entries, then activate the ``n`` inactive
    entries (just-dropped ones included) with the highest ``grow_scores``."""
    n = min(n, int(mask.sum()))
    if n <= 0:
        return mask
    magnitude = torch.where(mask, weight.detach().abs(), torch.full_like(weight, math.inf))
    drop = torch.topk(magnitude.reshape(-1), n, largest=False, sorted=False).indices
    kept = mask.clone().reshape(-1)
    kept[drop] = False
    scores = torch.where(kept, torch.full_like(grow_scores, -math.inf).reshape(-1),
                         grow_scores.reshape(-1).float())
    grow = torch.topk(scores, n, sorted=False).indices
    kept[grow] = True
    return kept.reshape(mask.shape)


@dataclass
class SparsityLog:
    """What happened to the masks: per step, overall density and which steps were updates."""

    steps: list[int] = field(default_factory=list)
    densities: list[float] = field(default_factory=list)
    update_steps: list[int] = field(default_factory=list)
    layer_counts: list[dict[str, int]] = field(default_factory=list)


class Sparsifier(ABC):
    """Base class: masks the prunable weights of ``model`` and updates them on ``step()``.

    Call ``step()`` once after every ``optimizer.step()``. The weights stay the same
    Parameter objects (masked in place), so the optimizer may be created before or after.

    Args:
        model: any ``nn.Module``; modified in place.
        sparsity: final fraction of zero weights among the targeted ones, in [0, 1).
        total_steps: optimizer steps in the whole training run.
        distribution: ``"erk"`` or ``"uniform"`` layer densities (where the method uses them).
        dense_layers: parameter names kept dense (e.g. the first layer).
        update_frequency: optimizer steps between mask updates.
        targets: which weights to mask (default: every linear / conv weight).
        seed: seeds random initial masks and random regrowth.
        masking: ``"in-place"`` (default, :class:`SparseMasks`: exact zeros kept by a
            gradient hook and the optimizer's state) or ``"parametrize"``
            (:class:`ParametrizedMasks`: ``original * mask`` at every forward, for update
            rules outside ``torch.optim``; slower, and the optimizer must come after).
    """

    name = "sparsifier"
    uses_dense_gradient = False
    sparsifies = True  # False only for the dense baseline
    prunes_trained = False  # True: prunes a trained model once (``sparse prune``), no training

    def __init__(self, model: nn.Module, *, sparsity: float, total_steps: int,
                 distribution: str = "erk", dense_layers: tuple[str, ...] = (),
                 update_frequency: int = 100, targets: Targets | None = None,
                 seed: int = 0, masking: str = "in-place") -> None:
        self.sparsity = check_sparsity(sparsity)
        require_choice("masking", masking, MASKINGS)
        if total_steps < 1:
            raise NeuroplasticError(f"total_steps must be >= 1, got {total_steps}")
        if update_frequency < 1:
            raise NeuroplasticError(f"update_frequency must be >= 1, got {update_frequency}")
        require_choice("distribution", distribution, ("erk", "uniform"))
        self.total_steps = total_steps
        self.distribution = distribution
        self.dense_layers = tuple(dense_layers)
        self.update_frequency = update_frequency
        self.generator = torch.Generator().manual_seed(seed)
        self.step_count = 0
        self.log = SparsityLog()
        weights = prunable_weights(model, targets)
        self.shapes = {n: tuple(w.shape) for n, w in weights.items()}
        initial = self.initial_masks(weights)
        self.masks = MASKINGS[masking]()
        self.masks.prepare(model, initial)
        self._record()
        self.masks.capture_dense_grads(self.uses_dense_gradient and self.is_update_step(1))

    # -- pieces methods use -------------------------------------------------------------
    def layer_counts(self, density_: float) -> dict[str, int]:
        """Active weights per layer for overall ``density_`` under this distribution."""
        fn = erk_counts if self.distribution == "erk" else uniform_counts
        return fn(self.shapes, density=density_, dense=self.dense_layers)

    def adjustable(self) -> list[str]:
        """Masked weights whose masks may change (all but ``dense_layers``)."""
        return [n for n in self.shapes if n not in self.dense_layers]

    def global_top(self, scores: dict[str, Tensor], density_: float) -> Masks:
        """Masks keeping the top entries of ``scores`` with one global threshold over the
        adjustable layers, so that the overall density (dense layers included) is ``density_``."""
        total = sum(math.prod(s) for s in self.shapes.values())
        fixed = sum(math.prod(self.shapes[n]) for n in self.dense_layers)
        names = self.adjustable()
        masks = magnitude_masks({n: scores[n] for n in names},
                                active=max(0, round(density_ * total) - fixed))
        for name in self.dense_layers:
            masks[name] = torch.ones(self.shapes[name], dtype=torch.bool,
                                     device=scores[name].device)
        return masks

    def weights(self) -> dict[str, Tensor]:
        """Current trainable tensors behind the masks (inactive entries are zero); on an FSDP2
        model, whole copies gathered from the ranks' slices (the same on every rank)."""
        if self.masks.sharded:
            return {n: whole(self.masks.weight(n).detach()) for n in self.masks.names}
        return {n: self.masks.weight(n) for n in self.masks.names}

    def is_update_step(self, step: int) -> bool:
        return step % self.update_frequency == 0 and step <= self.update_end()

    def update_end(self) -> int:
        """Last step at which masks may change (default: one step before the end, so that
        weights regrown at zero are trained at least once before the masks are baked in)."""
        return max(1, self.total_steps - 1)

    @abstractmethod
    def initial_masks(self, weights: dict[str, Tensor]) -> Masks:
        """Masks at step 0."""

    def update(self, step: int) -> None:  # noqa: B027 - a hook methods may leave alone
        """Change the masks at an update step (default: never)."""

    # -- the training-loop interface -------------------------------------------------------
    def after_step(self, model: nn.Module, step: int) -> None:
        """The training loop's event (:mod:`neuroplastic.loop`): one :meth:`step`, so a
        sparsifier is a plugin of ``loop.fit`` and can still be stepped by hand."""
        self.step()

    def step(self) -> None:
        """Advance one optimizer step; update masks when it is time."""
        self.step_count += 1
        if self.is_update_step(self.step_count):
            self.update(self.step_count)
            self.log.update_steps.append(self.step_count)
            self._record()
        self.masks.capture_dense_grads(
            self.uses_dense_gradient and self.is_update_step(self.step_count + 1))

    def _record(self) -> None:
        masks = self.masks.masks
        self.log.steps.append(self.step_count)
        self.log.densities.append(fraction_selected(masks))
        self.log.layer_counts.append({n: int(m.sum()) for n, m in masks.items()})

    @property
    def current_sparsity(self) -> float:
        return 1.0 - fraction_selected(self.masks.masks)

    def export(self) -> nn.Module:
        """Bake the masks in and return the plain model (the sparsifier is then done)."""
        return self.masks.squash()

    # -- checkpointing -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """Masks, step counter and random state as tensors (safetensors-friendly)."""
        state = {f"mask.{n}": m for n, m in self.masks.state_dict().items()}
        state["step"] = torch.tensor([self.step_count], dtype=torch.int64)
        state["rng"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        masks = {k.removeprefix("mask."): v for k, v in state.items() if k.startswith("mask.")}
        self.masks.load_state_dict(masks)
        self.step_count = int(state["step"][0])
        self.generator.set_state(state["rng"])
        self.masks.capture_dense_grads(
            self.uses_dense_gradient and self.is_update_step(self.step_count + 1))
        self.log = SparsityLog()
        self._record()


def dense_grads(sparsifier: Sparsifier) -> dict[str, Tensor]:
    """The dense gradients captured for this update, with a clear error if missing. In a
    process group they are the full batch's (all-reduced from the ranks' parts), so every
    rank grows the same connections."""
    grads = sparsifier.masks.dense_grads()
    if distributed.is_distributed() and distributed.batch_share() == 0.0:  # no part of a tiny batch
        grads = {n: torch.zeros_like(w) for n, w in sparsifier.weights().items()}
    missing = [n for n, g in grads.items() if g is None]
    if missing:
        raise NeuroplasticError(
            f"{sparsifier.name} needs the dense gradient of {missing[0]!r} at step "
            f"{sparsifier.step_count}: call step() right after backward() and optimizer.step()"
        )
    if distributed.is_distributed() and not sparsifier.masks.sharded:  # FSDP reduced them already
        grads = {n: g.clone() for n, g in grads.items()}  # type: ignore[union-attr]
        distributed.reduce_batch_means_(list(grads.values()))  # type: ignore[arg-type]
    return grads  # type: ignore[return-value]
