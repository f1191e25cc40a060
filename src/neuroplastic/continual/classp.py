"""CLASSP: continual learning through adjustment suppression and sparsity promotion
(Ludwig 2024, arXiv 2405.09637)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuroplastic.checks import require_in, require_positive
from neuroplastic.continual.base import ContinualMethod
from neuroplastic.registry import register


@register("classp", kind="continual")
class CLASSP(ContinualMethod):
    """CLASSP as the paper states it (Ludwig 2024): from the second task on, each weight's
    step is divided by (eps + sum_{k<t} |g_k|^p)^(1/p), the sum over the gradients of every
    step of the past tasks, and a weight moves only if g^2 > ``threshold`` (an element-wise
    gate). The first task trains plainly (the reference's own protocol, ``experiment_CV.py``,
    trains its first task with scaling off); with p = 2 and threshold 0 the scaling is
    AdaGrad's, frozen at each task's start. It transforms the gradient before the
    optimizer's step: use plain SGD (momentum 0) to get the paper's update
    w <- w - lr g / (eps + sum |g_k|^p)^(1/p). Weights whose past gradients were all tiny
    take steps of up to lr g / eps^(1/p): keep eps large enough for the learning rate.

    ``reference=True`` reproduces the reference code (``CLASSP.py``) instead: the gate is one
    bool per tensor (``(grad ** 2).any() > threshold``, so any threshold in [0, 1) passes and
    >= 1 never updates), the accumulator is sum |g| whatever p (the ``** power`` result is
    discarded) and includes the current step; only the root 1/p uses p.

    Args:
        threshold: gate on g^2 (paper's optimum in the reference scripts: 0.99 with p = 1).
        power: p >= 1.
        eps: added to the accumulator.
        reference: the reference code's behaviour.
    """

    name = "classp"

    def __init__(self, *, threshold: float = 0.0, power: float = 1.0, eps: float = 1e-5,
                 reference: bool = False) -> None:
        self.threshold = require_in("threshold", threshold, 0.0, float("inf"), high_open=True)
        self.power = require_in("power", power, 1.0, float("inf"), high_open=True)
        self.eps = require_positive("eps", eps)
        self.reference = reference
        self.accumulated: dict[str, Tensor] = {}  # over past tasks (reference: every step)
        self.current: dict[str, Tensor] = {}  # this task's steps
        self.tasks_done = 0

    def scale(self, name: str, grad: Tensor) -> Tensor:
        """The transformed gradient of parameter ``name`` (updates the accumulator)."""
        acc = self.accumulated.get(name)
        if acc is None:
            acc = torch.zeros_like(grad)
        if self.reference:
            acc = acc + grad.abs()  # the current step counts; p is ignored here
            gate = (grad ** 2).any() > self.threshold  # True (= 1) > threshold: per tensor
            self.accumulated[name] = acc
            if not bool(gate):
                return torch.zeros_like(grad)
            return grad / (self.eps + acc) ** (1 / self.power)
        self.current[name] = self.current.get(name, torch.zeros_like(grad)) + grad.abs() ** self.power
        if self.tasks_done == 0:
            return grad
        scaled = grad / (self.eps + acc) ** (1 / self.power)
        return torch.where(grad ** 2 > self.threshold, scaled, torch.zeros_like(grad))

    def after_task(self, model: nn.Module, experience: object) -> None:  # type: ignore[override]
        if not self.reference:
            for name, total in self.current.items():
                self.accumulated[name] = self.accumulated.get(name, torch.zeros_like(total)) + total
            self.current = {}
        self.tasks_done += 1

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        for name, param in model.named_parameters():
            if param.grad is not None:
                param.grad.copy_(self.scale(name, param.grad))
