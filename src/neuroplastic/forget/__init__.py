"""The forget pillar: remove a class, samples or a subset from a trained model. (The skill
methods of language models live in :mod:`neuroplastic.skills`; their old names here still
work for one release.)"""

from typing import Any

from neuroplastic.forget.base import Unlearner, UnlearnResult
from neuroplastic.forget.baselines import Finetune, NegGradPlus, RandomLabels, Retrain
from neuroplastic.forget.ssd import LFSSD, SSD
from neuroplastic.forget.ssd_auto import SSDAuto

_MOVED_TO_SKILLS = {
    "CalibratedDetector": "key_space", "CalibratedKeySpaceDetection": "key_space",
    "HypercubeDetector": "key_space", "KeySpaceDetection": "key_space", "KeySpaceGuard": "key_space",
    "NeuronAdjustWithAbstention": "key_space", "GradientAscent": "lm_baselines",
    "SkillSSD": "lm_baselines", "NeuronAdjust": "neuron_adjust", "Intervention": "skill_base",
    "SkillUnlearner": "skill_base",
}


def __getattr__(name: str) -> Any:
    """The skill methods' old place (``neuroplastic.forget.NeuronAdjust``): resolved by name
    from :mod:`neuroplastic.skills`, so this pillar imports nothing of that one."""
    if name in _MOVED_TO_SKILLS:
        import importlib

        return getattr(importlib.import_module(f"neuroplastic.skills.{_MOVED_TO_SKILLS[name]}"), name)
    raise AttributeError(f"module 'neuroplastic.forget' has no attribute {name!r}")


__all__ = ["LFSSD", "SSD", "Finetune", "NegGradPlus", "RandomLabels", "Retrain", "SSDAuto",
           "UnlearnResult", "Unlearner"]
