"""Read layer activations in forward hooks, for any model and plain ``(x, y)`` data.

Hooks only read (detached copies of the inputs and outputs), registered through
:func:`neuroplastic.hooks.hooks_on` like every other reading hook; whoever uses them writes
weights afterwards. The hooks are removed on :meth:`LayerRecorder.remove` or when the
``with`` block ends, also on error. Used by GPM/HLOP (layer inputs), CLNP (unit activity)
and meant for local learning rules (pre- and post-synaptic activity of each layer).
:func:`as_rows` reads a layer's input as the rows its weight multiplies (GPM, HLOP and
SoftHebb's patches).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from torch import Tensor, nn

from neuroplastic.hooks import hooks_on


def padded_input(layer: nn.Conv2d, inputs: Tensor) -> Tensor:
    """A convolution's input padded as the layer pads it (its padding mode, ``"same"`` too)."""
    padding = layer._reversed_padding_repeated_twice
    if not any(padding):
        return inputs
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    return nn.functional.pad(inputs, padding, mode=mode)


def as_rows(layer: nn.Module, inputs: Tensor) -> Tensor:
    """A layer's input as rows of the space its weight's columns live in: a Linear layer's
    (batch, in) inputs as they are (a sequence's tokens as rows); a Conv2d's unfolded
    patches, (batch * positions, in * k * k), padded as the layer pads. A grouped
    convolution's filters each see one group of ``in / groups`` channels: every group's
    patch is a row, (batch * positions * groups, in / groups * k * k), so one basis holds
    every group's old inputs (a group's gradient projected off it keeps that group's
    outputs on old inputs, and more: the basis spans the other groups' inputs too)."""
    if isinstance(layer, nn.Conv2d):
        patches = nn.functional.unfold(padded_input(layer, inputs), layer.kernel_size,
                                       dilation=layer.dilation, stride=layer.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1] // layer.groups)
    return inputs.reshape(-1, inputs.shape[-1])


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
