"""In-place interventions on a model (trailing underscore), their atomic guard, and gradient
interventions (mask, scale, project) usable as loop plugins or context managers."""

from neuroplastic.intervene.atomic import atomic, restore_, snapshot
from neuroplastic.intervene.dampen import dampen_
from neuroplastic.intervene.gradients import (
    GradientMask,
    GradientProjection,
    GradientScale,
    GradientTransform,
)

__all__ = ["GradientMask", "GradientProjection", "GradientScale", "GradientTransform", "atomic",
           "dampen_", "restore_", "snapshot"]
