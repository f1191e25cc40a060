"""neuroplastic: plasticity operations on trained networks.

Forget (machine unlearning without retraining), and the shared substrate:
importance estimators, selectors and in-place interventions.
"""

from neuroplastic import data, evaluate, forget, importance, intervene, select
from neuroplastic.errors import NeuroplasticError
from neuroplastic.registry import available, create, get, register
from neuroplastic.targets import Targets

__version__ = "0.1.0"

__all__ = [
    "NeuroplasticError",
    "Targets",
    "__version__",
    "available",
    "create",
    "data",
    "evaluate",
    "forget",
    "get",
    "importance",
    "intervene",
    "register",
    "select",
]
