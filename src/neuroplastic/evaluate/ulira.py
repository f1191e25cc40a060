"""U-LiRA: the per-example likelihood-ratio membership attack on unlearning.

Hayes et al. 2024, "Inexact Unlearning Needs More Careful Evaluations to Avoid a False
Sense of Privacy" (arXiv 2403.01218), built on LiRA (Carlini et al., S&P 2022).

Shadow models are trained on halves of a pool (the training data plus held-out samples):
shadows come in complementary pairs, so every pool sample is in exactly half of them and
every shadow holds exactly half of the attacked candidates. The unlearning method is
applied to every shadow, removing the candidates it trained on: every model unlearns a
request of the same size. For each candidate, the logit-scaled confidence
phi = log p_y - log(1 - p_y) of the shadows that saw it and then unlearned it ("in") and of
those that never saw it ("out") are fitted by Gaussians, and a model scores
log N(phi; in) - log N(phi; out). Positives are the candidates a model saw and unlearned,
negatives those it never saw: AUC 0.5 is a model that looks as if it never saw the
forgotten data.

As Hayes et al., the models under attack are trained exactly as the shadows: each shadow in
turn is the target, attacked with the statistics of the others (leave-one-out over the
shadow population), and AUC and TPR at 1% / 5% FPR are reported as mean and standard
deviation over the targets. "Unlearning" that changes nothing scores exactly what the
original scores.

Variance (``variance``): ``"pooled"`` (default below 64 shadows) is the mean of the
per-example variances, one for all examples; ``"global"`` is LiRA's fixed variance as its
code computes it (the variance of all in- or out-scores of all examples together, between-
example spread included); ``"per_example"`` keeps one variance per example (LiRA's choice
with many shadows). Means stay per example.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from neuroplastic import distributed
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


def balanced_memberships(samples: int, shadows: int, *, seed: int,
                         strata: Tensor | None = None) -> Tensor:
    """A (shadows, samples) bool matrix of complementary pairs: shadows 2k and 2k + 1 split
    every stratum (default: all samples) into two random halves, one each. Every sample is in
    exactly ``shadows // 2`` shadows and every shadow holds half of every stratum (the
    larger half alternating between pairs when a stratum's size is odd).

    Args:
        strata: an int label per sample (e.g. 1 for attacked candidates, 0 for the rest).
    """
    if shadows < 2 or shadows % 2:
        raise NeuroplasticError(f"shadows must be an even number >= 2, got {shadows}")
    generator = torch.Generator().manual_seed(seed)
    labels = torch.zeros(samples, dtype=torch.long) if strata is None else strata.long()
    members = torch.zeros(shadows, samples, dtype=torch.bool)
    for pair in range(shadows // 2):
        for value in labels.unique().tolist():
            rows = (labels == value).nonzero().flatten()
            rows = rows[torch.randperm(len(rows), generator=generator)]
            half = (len(rows) + pair % 2) // 2
            members[2 * pair, rows[:half]] = True
            members[2 * pair + 1, rows[half:]] = True
    return members


@dataclass
class ShadowSet:
    """Shadow models and which pool samples each was trained on."""

    models: list[nn.Module | None]  # None: a shadow another rank trained (under torchrun)
    members: Tensor  # (shadows, pool size) bool
    seconds: float = 0.0


def train_shadows(pool: TensorDataset, build: Callable[[int], nn.Module],
                  train: Callable[[nn.Module, TensorDataset], None], *, shadows: int = 16,
                  seed: int = 0, candidates: Tensor | None = None,
                  progress: Callable[[int, int], None] | None = None) -> ShadowSet:
    """Train ``shadows`` models, model ``s`` = ``build(s)`` trained by ``train`` on its half of
    ``pool`` (every shadow holds exactly half of ``candidates``, pool indices, so every
    request is the same size); ``progress(done, total)`` is called after each.

    In a process group the shadows are dealt out round-robin: each rank trains its own by
    itself (:func:`neuroplastic.distributed.alone`) and holds ``None`` for the others'."""
    import time

    start = time.perf_counter()
    strata = None
    if candidates is not None:
        strata = torch.zeros(len(pool), dtype=torch.long)
        strata[candidates] = 1
    members = balanced_memberships(len(pool), shadows, seed=seed, strata=strata)
    models: list[nn.Module | None] = []
    for s in range(shadows):
        if not distributed.owns(s):
            models.append(None)
            continue
        with distributed.alone():
            model = build(s)
            train(model, subset(pool, members[s].nonzero().flatten()))
        models.append(model.eval())
        if progress is not None:
            progress(s + 1, shadows)
    return ShadowSet(models=models, members=members, seconds=time.perf_counter() - start)


def unlearned_shadow_scores(shadows: ShadowSet, pool: TensorDataset, candidates: Tensor,
                            unlearn: Unlearn) -> Tensor:
    """(shadows, candidates) phi of every shadow after it unlearned the candidates it had
    trained on (its retain set: the rest of its half). Shadows are copied, not changed.
    Under torchrun each rank scores the shadows it trained and the rows are all-reduced (a
    row is zero on every other rank), so every rank holds the whole matrix."""
    import copy

    candidate_set = torch.zeros(len(pool), dtype=torch.bool)
    candidate_set[candidates] = True
    scores = torch.zeros(len(shadows.models), len(candidates))
    for s, (model, members) in enumerate(zip(shadows.models, shadows.members, strict=True)):
        if model is None:
            continue
        with distributed.alone():
            shadow = copy.deepcopy(model)
            forget = members & candidate_set
            if bool(forget.any()):
                unlearn(shadow, subset(pool, forget.nonzero().flatten()),
                        subset(pool, (members & ~candidate_set).nonzero().flatten()),
                        subset(pool, members.nonzero().flatten()))
            scores[s] = logit_confidence(shadow, subset(pool, candidates)).to(scores.dtype)
    return distributed.all_reduce_sum_(scores)


VARIANCES = ("pooled", "global", "per_example")


def likelihood_ratio(target: Tensor, shadow_scores: Tensor, inside: Tensor, *,
                     variance: str) -> Tensor:
    """log N(target; mu_in, s_in) - log N(target; mu_out, s_out) per candidate, with
    ``inside`` (shadows, candidates) marking the shadows that trained on (and then
    unlearned) each candidate; ``variance`` as in the module docstring."""
    if variance not in VARIANCES:
        raise NeuroplasticError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    scores, inside = shadow_scores.double(), inside.bool()
    n_in, n_out = inside.sum(0), (~inside).sum(0)
    if bool((n_in < 2).any() or (n_out < 2).any()):
        raise NeuroplasticError("every candidate needs at least two 'in' and two 'out' shadows")
    mu_in = (scores * inside).sum(0) / n_in
    mu_out = (scores * ~inside).sum(0) / n_out
    var_in = ((scores - mu_in) ** 2 * inside).sum(0) / (n_in - 1)
    var_out = ((scores - mu_out) ** 2 * ~inside).sum(0) / (n_out - 1)
    if variance == "pooled":
        var_in = torch.full_like(var_in, float(var_in.mean()))
        var_out = torch.full_like(var_out, float(var_out.mean()))
    elif variance == "global":
        var_in = torch.full_like(var_in, float(scores[inside].var()))
        var_out = torch.full_like(var_out, float(scores[~inside].var()))
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
    """Attack figures over the targets (mean and standard deviation of AUC and TPR at 1% /
    5% FPR), each target's figures, and seconds spent unlearning the shadows."""

    per_target: list[dict[str, float]]
    seconds: float
    variance: str

    def _stat(self, key: str) -> tuple[float, float]:
        values = np.array([t[key] for t in self.per_target])
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

    @property
    def auc(self) -> float:
        return self._stat("auc")[0]

    @property
    def tpr_at_1fpr(self) -> float:
        return self._stat("tpr_at_1fpr")[0]

    @property
    def tpr_at_5fpr(self) -> float:
        return self._stat("tpr_at_5fpr")[0]

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key in ("auc", "tpr_at_1fpr", "tpr_at_5fpr"):
            mean, std = self._stat(key)
            out[f"ulira.{key}"], out[f"ulira.{key}_std"] = mean, std
        out["ulira.targets"] = float(len(self.per_target))
        out["ulira.seconds"] = self.seconds
        return out


def ulira(shadows: ShadowSet, *, pool: TensorDataset, candidates: Tensor, unlearn: Unlearn,
          variance: str | None = None, targets: int | None = None) -> ULiRAResult:
    """U-LiRA of the unlearning method ``unlearn`` over the shadow population: every shadow
    unlearns the candidates it trained on; then each of the first ``targets`` shadows
    (default: all) is attacked with the in/out statistics of all the other shadows.

    Args:
        pool: the data the shadows were drawn from (training data + held-out samples).
        candidates: pool indices of the attacked samples (give the same to
            :func:`train_shadows`, so every shadow holds half of them).
        unlearn: the unlearning method, applied to a copy of every shadow.
        variance: ``pooled`` (default below 64 shadows), ``global`` or ``per_example``.
        targets: how many shadows serve as targets (>= 4 for a spread).
    """
    import time

    count = len(shadows.models)
    targets = count if targets is None else targets
    if not 1 <= targets <= count:
        raise NeuroplasticError(f"targets must lie in 1-{count}, got {targets}")
    if variance is None:
        variance = "pooled" if count - 1 < PER_EXAMPLE_VARIANCE_FROM else "per_example"
    start = time.perf_counter()
    shadow_scores = unlearned_shadow_scores(shadows, pool, candidates, unlearn)
    seconds = time.perf_counter() - start
    inside = shadows.members[:, candidates]
    figures = []
    for t in range(targets):
        others = [s for s in range(count) if s != t]
        scores = likelihood_ratio(shadow_scores[t], shadow_scores[others], inside[others],
                                  variance=variance)
        figures.append(attack_metrics(scores, inside[t]))
    return ULiRAResult(per_target=figures, seconds=seconds, variance=variance)
