"""A generic seam for injecting failures: a forward hook on the model that raises at its
n-th call. The contract tests use it for every method alike, never by method name."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode


class InjectedFailure(RuntimeError):
    """The failure the seam raises."""


@dataclass
class ForwardLog:
    """Forward calls seen, and the first one made after a parameter was written in place."""

    calls: int = 0
    first_after_write: int | None = None


@contextmanager
def forward_seam(model: nn.Module, *, fail_at: int | None = None) -> Iterator[ForwardLog]:
    """Count the forward calls of ``model`` (and of copies made of it while the seam is on,
    since a deep copy keeps the hook) and raise :class:`InjectedFailure` at call ``fail_at``.
    Records the first call made after any of ``model``'s parameters changed in place."""
    log = ForwardLog()
    params = list(model.parameters())
    versions = [p._version for p in params]

    def hook(module: nn.Module, args: object) -> None:
        log.calls += 1
        if log.first_after_write is None and any(
                p._version != v for p, v in zip(params, versions, strict=True)):
            log.first_after_write = log.calls
        if log.calls == fail_at:
            raise InjectedFailure(f"injected failure at forward call {log.calls}")

    handle = model.register_forward_pre_hook(hook)
    try:
        yield log
    finally:
        handle.remove()


class _WriteSeam(TorchFunctionMode):
    def __init__(self, params: list[Tensor], fail_at: int | None) -> None:
        super().__init__()
        self.ids = {id(p) for p in params}
        self.fail_at = fail_at
        self.writes = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        first = args[0] if args else None
        targets = first if isinstance(first, (list, tuple)) else [first]
        in_place = (name.endswith("_") and not name.startswith("__")) or name == "__setitem__" \
            or (name.startswith("__i") and name not in ("__index__", "__int__", "__invert__"))
        if in_place and any(id(t) in self.ids for t in targets):
            self.writes += 1
            if self.writes == self.fail_at:  # once: the rollback writes too
                raise InjectedFailure(f"injected failure after parameter write {self.writes}")
        return out


@contextmanager
def write_seam(model: nn.Module, *, fail_at: int | None = None) -> Iterator[_WriteSeam]:
    """Count in-place writes to ``model``'s parameters (``p.mul_``, ``p.copy_``, an
    optimizer's ``_foreach_*_`` / fused step) and raise :class:`InjectedFailure` right
    after write ``fail_at`` has happened, so the model is really half-modified."""
    seam = _WriteSeam(list(model.parameters()), fail_at)
    with seam:
        yield seam
