"""Read layer activations in forward hooks, for any model and plain ``(x, y)`` data.

Hooks only read (detached copies of the inputs and outputs), registered through
:func:`neuroplastic.hooks.hooks_on` like every other reading hook; whoever uses them writes
weights afterwards. The hooks are removed on :meth:`LayerRecorder.remove` or when the
``with`` block ends, also on error. Used by GPM/HLOP (layer inputs), CLNP (unit activity)
and meant for local learning rules (pre- and post-synaptic activity of each layer).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from torch import Tensor, nn

from neuroplastic.hooks import hooks_on


class LayerRecorder:
    """Keeps the last input and/or output of each named layer.

    Args:
        layers: name -> module to watch.
        inputs / outputs: which side to keep.
    """

    def __init__(self, layers: dict[str, nn.Module], *, inputs: bool = True, outputs: bool = False) -> None:
        self.layers = layers
        self.inputs: dict[str, Tensor] = {}
        self.outputs: dict[str, Tensor] = {}
        self._hooks = ExitStack()
        self._hooks.enter_context(hooks_on(layers, {name: self._keep(name, inputs, outputs)
                                                    for name in layers}))

    def _keep(self, name: str, inputs: bool, outputs: bool):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if inputs:
                self.inputs[name] = args[0].detach()
            if outputs:
                self.outputs[name] = output.detach()
        return hook

    def remove(self) -> None:
        """Remove the hooks (safe to call twice)."""
        self._hooks.close()

    def __enter__(self) -> LayerRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
