"""Sums over a batch of squared per-sample gradients, without a gradient per sample where
the layer allows it.

For a ``Linear`` layer with input ``a_b`` and output gradient ``d_b`` (sample ``b``), the
per-sample weight gradient is ``d_b a_b^T``, so ``sum_b (d_b a_b^T)^2 = (d^2)^T (a^2)``: one
matrix product, the size of the layer's ordinary weight gradient (Goodfellow 2015,
"Efficient per-example gradient computations"; BackPACK's ``BatchL2``/``SumGradSquared``
extensions use the same identities). Where a sample contributes several rows (sequence
positions, convolution patches) the per-sample gradient is a sum of outer products, formed
batched (``bmm``) and squared; on a CPU a convolution's per-sample weight gradients come
from its own weight-gradient kernel, one sample at a time, which is faster there.
Eval-mode BatchNorm and LayerNorm scale/shift gradients are ``sum d * x_hat`` and
``sum d``. One forward and one backward pass of the whole batch give all of them; every
other parameter (embeddings, tied weights, custom layers) falls back to ``torch.func``'s
``vmap(grad)`` over the samples for just those parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from neuroplastic.hooks import hooks_on
from neuroplastic.types import LossFn

# per-sample gradients are formed this many entries at a time at most (memory bound)
CHUNK_ENTRIES = 1 << 25
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# devices whose convolutions get their per-sample weight gradients one sample at a time
CONV_BY_SAMPLE_ON = ("cpu",)


def _covered(module: nn.Module) -> bool:
    """Layers whose per-sample squared gradients are computed from their input and output
    gradient."""
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.Conv2d):  # unfold pads with zeros and knows no groups or "same"
        return module.groups == 1 and isinstance(module.padding, tuple) and module.padding_mode == "zeros"
    if isinstance(module, NORMS):
        return module.affine and module.track_running_stats and not module.training
    if isinstance(module, nn.LayerNorm):
        return module.elementwise_affine
    return False


def _qualified(layer: str, key: str) -> str:
    """A parameter's name in ``model.named_parameters()`` from its module's name and key."""
    return f"{layer}.{key}" if layer else key


def covered_layers(model: nn.Module, names: set[str]) -> dict[str, nn.Module]:
    """Covered modules (by name) whose parameters are all among ``names`` and used by that
    module alone (a tied weight gets its per-sample gradient from several places)."""
    owners: dict[int, int] = {}
    for _, module in model.named_modules():
        for param in module._parameters.values():
            if param is not None:
                owners[id(param)] = owners.get(id(param), 0) + 1
    layers = {}
    for name, module in model.named_modules():
        params = {_qualified(name, k): p for k, p in module._parameters.items() if p is not None}
        if (_covered(module) and params and set(params) <= names
                and all(owners[id(p)] == 1 for p in params.values())):
            layers[name] = module
    return layers


def uncovered(model: nn.Module, names: set[str]) -> set[str]:
    """The parameters among ``names`` that no covered layer holds (``torch.func`` computes
    theirs; the model's current train/eval mode counts)."""
    return names - _names(covered_layers(model, names))


def _squared_sum_of(per_sample: Callable[[slice], Tensor], batch: int, entries_per_sample: int) -> Tensor:
    """``sum_b per_sample(b)^2``, computing the per-sample tensors a chunk of samples at a time.
    ``per_sample`` returns a new tensor each call: it is squared in place."""
    step = max(1, CHUNK_ENTRIES // max(entries_per_sample, 1))
    total = None
    for start in range(0, batch, step):
        # squared in place and summed over the leading dimension: no squared copy (a
        # vector_norm over that dimension, as before, was 10-50x slower on CPU)
        grads = per_sample(slice(start, start + step)).float()
        part = grads.mul_(grads).sum(0)
        total = part if total is None else total.add_(part)
    assert total is not None
    return total


def _conv_squares_by_sample(module: nn.Conv2d, a: Tensor, d: Tensor) -> Tensor:
    """``sum_b`` of the squared weight gradient of each sample, each from the convolution's own
    weight-gradient kernel on that sample's input and output gradient. On a CPU this made the
    per-sample Fisher of ResNet-18 (32 samples) 1.2-1.5x faster than with one batched
    product over unfolded patches (the patches of a 3x3 layer are 9x its input, written and
    read once more); where one sample cannot fill the device (a GPU) the batched product is
    expected to win, not measured here."""
    total = torch.zeros(module.weight.shape, dtype=torch.float32, device=a.device)  # whole, also under FSDP
    for b in range(a.shape[0]):
        grad_b = torch.nn.grad.conv2d_weight(a[b:b + 1], module.weight.shape, d[b:b + 1],
                                             stride=module.stride, padding=module.padding,
                                             dilation=module.dilation, groups=module.groups).float()
        total.add_(grad_b.mul_(grad_b))
    return total


def _layer_squares(module: nn.Module, a: Tensor, d: Tensor) -> dict[str, Tensor]:
    """Sum over the batch of the squared per-sample gradients of ``module``'s parameters,
    from its input ``a`` and output gradient ``d`` (both batch-first)."""
    batch = a.shape[0]
    out: dict[str, Tensor] = {}
    if isinstance(module, nn.Linear):
        if a.dim() == 2:
            a, d = a.float(), d.float()
            out["weight"] = (d * d).t() @ (a * a)
            if module.bias is not None:
                out["bias"] = (d * d).sum(0)
            return out
        a3, d3 = a.reshape(batch, -1, a.shape[-1]), d.reshape(batch, -1, d.shape[-1])
        out["weight"] = _squared_sum_of(lambda s: d3[s].transpose(1, 2) @ a3[s], batch,
                                        module.weight.numel())
        if module.bias is not None:
            out["bias"] = _squared_sum_of(lambda s: d3[s].sum(1), batch, d3.shape[-1])
        return out
    if isinstance(module, nn.Conv2d):
        d3 = d.reshape(batch, d.shape[1], -1)  # (B, out, P)
        if a.device.type in CONV_BY_SAMPLE_ON:
            out["weight"] = _conv_squares_by_sample(module, a, d)
        else:
            patches = nn.functional.unfold(a, module.kernel_size, dilation=module.dilation,
                                           padding=module.padding, stride=module.stride)  # (B, in*k*k, P)
            out["weight"] = _squared_sum_of(lambda s: d3[s] @ patches[s].transpose(1, 2), batch,
                                            module.weight.numel()).reshape(module.weight.shape)
        if module.bias is not None:
            out["bias"] = _squared_sum_of(lambda s: d3[s].sum(2), batch, d3.shape[1])
        return out
    if isinstance(module, NORMS):
        shape = (1, -1) + (1,) * (a.dim() - 2)
        assert module.running_mean is not None and module.running_var is not None
        mean, var = module.running_mean.view(shape), module.running_var.view(shape)
        x_hat = (a - mean) / torch.sqrt(var + module.eps)
        dims = tuple(range(2, a.dim()))  # none for (batch, features): sum(()) would sum all
        out["weight"] = _squared_sum_of(lambda s: (d[s] * x_hat[s]).sum(dims) if dims else d[s] * x_hat[s],
                                        batch, a.shape[1])
        out["bias"] = _squared_sum_of(lambda s: d[s].sum(dims) if dims else d[s].clone(), batch, a.shape[1])
        return out
    # LayerNorm: normalised over the trailing ``normalized_shape``
    assert isinstance(module, nn.LayerNorm)
    x_hat = nn.functional.layer_norm(a, module.normalized_shape, eps=module.eps)
    inner = tuple(range(1, a.dim() - len(module.normalized_shape)))
    size = math.prod(module.normalized_shape)
    out["weight"] = _squared_sum_of(lambda s: (d[s] * x_hat[s]).sum(inner) if inner else d[s] * x_hat[s],
                                    batch, size)
    if module.bias is not None:
        out["bias"] = _squared_sum_of(lambda s: d[s].sum(inner) if inner else d[s].clone(), batch, size)
    return out


def _names(layers: dict[str, nn.Module]) -> set[str]:
    """The parameter names of ``layers``."""
    return {_qualified(layer, k) for layer, m in layers.items()
            for k, p in m._parameters.items() if p is not None}


def _capture(layers: dict[str, nn.Module], inputs: dict[str, Tensor], grads: dict[str, Tensor],
             reused: set[str]) -> dict[str, Callable[..., None]]:
    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            if name in inputs:  # called twice in one forward: its gradient has two sources
                reused.add(name)
            inputs[name] = args[0].detach()
            # a hook registered before an in-place op on the output (ReLU(inplace=True))
            # still receives the gradient with respect to the value this layer produced
            output.register_hook(lambda g: grads.__setitem__(name, g.detach()))
        return hook
    return {name: hook_for(name) for name in layers}


def squared_grad_sums(model: nn.Module, named: dict[str, nn.Parameter], x: Tensor, y: Tensor,
                      loss_fn: LossFn) -> dict[str, Tensor]:
    """``sum_b (d loss_fn(model(x_b), y_b) / d theta)^2`` for every parameter in ``named``
    (the model in eval mode; each sample's loss is ``loss_fn`` on that sample alone)."""
    layers = covered_layers(model, set(named))
    sums: dict[str, Tensor] = {}
    reused: set[str] = set()
    if layers:
        inputs: dict[str, Tensor] = {}
        grads: dict[str, Tensor] = {}
        # differentiating with respect to a floating input leaves out every weight gradient
        # of the batch (the per-sample ones are formed below); integer inputs (token ids)
        # differentiate with respect to the parameters instead
        leaf = x.detach().requires_grad_() if x.is_floating_point() else x
        with torch.enable_grad(), hooks_on(layers, _capture(layers, inputs, grads, reused)):
            out = model(leaf * 1 if leaf.requires_grad else leaf)  # a non-leaf: the model may write into it
            if not isinstance(out, Tensor):  # an output object: its loss is the caller's to slice
                return _vmap_squares(model, named, x, y, loss_fn)
            total = sum(loss_fn(out[b:b + 1], y[b:b + 1]) for b in range(len(x)))
            wrt = [leaf] if leaf.requires_grad else [named[n] for n in _names(layers)]
            torch.autograd.grad(total, wrt, allow_unused=True)  # fills ``grads`` through the hooks
        layers = {name: module for name, module in layers.items() if name not in reused}
        for layer, module in layers.items():
            if layer not in grads:  # the layer took no part in this loss
                for key, p in module._parameters.items():
                    if p is not None:
                        sums[_qualified(layer, key)] = torch.zeros(p.shape, dtype=torch.float32,
                                                                   device=p.device)
                continue
            for key, value in _layer_squares(module, inputs[layer], grads[layer]).items():
                sums[_qualified(layer, key)] = value
    covered = _names(layers)
    rest = {n: p for n, p in named.items() if n not in covered}
    if rest:
        sums.update(_vmap_squares(model, rest, x, y, loss_fn))
    return sums


def _vmap_squares(model: nn.Module, named: dict[str, nn.Parameter], x: Tensor, y: Tensor,
                  loss_fn: LossFn) -> dict[str, Tensor]:
    """The same for ``named`` only, by ``vmap(grad)`` over the samples."""
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in named}
    frozen.update(dict(model.named_buffers()))

    def sample_loss(params: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        return loss_fn(functional_call(model, (params, frozen), (xb.unsqueeze(0),)), yb.unsqueeze(0))

    detached = {n: p.detach() for n, p in named.items()}
    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))(detached, x, y)
    return {n: g.float().square().sum(0) for n, g in per_sample.items()}
