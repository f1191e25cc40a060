"""Skills of language models: prompts, Hugging Face loading, generation, the shipped demo
model, and the skill-unlearning methods (kind ``skill``)."""

from typing import Any

from neuroplastic.skills.prompts import Example, load_jsonl, write_jsonl

METHODS = {  # class -> module of skills/, imported on first use
    "CalibratedDetector": "key_space", "CalibratedKeySpaceDetection": "key_space",
    "HypercubeDetector": "key_space", "KeySpaceDetection": "key_space", "KeySpaceGuard": "key_space",
    "NeuronAdjustWithAbstention": "key_space", "GradientAscent": "lm_baselines",
    "SkillSSD": "lm_baselines", "NeuronAdjust": "neuron_adjust", "Intervention": "skill_base",
    "SkillUnlearner": "skill_base",
}


def __getattr__(name: str) -> Any:
    """The skill methods, imported on first use (they import torch)."""
    if name in METHODS:
        import importlib

        return getattr(importlib.import_module(f"neuroplastic.skills.{METHODS[name]}"), name)
    raise AttributeError(f"module 'neuroplastic.skills' has no attribute {name!r}")


__all__ = ["Example", "load_jsonl", "write_jsonl", *METHODS]
