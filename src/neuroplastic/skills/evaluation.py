"""Per-skill exact match and abstention before/after an intervention, and the ratios of the paper."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from neuroplastic.batches import model_device
from neuroplastic.skills.generation import GenerateFn, answer, greedy_options, perplexity, plain_generate
from neuroplastic.skills.lm import encode_prompts
from neuroplastic.skills.prompts import Example


@dataclass(frozen=True)
class SkillScore:
    """Exact match and abstain rate on one skill's evaluation prompts."""

    acc: float
    abstain_rate: float


@dataclass(frozen=True)
class SkillEvaluation:
    """Scores per skill and perplexity on the retained skills' answers."""

    scores: dict[str, SkillScore]
    retain_perplexity: float


def evaluate_skills(model: nn.Module, tokenizer: Any, sets: Mapping[str, Sequence[Example]], *,
                    forget_skill: str, generate: GenerateFn = plain_generate,
                    batch_size: int = 128) -> SkillEvaluation:
    """Greedy answers to every evaluation set through ``generate``."""
    scores = {}
    for skill, examples in sets.items():
        got = answer(model, tokenizer, examples, generate=generate, batch_size=batch_size)
        scores[skill] = SkillScore(acc=got.exact_match(examples), abstain_rate=got.abstain_rate())
    retained = retained_examples(sets, forget_skill=forget_skill)
    ppl = perplexity(model, tokenizer, retained, batch_size=batch_size) if retained else float("nan")
    return SkillEvaluation(scores=scores, retain_perplexity=ppl)


def retained_examples(sets: Mapping[str, Sequence[Example]], *, forget_skill: str) -> list[Example]:
    """Every example of the evaluation sets other than the forget skill's, in order."""
    return [e for skill, examples in sets.items() if skill != forget_skill for e in examples]


def _ratio(after: float, before: float) -> float:
    return after / before if before > 0 else float("nan")


def skill_metrics(before: SkillEvaluation, after: SkillEvaluation, *, forget_skill: str) -> dict[str, float]:
    """The flat metrics.json keys: ``skills.<name>.acc_before|acc_after|abstain_rate``,
    ``forget_ratio`` (after/before on the forget skill), ``retain_ratio`` (mean after/before
    over the other skills) and perplexities."""
    metrics: dict[str, float] = {}
    for skill, score in after.scores.items():
        metrics[f"skills.{skill}.acc_before"] = before.scores[skill].acc
        metrics[f"skills.{skill}.acc_after"] = score.acc
        metrics[f"skills.{skill}.abstain_rate"] = score.abstain_rate
    others = [s for s in after.scores if s != forget_skill]
    metrics["forget_ratio"] = _ratio(after.scores[forget_skill].acc, before.scores[forget_skill].acc)
    ratios = [_ratio(after.scores[s].acc, before.scores[s].acc) for s in others]
    metrics["retain_ratio"] = sum(ratios) / len(ratios) if ratios else float("nan")
    metrics["retain_perplexity_before"] = before.retain_perplexity
    metrics["retain_perplexity_after"] = after.retain_perplexity
    return metrics


def generation_overhead(model: nn.Module, tokenizer: Any, examples: Sequence[Example], *,
                        generate: GenerateFn, repeats: int = 5, batch_size: int = 64) -> float:
    """Seconds to generate answers through ``generate`` over seconds with plain ``model.generate``.

    Each batch is generated ``repeats`` times both ways, alternating which
    goes first, and the fastest time of each is kept: a busy machine slows
    both alike, and drifts between batches cancel. Tokenising and decoding,
    the same for both, are left out, so the ratio errs high.
    """
    device = model_device(model)
    options = greedy_options(tokenizer, examples)
    totals = {"plain": 0.0, "intervened": 0.0}
    calls = {"plain": plain_generate, "intervened": generate}
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            inputs = encode_prompts(tokenizer, [e.prompt for e in examples[start:start + batch_size]],
                                    device=device)
            best = {"plain": float("inf"), "intervened": float("inf")}
            for repeat in range(repeats):
                order = ("plain", "intervened") if repeat % 2 == 0 else ("intervened", "plain")
                for name in order:
                    begin = time.perf_counter()
                    calls[name](model, **inputs, **options)
                    best[name] = min(best[name], time.perf_counter() - begin)
            for name in totals:
                totals[name] += best[name]
    return totals["intervened"] / totals["plain"]
