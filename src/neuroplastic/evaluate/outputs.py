"""One forward pass over data, kept as per-sample logits and labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from neuroplastic.batches import eval_mode, iter_batches, logits_of, model_device
from neuroplastic.types import Data


@dataclass
class Outputs:
    """Per-sample logits (float32, CPU) and labels of one pass."""

    logits: Tensor
    labels: Tensor

    @property
    def accuracy(self) -> float:
        if len(self.labels) == 0:
            return float("nan")
        return float((self.logits.argmax(-1) == self.labels).float().mean())

    def losses(self) -> Tensor:
        """Per-sample cross-entropy."""
        return nn.functional.cross_entropy(self.logits, self.labels, reduction="none")

    def entropies(self) -> Tensor:
        """Entropy of the softmax output per sample (0 log 0 = 0)."""
        logp = torch.log_softmax(self.logits, -1)
        return -(logp.exp() * logp).nan_to_num(0.0).sum(-1)

    def per_class_accuracy(self, num_classes: int) -> list[float]:
        """Accuracy for each true label (NaN where a class has no sample)."""
        hits = self.logits.argmax(-1) == self.labels
        return [float(hits[self.labels == c].float().mean()) if (self.labels == c).any()
                else float("nan") for c in range(num_classes)]


@torch.no_grad()
def collect(model: nn.Module, data: Data) -> Outputs:
    """Run ``model`` in eval mode over ``data`` and keep logits and labels."""
    logits, labels = [], []
    with eval_mode(model):
        for x, y in iter_batches(data, device=model_device(model), name="evaluation"):
            logits.append(logits_of(model(x)).float().cpu())
            labels.append(y.cpu())
    if not logits:
        return Outputs(torch.empty(0, 0), torch.empty(0, dtype=torch.long))
    return Outputs(torch.cat(logits), torch.cat(labels))


def accuracy(model: nn.Module, data: Data) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (NaN for empty data)."""
    return collect(model, data).accuracy
