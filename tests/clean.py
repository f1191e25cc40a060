"""``assert_clean``: the "nothing left behind" check every pillar's contract tests use."""

from __future__ import annotations

import gc

from torch import nn

from neuroplastic.hooks import leftovers


def assert_clean(model: nn.Module) -> None:
    """No hook, tensor hook, parametrization or global module/optimizer hook is left (after
    a garbage collection: masks nobody squashed remove their global hook when collected)."""
    gc.collect()
    left = leftovers(model)
    assert not left, f"left behind: {', '.join(left)}"
