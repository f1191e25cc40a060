"""Backprop as a registered learn entry: the baseline every local rule is trained beside."""

from __future__ import annotations

from neuroplastic.registry import register


@register("backprop", kind="learn")
class Backprop:
    """Backprop of the same network with Adam (baseline: every learn run trains it beside the
    rule, on the same batches; it takes no hyperparameter of its own, use --lr / --epochs)."""

    baseline = True
