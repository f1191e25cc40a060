"""One skill-forgetting request end to end: evaluate, apply a method, evaluate, remove."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from neuroplastic.errors import NeuroplasticError
from neuroplastic.skills.demo import EVAL_SEED
from neuroplastic.skills.evaluation import (
    SkillEvaluation,
    evaluate_skills,
    generation_overhead,
    retained_examples,
    skill_metrics,
)
from neuroplastic.skills.key_space import prompt_keys
from neuroplastic.skills.prompts import Example
from neuroplastic.skills.skill_base import SkillUnlearner
from neuroplastic.skills.tasks import SKILLS, examples

FIT_SEED = EVAL_SEED + 1  # examples given to the methods; never the evaluation prompts


@dataclass
class SkillRequest:
    """What to forget (``forget``), what to keep (``retain``), and per-skill evaluation sets."""

    forget_skill: str
    forget: list[Example]
    retain: list[Example]
    evaluation: dict[str, list[Example]] = field(default_factory=dict)


def demo_request(forget_skill: str, *, fit_count: int = 200, eval_count: int = 200) -> SkillRequest:
    """Forget one of the demo skills: ``fit_count`` training-part examples of each skill are
    given to the method, and ``eval_count`` held-out examples of each (prompts the demo model
    never saw) are evaluated."""
    if forget_skill not in SKILLS:
        raise NeuroplasticError(f"unknown demo skill {forget_skill!r}; choose from {', '.join(SKILLS)}")
    given = {skill: examples(skill, fit_count, seed=FIT_SEED, part="train") for skill in SKILLS}
    return SkillRequest(
        forget_skill=forget_skill,
        forget=given[forget_skill],
        retain=[e for skill in SKILLS if skill != forget_skill for e in given[skill]],
        evaluation={skill: examples(skill, eval_count, seed=EVAL_SEED, part="held_out") for skill in SKILLS},
    )


@dataclass
class SkillRun:
    """Metrics of one request plus what the report plots."""

    metrics: dict[str, Any]
    before: SkillEvaluation
    after: SkillEvaluation
    details: dict[str, Any]


def run_skill_forget(model: nn.Module, tokenizer: Any, request: SkillRequest, method: SkillUnlearner, *,
                     before: SkillEvaluation | None = None, keep: bool = False,
                     overhead_prompts: int = 128, key_scores: bool = False) -> SkillRun:
    """Evaluate, apply ``method``, evaluate again, then remove the intervention (unless ``keep``).

    Args:
        before: the evaluation of the untouched model, if already computed (benchmarks reuse it).
        keep: leave the intervention on the model (the CLI saves edited weights).
        overhead_prompts: retained prompts on which the generation overhead is timed.
        key_scores: for a method with a key-space detector, also score every evaluation
            prompt's key as the detector sees it at inference (Neuron Adjust still applied),
            in ``details["key_scores"]`` by skill.
    """
    if request.forget_skill not in request.evaluation:
        raise NeuroplasticError(f"no evaluation set for the forget skill {request.forget_skill!r}")
    before = before or evaluate_skills(model, tokenizer, request.evaluation,
                                       forget_skill=request.forget_skill)
    intervention = method.apply(model, tokenizer, request.forget, request.retain)
    retained = retained_examples(request.evaluation, forget_skill=request.forget_skill)
    try:
        after = evaluate_skills(model, tokenizer, request.evaluation, forget_skill=request.forget_skill,
                                generate=intervention.generate)
        overhead = generation_overhead(model, tokenizer, retained[:overhead_prompts],
                                       generate=intervention.generate)
        details = dict(intervention.details)
        if key_scores and "detector" in details:
            details["key_scores"] = {
                skill: details["detector"].score(prompt_keys(
                    model, tokenizer, examples, site=details["key_site"])).tolist()
                for skill, examples in request.evaluation.items()}
            details["key_threshold"], details["key_threshold_label"] = details["detector"].decision
    finally:
        if not keep:
            intervention.remove()
    metrics: dict[str, Any] = {"method": method.name, "forget_skill": request.forget_skill}
    metrics.update(skill_metrics(before, after, forget_skill=request.forget_skill))
    # For weight edits this compares the edited model with itself (~1): they add no inference cost.
    metrics["overhead"] = overhead
    metrics.update({f"method.{k}": v for k, v in intervention.metrics.items() if k != "method"})
    return SkillRun(metrics=metrics, before=before, after=after, details=details)

