"""U-LiRA: the per-example likelihood-ratio membership attack on unlearning.

Hayes et al. 2024, "Inexact Unlearning Needs More Careful Evaluations to Avoid a False
Sense of Privacy" (arXiv 2403.01218), built on LiRA (Carlini et al., S&P 2022).

Shadow models are trained on random halves of a pool (the training data plus held-out
candidates), every pool sample in exactly half of them. The unlearning method is applied
to every shadow, removing the candidates it trained on. For each candidate, the
logit-scaled confidence phi = log p_y - log(1 - p_y) of the shadows that saw it and then
unlearned it ("in") and of those that never saw it ("out") are fitted by Gaussians; the
model under test scores log N(phi; in) - log N(phi; out). Positives are the candidates
that model saw and unlearned, negatives those it never saw: AUC 0.5 is a model that
looks as if it never saw the forgotten data (a retrained model scores about 0.5).

Choices stated: fewer than 64 shadows use one pooled variance for all examples (the
"fixed variance" LiRA recommends for few shadows), means stay per example.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from neuroplastic.data.splits import loader, subset
from neuroplastic.errors import NeuroplasticError
from neuroplastic.evaluate.outputs import collect

#: Below this many shadow models, one pooled variance replaces the per-example ones.
PER_EXAMPLE_VARIANCE_FROM = 64

Unlearn = Callable[[nn.Module, TensorDataset, TensorDataset, TensorDataset], None]
"""Applies an unlearning method in place: ``unlearn(model, forget, retain, trained)``, where
``trained`` is everything the model was trained on, in pool order (a method's "full" data)."""


def logit_confidence(model: nn.Module, dataset: TensorDataset, *, batch_size: int = 256) -> Tensor:
    """phi = log p_y - log(1 - p_y) per sample, computed stably from the logits as
    z_y - logsumexp_{j != y} z_j (Carlini et al.'s logit scaling)."""
    outputs = collect(model, loader(dataset, batch_size=batch_size))
    logits = outputs.logits.double()
    true = logits.gather(1, outputs.labels[:, None]).squeeze(1)
    others = logits.scatter(1, outputs.labels[:, None], -math.inf)
    return (true - torch.logsumexp(others, dim=1)).float()


def balanced_memberships(samples: int, shadows: int, *, seed: int) -> Tensor:
    """A (shadows, samples) bool matrix in which every sample is in exactly ``shadows // 2``
    shadows, chosen at random per sample."""
    if shadows < 2 or shadows % 2:
        raise NeuroplasticError(f"shadows must be an even number >= 2, got {shadows}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(samples, shadows, generator=generator).argsort(dim=1)
    return (order < shadows // 2).t().contiguous()


@dataclass
class ShadowSet:
    """Shadow models and which pool samples each was trained on."""

    models: list[nn.Module]
    members: Tensor  # (shadows, pool size) bool
    seconds: float = 0.0


def train_shadows(pool: TensorDataset, build: Callable[[int], nn.Module],
                  train: Callable[[nn.Module, TensorDataset], None], *, shadows: int = 16,
                  seed: int = 0, progress: Callable[[int, int], None] | None = None) -> ShadowSet:
    """Train ``shadows`` models, model ``s`` = ``build(s)`` trained by ``train`` on its half of
    ``pool``; ``progress(done, total)`` is called after each."""
    import time

    start = time.perf_counter()
    members = balanced_memberships(len(pool), shadows, seed=seed)
    models = []
    for s in range(shadows):
        model = build(s)
        train(model, subset(pool, members[s].nonzero().flatten()))
        models.append(model.eval())
        if progress is not None:
            progress(s + 1, shadows)
    return ShadowSet(models=models, members=members, seconds=time.perf_counter() - start)


def unlearned_shadow_scores(shadows: ShadowSet, pool: TensorDataset, candidates: Tensor,
                            unlearn: Unlearn) -> Tensor:
    """(shadows, candidates) phi of every shadow after it unlearned the candidates it had
    trained on (its retain set: the rest of its half). Shadows are copied, not changed."""
    import copy

    candidate_set = torch.zeros(len(pool), dtype=torch.bool)
    candidate_set[candidates] = True
    scores = []
    for model, members in zip(shadows.models, shadows.members, strict=True):
        shadow = copy.deepcopy(model)
        forget = members & candidate_set
        if bool(forget.any()):
            unlearn(shadow, subset(pool, forget.nonzero().flatten()),
                    subset(pool, (members & ~candidate_set).nonzero().flatten()),
                    subset(pool, members.nonzero().flatten()))
        scores.append(logit_confidence(shadow, subset(pool, candidates)))
    return torch.stack(scores)


def likelihood_ratio(target: Tensor, shadow_scores: Tensor, inside: Tensor, *,
                     fixed_variance: bool) -> Tensor:
    """log N(target; mu_in, s_in) - log N(target; mu_out, s_out) per candidate, with
    ``inside`` (shadows, candidates) marking the shadows that trained on (and then
    unlearned) each candidate."""
    scores, inside = shadow_scores.double(), inside.bool()
    n_in, n_out = inside.sum(0), (~inside).sum(0)
    if bool((n_in < 2).any() or (n_out < 2).any()):
        raise NeuroplasticError("every candidate needs at least two 'in' and two 'out' shadows")
    mu_in = (scores * inside).sum(0) / n_in
    mu_out = (scores * ~inside).sum(0) / n_out
    var_in = ((scores - mu_in) ** 2 * inside).sum(0) / (n_in - 1)
    var_out = ((scores - mu_out) ** 2 * ~inside).sum(0) / (n_out - 1)
    if fixed_variance:
        var_in = torch.full_like(var_in, float(var_in.mean()))
        var_out = torch.full_like(var_out, float(var_out.mean()))
    var_in, var_out = var_in.clamp_min(1e-8), var_out.clamp_min(1e-8)
    t = target.double()

    def log_normal(mu: Tensor, var: Tensor) -> Tensor:
        return -0.5 * (torch.log(2 * math.pi * var) + (t - mu) ** 2 / var)

    return (log_normal(mu_in, var_in) - log_normal(mu_out, var_out)).float()


def attack_metrics(scores: Tensor, is_member: Tensor) -> dict[str, float]:
    """AUC and the true-positive rate at 1% and 5% false-positive rate of ``scores``
    (higher = member) against ``is_member``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y, s = is_member.numpy().astype(int), scores.double().numpy()
    if y.min() == y.max():
        raise NeuroplasticError("the attack needs both members and non-members")
    fpr, tpr, _ = roc_curve(y, s)
    return {"auc": float(roc_auc_score(y, s)),
            "tpr_at_1fpr": float(np.interp(0.01, fpr, tpr)),
            "tpr_at_5fpr": float(np.interp(0.05, fpr, tpr))}


@dataclass
class ULiRAResult:
    """Attack figures on one model under test, the per-candidate scores, and seconds spent
    unlearning the shadows."""

    auc: float
    tpr_at_1fpr: float
    tpr_at_5fpr: float
    scores: Tensor
    seconds: float

    def metrics(self) -> dict[str, float]:
        return {"ulira.auc": self.auc, "ulira.tpr_at_1fpr": self.tpr_at_1fpr,
                "ulira.tpr_at_5fpr": self.tpr_at_5fpr, "ulira.seconds": self.seconds}


def ulira(model: nn.Module, *, shadows: ShadowSet, pool: TensorDataset, candidates: Tensor,
          forgotten: Tensor, unlearn: Unlearn) -> ULiRAResult:
    """U-LiRA on ``model`` (already unlearned by the same method that ``unlearn`` applies
    to the shadows).

    Args:
        pool: the data the shadows were drawn from (training data + held-out candidates).
        candidates: pool indices of the attacked samples.
        forgotten: bool per candidate, True where ``model`` trained on it and then unlearned
            it (the positives); False where it never saw it.
        unlearn: the unlearning method, applied to a copy of every shadow.
    """
    import time

    if len(forgotten) != len(candidates):
        raise NeuroplasticError("forgotten must mark every candidate")
    start = time.perf_counter()
    shadow_scores = unlearned_shadow_scores(shadows, pool, candidates, unlearn)
    seconds = time.perf_counter() - start
    inside = shadows.members[:, candidates]
    target = logit_confidence(model, subset(pool, candidates))
    fixed = len(shadows.models) < PER_EXAMPLE_VARIANCE_FROM
    scores = likelihood_ratio(target, shadow_scores, inside, fixed_variance=fixed)
    figures = attack_metrics(scores, forgotten)
    return ULiRAResult(scores=scores, seconds=seconds, **figures)
