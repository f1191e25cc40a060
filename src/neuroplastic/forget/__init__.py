"""The forget pillar: remove a class, samples or a subset from a trained model, or a skill
from a language model (methods of kind ``skill``)."""

from neuroplastic.forget.base import Unlearner, UnlearnResult
from neuroplastic.forget.baselines import Finetune, NegGradPlus, RandomLabels, Retrain
from neuroplastic.forget.key_space import (
    CalibratedDetector,
    CalibratedKeySpaceDetection,
    HypercubeDetector,
    KeySpaceDetection,
    KeySpaceGuard,
    NeuronAdjustWithAbstention,
)
from neuroplastic.forget.lm_baselines import GradientAscent, SkillSSD
from neuroplastic.forget.neuron_adjust import NeuronAdjust
from neuroplastic.forget.skill_base import Intervention, SkillUnlearner
from neuroplastic.forget.ssd import LFSSD, SSD
from neuroplastic.forget.ssd_auto import SSDAuto

__all__ = [
    "LFSSD",
    "SSD",
    "CalibratedDetector",
    "CalibratedKeySpaceDetection",
    "Finetune",
    "GradientAscent",
    "HypercubeDetector",
    "Intervention",
    "KeySpaceDetection",
    "KeySpaceGuard",
    "NegGradPlus",
    "NeuronAdjust",
    "NeuronAdjustWithAbstention",
    "RandomLabels",
    "Retrain",
    "SSDAuto",
    "SkillSSD",
    "SkillUnlearner",
    "UnlearnResult",
    "Unlearner",
]
