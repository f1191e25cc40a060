"""The learn pillar: training with local rules instead of (or beside) backpropagation.

- :mod:`~neuroplastic.local.base`: the :class:`LocalRule` seam and its driver;
- :mod:`~neuroplastic.local.disinhibitory`: dis-inhibitory control of the sign of
  plasticity (Rossbroich & Zenke, NeurIPS 2023);
- :mod:`~neuroplastic.local.softhebb`: SoftHebb (Journé et al., ICLR 2023);
- :mod:`~neuroplastic.local.bidirectional`: biprop, halfbiprop and HAN
  (Pontes-Filho & Liwicki, IJCNN 2019).
"""

from neuroplastic.lazy import lazy_exports

_EXPORTS = {
    "LocalRule": "base", "LocalUpdates": "base", "add_grad_": "base", "alignment": "base",
    "SoftHebb": "softhebb", "SoftHebbNet": "softhebb", "Triangle": "softhebb",
    "softhebb_mlp": "softhebb", "softhebb_cifar": "softhebb", "train_softhebb": "softhebb",
    "hebbian_phase": "softhebb", "estimate_norm_stats_": "softhebb",
    "DisinhibitoryControl": "disinhibitory", "DisinhibitoryMLP": "disinhibitory",
    "Bidirectional": "bidirectional", "TransposedGenerator": "bidirectional",
    "HAN": "bidirectional", "Biprop": "bidirectional", "HalfBiprop": "bidirectional",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
