"""The continual pillar: learn task after task without forgetting the old ones.

Streams are in :mod:`neuroplastic.data.streams`, metrics in
:mod:`neuroplastic.evaluate.continual`; every method is a plugin of
:func:`neuroplastic.loop.fit`, run over a stream by :func:`run_stream`.
"""

from neuroplastic.continual.base import ContinualMethod
from neuroplastic.continual.bounds import Finetune, Joint
from neuroplastic.continual.classp import CLASSP
from neuroplastic.continual.clnp import CLNP
from neuroplastic.continual.ewc import EWC
from neuroplastic.continual.projection import GPM, HLOP
from neuroplastic.continual.runner import ContinualRecipe, ContinualResult, run_stream
from neuroplastic.continual.si import SI

__all__ = ["CLASSP", "CLNP", "EWC", "GPM", "HLOP", "SI", "ContinualMethod", "ContinualRecipe",
           "ContinualResult", "Finetune", "Joint", "run_stream"]
