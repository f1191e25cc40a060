"""Robustness of any classifier: input noise, FGSM and PGD (L-inf), with checks that the
numbers are not an artefact of gradient masking.

- FGSM (Goodfellow et al. 2015): x' = clip(x + eps * sign(grad_x L)).
- PGD (Madry et al. 2018): ``steps`` signed-gradient steps of size ``step_size``
  (default 2.5 * eps / steps), each projected back into the eps-ball around x and the
  input bounds, from a uniformly random start in the ball; with ``restarts`` > 1 a sample
  counts as robust only if every restart fails to flip it.
- Gaussian / uniform noise: x + sigma * N(0, 1) or x + U(-sigma, sigma), clipped, seeded.

A stronger attack must not do worse than a weaker one and large budgets must break any
model: :func:`masking_warnings` says so in words when PGD scores above FGSM or accuracy
does not fall towards 0 as eps grows -- the usual signs of gradient masking
(Athalye et al. 2018), under which the figures overstate robustness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from neuroplastic.batches import eval_mode, iter_batches, logits_of, model_device
from neuroplastic.errors import NeuroplasticError
from neuroplastic.loop import BatchLoss, ProgressFn
from neuroplastic.types import Data

Bounds = tuple[float, float] | None


def _clip(x: Tensor, bounds: Bounds) -> Tensor:
    return x if bounds is None else x.clamp(bounds[0], bounds[1])


def _input_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.enable_grad():  # also when called under no_grad
        x = x.detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(logits_of(model(x)), y)
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, bounds: Bounds = (0.0, 1.0)) -> Tensor:
    """The FGSM adversarial inputs for ``(x, y)`` (model in eval mode, inputs clipped to
    ``bounds``)."""
    if eps < 0:
        raise NeuroplasticError(f"eps must be >= 0, got {eps}")
    with eval_mode(model):
        grad = _input_gradient(model, x, y)
    return _clip(x + eps * grad.sign(), bounds).detach()


def pgd(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int = 20,
        step_size: float | None = None, restarts: int = 1, bounds: Bounds = (0.0, 1.0),
        seed: int = 0) -> Tensor:
    """The PGD (L-inf) adversarial inputs for ``(x, y)``: per sample, the first restart that
    flips the prediction, else the last one's result."""
    if eps < 0 or steps < 1 or restarts < 1:
        raise NeuroplasticError("PGD needs eps >= 0, steps >= 1 and restarts >= 1")
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    generator = torch.Generator(device=x.device).manual_seed(seed)
    best = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    with eval_mode(model):
        for _ in range(restarts):
            start = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * eps
            adv = _clip(x + start, bounds)
            for _ in range(steps):
                grad = _input_gradient(model, adv, y)
                adv = adv + alpha * grad.sign()
                adv = _clip(torch.min(torch.max(adv, x - eps), x + eps), bounds).detach()
            with torch.no_grad():
                wrong = logits_of(model(adv)).argmax(-1) != y
            best[~fooled] = adv[~fooled]  # a sample keeps the first restart that fooled it
            fooled |= wrong
    return best.detach()


def fgsm_training_loss(*, eps: float, mix: float = 0.5, bounds: Bounds = (0.0, 1.0)) -> BatchLoss:
    """FGSM adversarial training (Goodfellow et al. 2015): the batch loss
    ``mix * CE(x) + (1 - mix) * CE(fgsm(x))``, the adversarial inputs made at the current
    weights (in eval mode) for every batch; ``mix`` 0.5 as in the paper. A ``batch_loss`` for
    :func:`neuroplastic.loop.fit`."""
    if eps < 0 or not 0 <= mix <= 1:
        raise NeuroplasticError(f"FGSM training needs eps >= 0 and mix in [0, 1], got {eps}, {mix}")

    def loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        adv = fgsm(model, x, y, eps=eps, bounds=bounds)
        clean = nn.functional.cross_entropy(logits_of(model(x)), y)
        return mix * clean + (1 - mix) * nn.functional.cross_entropy(logits_of(model(adv)), y)

    return loss


def _accuracy_under(model: nn.Module, data: Data, perturb) -> float:  # type: ignore[no-untyped-def]
    correct = total = 0
    device = model_device(model)
    for x, y in iter_batches(data, device=device, name="robustness"):
        adv = perturb(x, y)
        with torch.no_grad(), eval_mode(model):
            correct += int((logits_of(model(adv)).argmax(-1) == y).sum())
        total += len(y)
    if total == 0:
        raise NeuroplasticError("cannot measure robustness: the data is empty")
    return correct / total


def noise_accuracy(model: nn.Module, data: Data, *, sigma: float, kind: str = "gaussian",
                   bounds: Bounds = (0.0, 1.0), seed: int = 0) -> float:
    """Accuracy under additive ``kind`` ("gaussian" or "uniform") noise of scale ``sigma``."""
    if kind not in ("gaussian", "uniform"):
        raise NeuroplasticError(f"noise kind must be gaussian or uniform, got {kind!r}")
    generator = torch.Generator().manual_seed(seed)

    def perturb(x: Tensor, y: Tensor) -> Tensor:
        raw = torch.randn(x.shape, generator=generator) if kind == "gaussian" else \
            torch.rand(x.shape, generator=generator) * 2 - 1
        return _clip(x + sigma * raw.to(x.device), bounds)

    return _accuracy_under(model, data, perturb)


def fgsm_accuracy(model: nn.Module, data: Data, *, eps: float, bounds: Bounds = (0.0, 1.0)) -> float:
    """Accuracy on FGSM inputs of budget ``eps``."""
    return _accuracy_under(model, data, lambda x, y: fgsm(model, x, y, eps=eps, bounds=bounds))


def pgd_accuracy(model: nn.Module, data: Data, *, eps: float, steps: int = 20, restarts: int = 1,
                 bounds: Bounds = (0.0, 1.0), seed: int = 0) -> float:
    """Accuracy on PGD inputs of budget ``eps``."""
    return _accuracy_under(model, data, lambda x, y: pgd(model, x, y, eps=eps, steps=steps,
                                                          restarts=restarts, bounds=bounds, seed=seed))


@dataclass
class Robustness:
    """Accuracy per budget: ``fgsm[eps]``, ``pgd[eps]``, ``noise[sigma]`` (Gaussian)."""

    clean: float
    fgsm: dict[float, float] = field(default_factory=dict)
    pgd: dict[float, float] = field(default_factory=dict)
    noise: dict[float, float] = field(default_factory=dict)
    uniform: dict[float, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat keys for metrics.json: ``robust.fgsm.<eps>``, ``robust.pgd.<eps>``,
        ``robust.noise.<sigma>``, ``robust.uniform.<sigma>``, ``robust.clean``."""
        out = {"robust.clean": self.clean}
        for kind in ("fgsm", "pgd", "noise", "uniform"):
            out.update({f"robust.{kind}.{level:g}": acc for level, acc in getattr(self, kind).items()})
        return out


def robustness(model: nn.Module, data: Data, *, epsilons: Sequence[float] = (0.05, 0.1, 0.2, 0.3),
               sigmas: Sequence[float] = (0.1, 0.2, 0.3, 0.5), pgd_steps: int = 20, pgd_restarts: int = 2,
               bounds: Bounds = (0.0, 1.0), seed: int = 0, progress: ProgressFn | None = None) -> Robustness:
    """Clean, FGSM, PGD (with restarts) and Gaussian / uniform noise accuracy of ``model``;
    ``progress(done, total)`` after each of the measurements, the PGD ones weighted by their
    passes over ``data`` (steps times restarts)."""
    pgd_cost = pgd_steps * pgd_restarts
    total = 1 + len(epsilons) * (1 + pgd_cost) + 2 * len(sigmas)
    done = 0

    def advance(passes: int) -> None:
        nonlocal done
        done += passes
        if progress is not None:
            progress(done, total)

    result = Robustness(clean=noise_accuracy(model, data, sigma=0.0, bounds=bounds))
    advance(1)
    for eps in epsilons:
        result.fgsm[eps] = fgsm_accuracy(model, data, eps=eps, bounds=bounds)
        advance(1)
        result.pgd[eps] = pgd_accuracy(model, data, eps=eps, steps=pgd_steps, restarts=pgd_restarts,
                                       bounds=bounds, seed=seed)
        advance(pgd_cost)
    for sigma in sigmas:
        result.noise[sigma] = noise_accuracy(model, data, sigma=sigma, bounds=bounds, seed=seed)
        result.uniform[sigma] = noise_accuracy(model, data, sigma=sigma, kind="uniform", bounds=bounds,
                                               seed=seed)
        advance(2)
    return result


def masking_warnings(result: Robustness, *, tolerance: float = 0.01, floor: float = 0.1) -> list[str]:
    """Sentences naming the signs of gradient masking: PGD above FGSM at some eps (a stronger
    attack doing worse), or accuracy at the largest eps still above ``floor``."""
    notes = []
    for eps, acc in result.pgd.items():
        if eps in result.fgsm and acc > result.fgsm[eps] + tolerance:
            notes.append(f"PGD scores above FGSM at eps {eps:g} ({acc:.3f} vs {result.fgsm[eps]:.3f}): "
                         "the gradients may be masked, and the robustness figures overstated")
    if result.pgd:
        largest = max(result.pgd)
        if result.pgd[largest] > floor:
            notes.append(f"accuracy under PGD at the largest eps ({largest:g}) is still "
                         f"{result.pgd[largest]:.3f}: try larger eps; if it never falls, suspect masking")
    return notes
