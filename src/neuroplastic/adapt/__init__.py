"""The adapt pillar: keep working when inputs drift (test-time adaptation without labels)
or when the mapping shifts (homeostatic plasticity).

- :mod:`~neuroplastic.adapt.base`: the :class:`Adapter` verb (``adapt``, ``predict``, ``reset``);
- :mod:`~neuroplastic.adapt.norm`: :class:`Norm` and :class:`Tent`;
- :mod:`~neuroplastic.adapt.nhl`: :class:`NHL`, neuro-modulated Hebbian adaptation;
- :mod:`~neuroplastic.adapt.homeostasis`: concept-shift streams, the homeostatic learning
  rate, adaptive gain control.
"""

from neuroplastic.lazy import lazy_exports

_EXPORTS = {
    "Adapter": "base", "entropy": "base", "batch_statistics": "base",
    "Norm": "norm", "Tent": "norm", "NHL": "nhl",
    "ConceptShiftStream": "homeostasis", "GainControl": "homeostasis", "ShiftResult": "homeostasis",
    "train_shift": "homeostasis", "shift_mlp": "homeostasis",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
