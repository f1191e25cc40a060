"""Backprop as a registered learn entry: the baseline every local rule is trained beside."""

from __future__ import annotations

import torch
from torch import nn

from neuroplastic import loop
from neuroplastic.data.splits import DataSplit
from neuroplastic.local.protocol import LearnContext, LearnDefaults, LearnMethod, LearnOutcome, mlp
from neuroplastic.registry import register


@register("backprop", kind="learn", baseline=True, needs=("labels", "lr"))
class Backprop(LearnMethod):
    """Backprop of the same network with Adam (baseline: every learn run trains it beside the
    rule, on the same batches; it takes no hyperparameter of its own, use --lr / --epochs)."""

    defaults = LearnDefaults((64, 64), 30, 1e-3, 64)

    def network(self, split: DataSplit, hidden: tuple[int, ...]) -> nn.Module:
        """A ReLU MLP of ``hidden`` widths."""
        return mlp(split, hidden, activation=nn.ReLU)

    def train(self, model: nn.Module, ctx: LearnContext) -> LearnOutcome:
        """Adam on ``ctx.loss_fn`` (cross-entropy by default) for ``ctx.epochs`` epochs."""
        optimizer = torch.optim.Adam(model.parameters(), lr=ctx.lr)
        loop.fit(model, ctx.batches(ctx.batch_size), optimizer=optimizer, epochs=ctx.epochs,
                 loss_fn=ctx.loss_fn, plugins=ctx.plugins, progress=ctx.progress)
        return LearnOutcome()
