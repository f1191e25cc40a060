"""Synaptic intelligence (Zenke, Poole & Ganguli, ICML 2017)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuroplastic.checks import require_in, require_positive
from neuroplastic.continual.base import ContinualMethod
from neuroplastic.data.streams import Experience
from neuroplastic.registry import register
from neuroplastic.types import Scores


@register("si", kind="continual")
class SI(ContinualMethod):
    """SI (Zenke et al. 2017): along training, every weight accumulates its contribution to
    the drop of the loss, omega += -g * delta (g the gradient of the UNREGULARISED loss, as
    the original code ``unreg_grads``; delta the actual update). At the end of a task,
    Omega += relu(omega / ((theta_end - theta_start)^2 + xi)) (the original's relu on the
    sum), omega is reset; later tasks add c * sum_i Omega_i (theta_i - theta~_i)^2, theta~
    the weights at the last task's end.

    Args:
        c: strength of the penalty (>= 0).
        xi: damping xi > 0.
    """

    name = "si"

    def __init__(self, *, c: float = 1.0, xi: float = 1e-3) -> None:
        self.c = require_in("c", c, 0.0, float("inf"), high_open=True)
        self.xi = require_positive("xi", xi)
        self.omega: Scores = {}  # running path integral of this task
        self.importance: Scores = {}  # Omega
        self.anchor: Scores = {}  # theta~
        self.start: Scores = {}
        self._before: Scores = {}
        self._unreg: Scores = {}

    @staticmethod
    def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def before_task(self, model: nn.Module, experience: Experience) -> None:  # type: ignore[override]
        params = self._trainable(model)
        self.start = {n: p.detach().clone() for n, p in params.items()}
        self.omega = {n: torch.zeros_like(p) for n, p in params.items()}

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, loss: Tensor) -> Tensor:
        if not self.importance or self.c == 0:
            return loss
        params = self._trainable(model)
        penalty = sum((self.importance[n] * (params[n] - self.anchor[n]) ** 2).sum() for n in self.importance)
        return loss + self.c * penalty

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        params = self._trainable(model)
        self._before = {n: p.detach().clone() for n, p in params.items()}
        self._unreg = {}
        for name, param in params.items():
            if param.grad is None:
                continue
            grad = param.grad.detach().clone()
            if name in self.importance and self.c:
                # the penalty's own gradient, 2 c Omega (theta - theta~), taken back out
                grad -= 2 * self.c * self.importance[name] * (param.detach() - self.anchor[name])
            self._unreg[name] = grad

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        for name, param in self._trainable(model).items():
            if name in self._unreg:
                self.omega[name] -= self._unreg[name] * (param.detach() - self._before[name])

    @torch.no_grad()
    def after_task(self, model: nn.Module, experience: Experience) -> None:  # type: ignore[override]
        for name, param in self._trainable(model).items():
            moved = (param.detach() - self.start[name]) ** 2
            gain = torch.relu(self.omega[name] / (moved + self.xi))
            self.importance[name] = self.importance.get(name, torch.zeros_like(gain)) + gain
            self.anchor[name] = param.detach().clone()
