"""The adapt verb: ``adapter.adapt(model, x) -> logits`` on each unlabelled test batch, and
``reset()`` to put the model back as it was before the first batch.

An adapter serves one model: the first ``adapt`` call binds it and takes a copy of
everything the adapter may change (the adapted parameters and the normalisation layers'
buffers). Every other parameter and buffer is never written, so it stays bit-identical.
``episodic=True`` resets after every batch (the model is then bit-identical after each
call); otherwise adaptation carries over from batch to batch (online).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from neuroplastic.checks import require_choice
from neuroplastic.errors import NeuroplasticError
from neuroplastic.intervene.atomic import restore_tensors_, snapshot_tensors

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
OTHER_NORMS = (nn.LayerNorm, nn.GroupNorm)


def batch_norms(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, BATCH_NORMS)}


def entropy(logits: Tensor) -> Tensor:
    """Per-sample Shannon entropy of the softmax, in nats."""
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


class Adapter(ABC):
    """Test-time adaptation of a classifier without labels (see the module docstring).

    Args:
        episodic: reset after every batch.
        small_batch: what a batch too small for batch statistics (one sample of a
            BatchNorm1d model, or one value per channel) does: ``error`` (default) or
            ``source`` (predict with the stored statistics, adapt nothing).
    """

    #: False for the unadapted baseline (its time is the plain forward pass's).
    adapts: bool = True

    def __init__(self, *, episodic: bool = False, small_batch: str = "error") -> None:
        self.episodic = episodic
        self.small_batch = require_choice("small_batch", small_batch, ("error", "source"))
        self.model: nn.Module | None = None
        self._norms: list[nn.Module] = []
        self._saved: dict[str, Tensor] = {}
        self.batches = 0

    # --- what a method defines ---
    def setup(self, model: nn.Module) -> None:  # noqa: B027 - optional hook
        """Called once when the adapter binds ``model`` (check it, build optimizers)."""

    def adapted_tensors(self, model: nn.Module) -> dict[str, Tensor]:
        """Every tensor the method may write (saved on binding, restored by ``reset``)."""
        out: dict[str, Tensor] = {}
        for name, module in batch_norms(model).items():
            for key, buffer in module.named_buffers(recurse=False):
                out[f"{name}.{key}"] = buffer
        return out

    @abstractmethod
    def step(self, model: nn.Module, x: Tensor) -> Tensor:
        """Adapt on the batch ``x``; return the logits to report for it."""

    def reset_state(self) -> None:  # noqa: B027 - optional hook
        """Forget optimizer moments and the like (the tensors are restored by ``reset``)."""

    # --- the verb ---
    def adapt(self, model: nn.Module, x: Tensor) -> Tensor:
        """Adapt on the test batch ``x`` (no labels) and return its logits."""
        self._bind(model)
        if self._too_small(x):
            if self.small_batch == "error":
                raise NeuroplasticError(
                    f"a batch of {len(x)} sample(s) gives BatchNorm one value per channel: its statistics "
                    "cannot be estimated; use larger batches or small_batch='source'")
            with torch.no_grad():
                return model.eval()(x)
        logits = self.step(model, x)
        self.batches += 1
        if self.episodic:
            self.reset()
        return logits.detach()

    @torch.no_grad()
    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """Logits the way the adapted model predicts (batch statistics), adapting nothing."""
        self._bind(model)
        with batch_statistics(model, keep_running=True):
            return model(x)

    def reset(self) -> None:
        """Put every adapted tensor back as it was before the first batch."""
        if self.model is None:
            return
        restore_tensors_(self.adapted_tensors(self.model), self._saved)
        self.reset_state()

    def bind(self, model: nn.Module) -> None:
        """Bind ``model`` now (the first ``adapt`` does it otherwise): check it, save what the
        method may write, build its optimizer."""
        self._bind(model)

    def _bind(self, model: nn.Module) -> None:
        if self.model is None:
            self.setup(model)
            self.model = model
            self._norms = list(batch_norms(model).values())
            self._saved = snapshot_tensors(self.adapted_tensors(model))
        elif self.model is not model:
            raise NeuroplasticError("this adapter is bound to another model: make one adapter per model")

    def _too_small(self, x: Tensor) -> bool:
        per_channel = x.shape[0] * (x[0, 0].numel() if x.dim() > 2 else 1)
        single = x.shape[0] < 2 and any(isinstance(m, nn.BatchNorm1d) for m in self._norms)
        return bool(self._norms) and (single or per_channel < 2)


@contextmanager
def batch_statistics(model: nn.Module, *, keep_running: bool) -> Iterator[None]:
    """Eval mode, except BatchNorm layers normalise with the batch's own statistics; with
    ``keep_running`` their running estimates (and counters) are left untouched."""
    modes = {m: m.training for m in model.modules()}
    norms = list(batch_norms(model).values())
    saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False)} for m in norms] if keep_running else []
    model.eval()
    for m in norms:
        m.train()
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode
        with torch.no_grad():
            for m, buffers in zip(norms, saved, strict=False):
                for k, b in m.named_buffers(recurse=False):
                    b.copy_(buffers[k])


@contextmanager
def mixed_statistics(model: nn.Module, *, prior: float) -> Iterator[None]:
    """Eval mode, and every BatchNorm normalises with prior * (running statistics) +
    (1 - prior) * (this input's statistics; unbiased variance), Schneider et al.'s (NeurIPS
    2020) mix. The running buffers are the same afterwards, bit for bit."""
    modes = {m: m.training for m in model.modules()}
    norms = list(batch_norms(model).values())
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]  # type: ignore[union-attr]

    def mix(module: nn.Module, args: tuple[Tensor, ...], source: tuple[Tensor, Tensor]) -> None:
        x = args[0]
        dims = [d for d in range(x.dim()) if d != 1]
        mean, var = x.mean(dims), x.var(dims, unbiased=True)
        module.running_mean.copy_(prior * source[0] + (1 - prior) * mean)  # type: ignore[union-attr,operator]
        module.running_var.copy_(prior * source[1] + (1 - prior) * var)  # type: ignore[union-attr,operator]

    handles = [m.register_forward_pre_hook(lambda mod, args, src=src: mix(mod, args, src))
               for m, src in zip(norms, saved, strict=True)]
    model.eval()
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
        with torch.no_grad():
            for m, (mean, var) in zip(norms, saved, strict=True):
                m.running_mean.copy_(mean)  # type: ignore[union-attr,operator]
                m.running_var.copy_(var)  # type: ignore[union-attr,operator]


def require_norms(model: nn.Module, method: str, *, kinds: tuple[type, ...] = BATCH_NORMS) -> None:
    """One line naming what ``method`` needs when the model has no normalisation layer."""
    if not any(isinstance(m, kinds) for m in model.modules()):
        names = ", ".join(k.__name__ for k in kinds)
        raise NeuroplasticError(f"{method} adapts normalisation layers, and this model has none ({names})")
