"""``assert_clean``: the "nothing left behind" check every pillar's contract tests use."""

from __future__ import annotations

import gc

from torch import nn

from neuroplastic.hooks import leftovers
from neuroplastic.sparse.masks import remove_collected_hooks


def assert_clean(model: nn.Module) -> None:
    """No hook, tensor hook, parametrization or global module/optimizer hook is left (after
    a garbage collection: masks nobody squashed give up their global hooks when collected,
    removed at the next prepare or squash or by ``remove_collected_hooks``, never inside
    an optimizer step, whose loop over those hooks a removal would break)."""
    gc.collect()
    remove_collected_hooks()
    left = leftovers(model)
    assert not left, f"left behind: {', '.join(left)}"
