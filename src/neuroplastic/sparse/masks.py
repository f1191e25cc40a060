"""Weight masks applied in place: ``SparseMasks`` with prepare -> update -> squash.

Modelled on ``torch.ao.pruning.BaseSparsifier`` (prepare / step / squash, tensors addressed
by name), but the masks are kept in place instead of as ``torch.nn.utils.parametrize``
parametrizations, as the GraNet and RigL reference PyTorch code does: an inactive weight is
stored as an exact zero, a gradient hook zeroes its gradient (a
:class:`~neuroplastic.intervene.gradients.GradientMask` reading the masks in place), and at
the first optimizer step after a mask change the optimizer's state is zeroed at inactive
positions. A weight that is exactly zero, with zero gradient and zero optimizer state, stays zero under every
``torch.optim`` update rule (momentum and weight decay included), so no copy of the weight
is needed. A parametrization computes ``original * mask`` at every forward and keeps that
copy of every weight alive until backward: measured 1.27x a dense training step on the
MNIST-1D MLP, against 1.06-1.10x for this scheme, most of it the Python gradient hooks
(``benchmarks/sparse.py``). :class:`~neuroplastic.sparse.parametrized_masks.ParametrizedMasks`
keeps that design for update rules outside ``torch.optim``.

One exception to "zero state": torch's CPU square root is about 5x slower on zeros than on
positive numbers, so Adam's ``sqrt(exp_avg_sq)`` over a 90%-sparse weight cost a 784-800-800
MLP 1.4x a dense step. While a weight is inactive its second moment (the state Adam, RMSprop
and Adagrad take the root of) holds a positive fill instead; its update is 0 all the same
(gradient and first moment are 0), and the fill goes back to exactly 0 when the masks change
or are squashed, so a regrown weight starts as a fresh entry.

On an FSDP2 model (``fully_shard``) each rank keeps its slice of every mask, in the weight's
DTensor layout. A sharded weight's gradient appears only after FSDP's reduce-scatter, on the
sharded parameter that autograd never sees, so it is masked (and, for a dense-gradient
method, captured) by the optimizer's pre-step hook instead of a gradient hook: whatever reads
gradients between ``backward`` and ``optimizer.step()`` (gradient clipping) sees them
unmasked. :attr:`SparseMasks.masks` and the methods' mask decisions use whole tensors (the
same on every rank), gathered at each mask update.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.optim.optimizer import (
    Optimizer,
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils.hooks import RemovableHandle

from neuroplastic.errors import NeuroplasticError
from neuroplastic.intervene.gradients import GradientMask
from neuroplastic.sharded import is_sharded, like_parameter, whole
from neuroplastic.types import Masks

# optimizer state keys of second moments, whose square root the update takes; an inactive
# weight's update is 0 whatever they hold (its gradient and first moment are 0)
SECOND_MOMENTS = frozenset({"exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum"})
SECOND_MOMENT_FILL = 1.0
REFILL_STEPS = 10_000  # 0.999**10_000 = 4.5e-5: refilled long before decay reaches denormals


@dataclass
class _Fill:
    generation: int
    steps: int
    inactive: dict[str, Tensor]


# global optimizer hooks of masks collected without squash, removed at the next prepare or
# squash (outside any optimizer step)
_REMOVE_LATER: list[RemovableHandle] = []


def remove_collected_hooks() -> None:
    """Remove the global optimizer hooks of masks that were garbage-collected without
    ``squash`` (done at every ``prepare`` and ``squash`` anyway)."""
    while _REMOVE_LATER:
        _REMOVE_LATER.pop().remove()


def _weak_hook(method: weakref.WeakMethod) -> Callable[[Optimizer, object, object], None]:
    def hook(optimizer: Optimizer, args: object, kwargs: object) -> None:
        if (bound := method()) is not None:
            bound(optimizer)
    return hook


class SparseMasks:
    """Lifecycle of weight masks on one model.

    ``prepare(model, masks)`` zeroes the inactive entries of every named weight and hooks
    its gradient, so masked weights stay exactly zero through any optimizer step (momentum
    and weight decay included) and a weight that is later regrown starts at zero.
    ``update(masks)`` changes the masks in place (same mask tensors). ``squash()`` removes
    the hooks and leaves the plain weights, zeros included. The weights stay ordinary
    parameters throughout, so ``model.state_dict()`` keeps its keys and an optimizer may be
    created before or after ``prepare``.
    """

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.names: list[str] = []
        self._weights: dict[str, nn.Parameter] = {}
        # 1/0 in the weight's dtype: a bool mask is converted at every multiply (7x slower)
        self._keep: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []
        self._capturing = False
        self._dense_grads: dict[str, Tensor | None] = {}
        self.sharded = False  # FSDP2: the weights are DTensors (see the module's docstring)
        self._generation = 0  # bumped on every mask change
        self._synced: weakref.WeakKeyDictionary[Optimizer, int] = weakref.WeakKeyDictionary()
        # per optimizer: the last fill of its second moments (see _after_optimizer_step)
        self._filled: weakref.WeakKeyDictionary[Optimizer, _Fill] = weakref.WeakKeyDictionary()

    def prepare(self, model: nn.Module, masks: Masks) -> None:
        """Attach ``masks`` (parameter name -> bool mask of the same shape) to ``model``."""
        remove_collected_hooks()
        if self.model is not None:
            raise NeuroplasticError("these masks are already attached to a model")
        params = dict(model.named_parameters())
        for name, mask in masks.items():
            if name not in params:
                raise NeuroplasticError(f"model has no parameter {name!r} to mask")
            if tuple(mask.shape) != tuple(params[name].shape):
                raise NeuroplasticError(f"mask of {name!r} has shape {tuple(mask.shape)}, "
                                        f"the weight {tuple(params[name].shape)}")
        self.model, self.names = model, list(masks)
        self._dense_grads = dict.fromkeys(masks)
        self._attach({name: params[name] for name in masks}, masks)
        self._generation += 1

    def _attach(self, weights: dict[str, nn.Parameter], masks: Masks) -> None:
        self._weights = weights
        self.sharded = any(is_sharded(weight) for weight in weights.values())
        self._keep = {name: like_parameter(mask.to(weights[name].device, weights[name].dtype, copy=True),
                                           weights[name])
                      for name, mask in masks.items()}
        self._gradient_mask = GradientMask.sharing(self._keep)
        with torch.no_grad():
            for name, weight in weights.items():
                weight.mul_(self._keep[name])
        hooked = {name: w for name, w in weights.items() if w.requires_grad and not is_sharded(w)}
        self._handles = [weight.register_hook(self._grad_hook(name)) for name, weight in hooked.items()]
        # weakly: masks nobody squashed must not be kept alive by the global hooks
        for register, method in ((register_optimizer_step_pre_hook, self._before_optimizer_step),
                                 (register_optimizer_step_post_hook, self._after_optimizer_step)):
            handle = register(_weak_hook(weakref.WeakMethod(method)))
            self._handles.append(handle)
            # not handle.remove: a collection can run inside torch's loop over these very hooks
            # (any allocation in a hook), and removing one then breaks that loop
            weakref.finalize(self, _REMOVE_LATER.append, handle)

    def _grad_hook(self, name: str) -> Callable[[Tensor], Tensor]:
        def hook(grad: Tensor) -> Tensor:
            if self._capturing:  # the gradient of the loss w.r.t. the weight: dense
                self._dense_grads[name] = grad.detach()
            self._mask_on(name, grad.device)
            return self._gradient_mask.transform(name, grad)
        return hook

    def _mask_on(self, name: str, device: torch.device) -> Tensor:
        keep = self._keep[name]
        if keep.device != device:  # the model was moved after prepare
            keep = self._keep[name] = keep.to(device)
        return keep

    def _states(self, optimizer: Optimizer) -> Iterator[tuple[str, str, Tensor]]:
        """(weight name, state key, tensor) of every weight-shaped state of a masked weight."""
        for name, weight in self._weights.items():
            for key, value in optimizer.state.get(weight, {}).items():
                if isinstance(value, Tensor) and value.shape == weight.shape:
                    yield name, key, value

    @torch.no_grad()
    def _before_optimizer_step(self, optimizer: Optimizer) -> None:
        if self.sharded:
            self._mask_sharded_grads(optimizer)
        # After a mask change, a dropped weight still has momentum: zero the optimizer's
        # state at every inactive position once, then all update rules leave zeros at zero.
        if self._synced.get(optimizer) == self._generation:
            return
        self._require_current_weights()
        self._unfill(optimizer)
        for name, _, value in self._states(optimizer):
            value.mul_(self._mask_on(name, value.device).to(value.dtype))
        self._synced[optimizer] = self._generation

    def _require_current_weights(self) -> None:
        """Raise if the model's parameters are no longer the masked ones (``fully_shard``
        after ``prepare`` replaces every parameter: the masks would hold on the old ones)."""
        if self.model is None:
            return
        params = dict(self.model.named_parameters())
        for name, weight in self._weights.items():
            if params.get(name) is not weight:
                raise NeuroplasticError(f"the model's parameter {name!r} was replaced after the masks "
                                        "were attached (fully_shard after prepare?): attach them after "
                                        "fully_shard")

    def _mask_sharded_grads(self, optimizer: Optimizer) -> None:
        """Mask (and capture, when asked) the gradients of the sharded weights this optimizer
        steps: FSDP writes them after its reduce-scatter, where no gradient hook sees them."""
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for name, weight in self._weights.items():
            if id(weight) not in stepped or not is_sharded(weight) or weight.grad is None:
                continue
            if self._capturing:  # already the whole batch's mean: FSDP reduced it
                self._dense_grads[name] = whole(weight.grad.detach())
            weight.grad.mul_(self._mask_on(name, weight.grad.device))

    def _unfill(self, optimizer: Optimizer) -> None:
        """Put the filled second moments back to exactly 0 (a regrown weight starts fresh)."""
        fill = self._filled.pop(optimizer, None)
        if fill is None:
            return
        for name, key, value in self._states(optimizer):
            if key in SECOND_MOMENTS and name in fill.inactive:
                value.masked_fill_(fill.inactive[name].to(value.device), 0.0)

    @torch.no_grad()
    def _after_optimizer_step(self, optimizer: Optimizer) -> None:
        # An inactive weight's second moment stays exactly 0, and torch's CPU sqrt is about
        # 5x slower on zeros than on positive numbers: Adam on a 90%-sparse MLP ran 1.4x a
        # dense step for it. Its update is 0 whatever the second moment (the first moment and
        # the gradient are 0), so it holds SECOND_MOMENT_FILL instead, refilled before decay
        # could reach denormals, and put back to 0 when the masks change or are squashed.
        fill = self._filled.get(optimizer)
        if fill is not None and fill.generation == self._generation and fill.steps < REFILL_STEPS:
            fill.steps += 1
            return
        if self._synced.get(optimizer) != self._generation:
            return  # masks changed since this optimizer's last step: its next step syncs first
        inactive: dict[str, Tensor] = {}
        for name, key, value in self._states(optimizer):
            if key in SECOND_MOMENTS:
                inactive[name] = ~self._mask_on(name, value.device).bool()
                value.masked_fill_(inactive[name], SECOND_MOMENT_FILL)
        self._filled[optimizer] = _Fill(self._generation, 0, inactive)

    def weight(self, name: str) -> nn.Parameter:
        """The masked weight ``name`` (inactive entries are exactly zero)."""
        self._require_model()
        return self._weights[name]

    def _require_model(self) -> nn.Module:
        if self.model is None:
            raise NeuroplasticError("masks are not attached: call prepare(model, masks) first")
        return self.model

    def _keep_of(self, name: str) -> Tensor:
        """The 1/0 mask tensor of ``name`` that the model uses (changed in place)."""
        return self._keep[name]

    @property
    def masks(self) -> Masks:
        """The current masks as bool tensors, by parameter name (copies; change them with
        ``update``)."""
        return {name: whole(self._keep_of(name)).bool() for name in self.names}

    def update(self, masks: Masks) -> None:
        """Replace some or all masks in place; newly active entries start at zero."""
        self._set(masks, regrow_at_zero=True)

    def _set(self, masks: Masks, *, regrow_at_zero: bool) -> None:
        self._require_model()
        self._require_current_weights()
        for name, new in masks.items():
            if name not in self.names:
                raise NeuroplasticError(f"{name!r} is not masked")
            if new.shape != self._keep_of(name).shape:
                raise NeuroplasticError(f"new mask of {name!r} has the wrong shape")
        with torch.no_grad():
            for name, new in masks.items():
                keep, weight = self._keep_of(name), self.weight(name)
                new = like_parameter(new.to(keep.device, torch.bool), weight)
                if regrow_at_zero:
                    weight.masked_fill_(new & ~keep.bool(), 0.0)
                keep.copy_(new)
                weight.mul_(keep)
        self._generation += 1

    def capture_dense_grads(self, enabled: bool) -> None:
        """Keep the dense gradient of every masked weight at the next backward passes."""
        if self._capturing and not enabled:
            self._dense_grads = dict.fromkeys(self.names)
        self._capturing = enabled

    def dense_grads(self) -> dict[str, Tensor | None]:
        """The last captured dense gradients, by parameter name."""
        return dict(self._dense_grads)

    def squash(self) -> nn.Module:
        """Detach the masks: plain weights with their zeros, no hook left (and optimizers'
        state as if the masks had kept it at zero)."""
        model = self._require_model()
        for optimizer in list(self._filled):
            self._unfill(optimizer)
        self._detach()
        self.model, self.names, self._weights, self._keep = None, [], {}, {}
        self._capturing, self._dense_grads = False, {}
        return model

    def _detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        remove_collected_hooks()

    def state_dict(self) -> dict[str, Tensor]:
        """Copies of the masks, by parameter name."""
        return self.masks

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore masks saved by :meth:`state_dict` (names must match). The weights are
        restored separately (``model.load_state_dict``); entries active in ``state`` keep
        their values."""
        if set(state) != set(self.names):
            raise NeuroplasticError("saved masks are for other parameters than this model's")
        self._set(state, regrow_at_zero=False)

