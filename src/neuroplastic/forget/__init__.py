"""The forget pillar: remove a class, samples or a subset from a trained model. (The skill
methods of language models live in :mod:`neuroplastic.skills`; their old names here still
work for one release.)"""

from typing import Any

from neuroplastic.forget.base import Unlearner, UnlearnResult
from neuroplastic.forget.baselines import Finetune, NegGradPlus, RandomLabels, Retrain
from neuroplastic.forget.ssd import LFSSD, SSD
from neuroplastic.forget.ssd_auto import SSDAuto


def __getattr__(name: str) -> Any:
    """The skill methods' old place (``neuroplastic.forget.NeuronAdjust``): resolved by name
    from :mod:`neuroplastic.skills`, so this pillar imports nothing of that one."""
    import importlib

    skills = importlib.import_module("neuroplastic.skills")
    if name in skills.METHODS:
        return getattr(skills, name)
    raise AttributeError(f"module 'neuroplastic.forget' has no attribute {name!r}")


__all__ = ["LFSSD", "SSD", "Finetune", "NegGradPlus", "RandomLabels", "Retrain", "SSDAuto",
           "UnlearnResult", "Unlearner"]
