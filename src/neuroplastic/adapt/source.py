"""The source model, unadapted: the baseline every test-time adaptation is measured against."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuroplastic.adapt.base import Adapter
from neuroplastic.batches import eval_mode
from neuroplastic.registry import register


@register("source", kind="adapt", baseline=True)
class Source(Adapter):
    """The source model as trained (baseline: every adapt run measures it beside the method):
    each test batch is predicted in eval mode with the stored statistics; nothing is written."""

    adapts = False

    def __init__(self) -> None:  # nothing to choose: no episodes, any batch size
        super().__init__()

    def adapted_tensors(self, model: nn.Module) -> dict[str, Tensor]:
        return {}

    def _too_small(self, x: Tensor) -> bool:
        return False  # stored statistics: any batch size

    @torch.no_grad()
    def step(self, model: nn.Module, x: Tensor) -> Tensor:
        with eval_mode(model):
            return model(x)

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        self._bind(model)
        return self.step(model, x)
