"""neuroplastic: plasticity operations on trained networks.

Forget (machine unlearning without retraining), sparse (prune and regrow), skill
unlearning in language models, and the shared substrate: importance estimators,
selectors and in-place interventions. Every pillar is imported on first use
(``npl.sparse`` imports torch then), so ``import neuroplastic`` is instant.
"""

from neuroplastic.errors import NeuroplasticError
from neuroplastic.lazy import lazy_exports
from neuroplastic.registry import available, create, get, register

__version__ = "0.1.0"

_SUBMODULES = ("adapt", "consolidate", "continual", "data", "evaluate", "forget", "importance", "intervene",
               "local", "loop", "models", "record", "select", "skills", "sparse", "io", "targets", "training")
__getattr__, __dir__ = lazy_exports(__name__, {**{name: "" for name in _SUBMODULES},
                                               "Targets": "targets"})

__all__ = [
    "NeuroplasticError",
    "Targets",
    "__version__",
    "adapt",
    "available",
    "consolidate",
    "continual",
    "create",
    "data",
    "evaluate",
    "forget",
    "get",
    "importance",
    "intervene",
    "local",
    "loop",
    "models",
    "register",
    "select",
    "skills",
    "sparse",
]
