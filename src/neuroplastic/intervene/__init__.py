"""In-place interventions on a model (trailing underscore) and their atomic guard."""

from neuroplastic.intervene.atomic import atomic, restore_, snapshot
from neuroplastic.intervene.dampen import dampen_

__all__ = ["atomic", "dampen_", "restore_", "snapshot"]
