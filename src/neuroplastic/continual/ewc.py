"""Elastic weight consolidation, separate or online (Kirkpatrick et al. 2017; Schwarz et al. 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuroplastic.checks import require_choice, require_in, require_positive
from neuroplastic.consolidate import ProximalStep, RunningScores, anchor, quadratic_penalty
from neuroplastic.continual.base import ContinualMethod
from neuroplastic.data.splits import loader
from neuroplastic.data.streams import Experience
from neuroplastic.distributed import rank_batches
from neuroplastic.errors import NeuroplasticError
from neuroplastic.importance.fisher import FISHER_MODES, Fisher
from neuroplastic.registry import register
from neuroplastic.types import Scores


@register("ewc", kind="continual", needs=('labels', 'lr'))
class EWC(ContinualMethod):
    """EWC (Kirkpatrick et al., PNAS 2017): after each task, the diagonal Fisher F and the
    weights theta* are kept; later tasks minimise L + (lambda/2) sum_k sum_i F_k,i
    (theta_i - theta*_k,i)^2 (with the 1/2 of the paper; Avalanche and mammoth drop it).

    ``mode="online"`` (Schwarz et al. 2018): one running Fisher F* <- gamma F* + F_t and one
    anchor (the latest weights); the penalty is (lambda/2) sum_i F*_i (theta_i - theta*_i)^2,
    Schwarz et al.'s form. Van de Ven's code multiplies the penalty by gamma once more
    (gamma (lambda/2) F* ...); the two are equal at gamma = 1 (its default and ours), and at
    other gamma ours equals van de Ven's with lambda / gamma. ``fisher`` chooses the
    estimator: ``"batch_sq"`` (squared batch-mean gradients, Avalanche), ``"per_sample"``
    (empirical, mammoth) or ``"exact"`` (softmax-weighted over labels, van de Ven). Every
    estimator differentiates the stream's own training loss (``Experience.loss_fn``): in
    task-IL the softmax runs over the task's output units only, as the training loss's does,
    so a Fisher never anchors the units of tasks not yet seen. ``proximal=True`` replaces the penalty's
    gradient by its exact proximal step after each update, theta <- (theta + lr lambda
    sum_k F_k theta*_k) / (1 + lr lambda sum_k F_k), which cannot diverge for large lambda
    (plain SGD with the penalty gradient does once lr lambda F > 2). It needs the optimizer's
    ``lr``: the continual runner passes its recipe's (:meth:`set_learning_rate`); in your
    own loop pass ``lr=...``. The defaults (lambda 1e5, proximal) were chosen on validation
    accuracy over the benchmark's streams with the task-IL Fisher (benchmarks/continual.py);
    with the plain gradient (``proximal=False``) such a lambda diverges at lr 0.01.

    Args:
        lam: lambda >= 0 (0 is finetuning, bit for bit).
        mode: ``"separate"`` or ``"online"``.
        gamma: online decay in [0, 1].
        fisher: the Fisher estimator.
        fisher_batch_size: batch size of the Fisher pass (batch_sq depends on it).
        proximal, lr: see above.
    """

    def __init__(self, *, lam: float = 1e5, mode: str = "separate", gamma: float = 1.0,
                 fisher: str = "batch_sq", fisher_batch_size: int = 32, proximal: bool = True,
                 lr: float | None = None) -> None:
        self.lam = require_in("lam", lam, 0.0, float("inf"), high_open=True)
        self.mode = require_choice("mode", mode, ("separate", "online"))
        self.gamma = require_in("gamma", gamma, 0.0, 1.0)
        self.estimator = Fisher(mode=require_choice("fisher", fisher, FISHER_MODES))  # type: ignore[arg-type]
        if fisher_batch_size < 1:
            raise NeuroplasticError(f"fisher_batch_size must be >= 1, got {fisher_batch_size}")
        self.fisher_batch_size = fisher_batch_size
        self.proximal = proximal
        self.lr = require_positive("lr", lr) if lr is not None else None
        self.terms: list[tuple[Scores, Scores]] = []  # (Fisher, anchor) per task, or one (online)
        self.running = RunningScores(decay=self.gamma)
        self._proximal = ProximalStep()

    def penalty(self, model: nn.Module) -> Tensor:
        """(lambda / 2) sum_k sum_i F_k,i (theta_i - theta*_k,i)^2."""
        total = sum((quadratic_penalty(model, f, a) for f, a in self.terms), torch.zeros(()))
        return 0.5 * self.lam * total

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, loss: Tensor) -> Tensor:
        if not self.terms or self.lam == 0 or self.proximal:
            return loss
        return loss + self.penalty(model).to(loss.device)

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        if not self.proximal or not self.terms or self.lam == 0:
            return
        if self.lr is None:
            raise NeuroplasticError("the proximal EWC step needs the learning rate: pass lr=... "
                                    "(the continual runner passes its recipe's)")
        self._proximal.apply_(model, self.terms, scale=self.lr * self.lam)

    def set_learning_rate(self, lr: float) -> None:
        if self.lr is None:
            self.lr = lr

    def after_task(self, model: nn.Module, experience: Experience) -> None:  # type: ignore[override]
        data = loader(experience.train, batch_size=self.fisher_batch_size)
        fisher = self.estimator.estimate(model, rank_batches(data), loss_fn=experience.loss_fn)
        weights = anchor(model)
        if self.mode == "online":
            self.terms = [(self.running.update(fisher), weights)]
        else:
            self.terms.append((fisher, weights))
        self._proximal.reset()
