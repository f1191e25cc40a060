"""A third-party learn method, registered through the ``neuroplastic.methods`` entry-point
group (tests/test_plugins.py points the group here): one file, one registration, the
:class:`~neuroplastic.local.protocol.LearnMethod` protocol and nothing in the CLI."""

from __future__ import annotations

import torch
from torch import nn

from neuroplastic import loop
from neuroplastic.checks import require_positive
from neuroplastic.local.protocol import LearnContext, LearnDefaults, LearnMethod, LearnOutcome
from neuroplastic.registry import register


@register("readout-only", kind="learn", needs=("labels", "lr"))
class ReadoutOnly(LearnMethod):
    """Random features: only the last layer learns, by Adam (a plug-in example).

    Args:
        lr_scale: the readout's learning rate is the run's times this.
    """

    defaults = LearnDefaults((32,), 5, 1e-2, 64)

    def __init__(self, *, lr_scale: float = 1.0) -> None:
        self.lr_scale = require_positive("lr_scale", lr_scale)

    def train(self, model: nn.Module, ctx: LearnContext) -> LearnOutcome:
        readout = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        optimizer = torch.optim.Adam(readout.parameters(), lr=ctx.lr * self.lr_scale)
        loop.fit(model, ctx.batches(ctx.batch_size), optimizer=optimizer, epochs=ctx.epochs,
                 plugins=ctx.plugins, progress=ctx.progress)
        trained = sum(p.numel() for p in readout.parameters())
        return LearnOutcome(metrics={"trained_parameters": float(trained)})
