"""Export a sparse model so that it is faster, not only full of zeros.

* :func:`to_csr` replaces sparse ``nn.Linear`` layers by :class:`CSRLinear`,
  a compressed-sparse-row matmul (a masked dense layer gives no speed-up).
* :func:`remove_dead_units` deletes neurons / channels whose weights are all
  zero, rewriting the shapes of the layer that produces them and of the
  layer that consumes them (found by tracing the model with ``torch.fx``).
* :func:`fastest_export` times these forms on an example batch and keeps the fastest.
"""

from __future__ import annotations

import contextlib
import copy
import operator
import warnings

import torch
from torch import Tensor, fx, nn

from neuroplastic.errors import NeuroplasticError, first_line
from neuroplastic.hooks import Hook, forward_hooks
from neuroplastic.sparse.latency import latencies

#: Modules between two layers that map 0 to 0 channel by channel, so a dead unit stays dead.
ZERO_PRESERVING = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.SiLU, nn.Hardtanh,
                   nn.Dropout, nn.Identity, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
                   nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class FeatureMajorLinear(nn.Module):
    """A linear layer computed feature-major, ``W @ x^T + b``, returning the transposed view
    of that result: values as ``nn.Linear``, in the layout :class:`CSRLinear` reads without a
    copy. With a dense weight, BLAS reads the transposed input at no cost."""

    contiguous_input = False

    def __init__(self, linear: nn.Linear, *, weight: Tensor | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().clone() if weight is None
                             else weight)
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        features = x.reshape(-1, self.in_features).t()
        if self.contiguous_input:
            features = features.contiguous()  # free after another feature-major layer
        if self.bias is None:
            out = torch.mm(self.weight, features)
        else:  # the bias added inside the kernel: measured 20-30% faster than after it
            out = torch.addmm(self.bias[:, None], self.weight, features)
        return out.t().reshape(*x.shape[:-1], self.out_features)


class CSRLinear(FeatureMajorLinear):
    """A linear layer whose weight is stored and multiplied as a CSR sparse matrix."""

    # CSR @ dense on CPU: a contiguous feature-major input is measured 20% faster than a view
    contiguous_input = True

    def __init__(self, linear: nn.Linear) -> None:
        with warnings.catch_warnings():  # "sparse CSR support is in beta": we test what we use
            warnings.simplefilter("ignore", UserWarning)
            csr = linear.weight.detach().to_sparse_csr()
            # int32 indices: the CPU kernel (MKL) is about 1.5x faster than with int64
            weight = torch.sparse_csr_tensor(csr.crow_indices().int(), csr.col_indices().int(),
                                             csr.values(), csr.shape)
        super().__init__(linear, weight=weight)


def density_of(weight: Tensor) -> float:
    return float((weight != 0).float().mean())


@torch.no_grad()
def to_csr(model: nn.Module, *, max_density: float = 0.2,
           example: Tensor | None = None) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` of density <= ``max_density`` as
    :class:`CSRLinear` (inference only: CSR weights are not trained).

    With ``example`` (a batch of model inputs) the choices are measured on it: a layer is
    converted only where its CSR form is faster than the dense one on the inputs the layer
    sees (a small layer, e.g. a 10-way classifier, runs slower as CSR at any density), and
    the remaining linear layers run as :class:`FeatureMajorLinear` if that makes the whole
    model faster (it spares the CSR layers a transposing copy of their input). The outputs
    of both kinds are transposed views: call ``.contiguous()`` before ``.view()``.
    """
    model = copy.deepcopy(model).eval()
    candidates = {name: module for name, module in model.named_modules()
                  if type(module) is nn.Linear and density_of(module.weight) <= max_density}
    seen: dict[str, Tensor] = {}
    if example is not None:
        def keep_input(name: str) -> Hook:
            def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
                seen.setdefault(name, args[0])
            return hook
        with forward_hooks(model, {name: keep_input(name) for name in candidates}):
            model(example)
    converted = 0
    for name, linear in candidates.items():
        csr = CSRLinear(linear)
        if name in seen:
            times = latencies({"dense": linear, "csr": csr}, seen[name], repeats=20)
            if times["csr"] >= times["dense"]:
                continue
        _replace(model, name, csr)
        converted += 1
    dense = {name: module for name, module in model.named_modules() if type(module) is nn.Linear}
    if example is not None and converted and dense:
        before = latencies({"model": model}, example, repeats=20)["model"]
        for name, linear in dense.items():
            _replace(model, name, FeatureMajorLinear(linear))
        if latencies({"model": model}, example, repeats=20)["model"] >= before:
            for name, linear in dense.items():
                _replace(model, name, linear)
    return model


@torch.no_grad()
def fastest_export(model: nn.Module, example: Tensor) -> tuple[nn.Module, str]:
    """The fastest on ``example`` of: ``model`` as it is, :func:`to_csr`, and
    :func:`remove_dead_units` then :func:`to_csr` -- and which one it is.

    A narrower layer is not always faster (BLAS ran a 40-214-110-10 MLP slower than the
    40-256-128-10 one it came from), and CSR pays off only for large, very sparse layers, so
    the forms are timed rather than assumed. Time the result on other inputs than
    ``example``. A model the tracer cannot follow skips the dead-unit form.
    """
    forms = {"unchanged": copy.deepcopy(model).eval(), "csr": to_csr(model, example=example)}
    with contextlib.suppress(NeuroplasticError):
        forms["dead units removed + csr"] = to_csr(remove_dead_units(model)[0], example=example)
    times = latencies(forms, example, repeats=20)
    name = min(times, key=times.__getitem__)
    return forms[name], name


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def _chains(graph_module: fx.GraphModule) -> list[tuple[str, str, bool]]:
    """(producer, consumer, through_flatten) pairs of layers connected only through
    zero-preserving modules, where the producer's output has no other user."""
    modules = dict(graph_module.named_modules())
    pairs = []
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], LAYERS):
            continue
        current, flattened = node, False
        while len(current.users) == 1:
            (user,) = current.users
            if user.op == "call_module" and isinstance(modules[user.target], LAYERS):
                pairs.append((node.target, user.target, flattened))
                break
            if user.op == "call_module" and isinstance(modules[user.target], ZERO_PRESERVING):
                current = user
            elif (user.op == "call_module" and isinstance(modules[user.target], nn.Flatten)) or (
                    user.op == "call_function" and user.target in (torch.flatten,)) or (
                    user.op == "call_method" and user.target in ("flatten", "view", "reshape")):
                flattened = True
                current = user
            elif user.op == "call_function" and user.target in (torch.relu, operator.getitem):
                current = user
            else:
                break
    return pairs


@torch.no_grad()
def remove_dead_units(model: nn.Module) -> tuple[nn.Module, dict[str, int]]:
    """A copy of ``model`` without dead units, and how many were removed per layer.

    A unit (output neuron or channel) of a layer is dead if its incoming
    weights and bias are all zero — it outputs 0, which the zero-preserving
    modules in between keep at 0 — or if the consuming layer gives it zero
    weight everywhere. It is removed from both layers. Layers the tracer
    cannot follow are left as they are.
    """
    try:
        traced = fx.symbolic_trace(copy.deepcopy(model))
    except Exception as err:  # fx raises many kinds of errors on untraceable code
        raise NeuroplasticError(f"cannot trace {type(model).__name__} to find dead units: "
                                f"{first_line(err)}") from None
    modules = dict(traced.named_modules())
    removed: dict[str, int] = {}
    for producer_name, consumer_name, flattened in _chains(traced):
        producer, consumer = modules[producer_name], modules[consumer_name]
        units = producer.weight.shape[0]
        consumer_in = consumer.weight.shape[1]
        if consumer_in % units:
            continue
        block = consumer_in // units if flattened else 1
        if not flattened and block != 1:
            continue
        incoming = producer.weight.reshape(units, -1).abs().sum(1)
        if producer.bias is not None:
            incoming = incoming + producer.bias.abs()
        outgoing = consumer.weight.transpose(0, 1).reshape(units, block, -1).abs().sum((1, 2))
        keep = ((incoming > 0) & (outgoing > 0)).nonzero().flatten()
        if len(keep) == units or len(keep) == 0:
            continue
        _keep_outputs(producer, keep)
        columns = (keep[:, None] * block + torch.arange(block)).flatten()
        _keep_inputs(consumer, columns)
        removed[producer_name] = units - len(keep)
    traced.recompile()
    return traced, removed


def _keep_outputs(layer: nn.Module, keep: Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight[keep].clone())
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias[keep].clone())
    if isinstance(layer, nn.Linear):
        layer.out_features = len(keep)
    else:
        layer.out_channels = len(keep)


def _keep_inputs(layer: nn.Module, columns: Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight[:, columns].clone())
    if isinstance(layer, nn.Linear):
        layer.in_features = len(columns)
    else:
        layer.in_channels = len(columns)


DEAD_UNITS_FORM = "dead units removed + csr"


def export_layout(exported: nn.Module, form: str) -> dict[str, object]:
    """What :func:`rebuild_export` needs to turn the dense-with-zeros weights back into
    ``exported``: the form and which layers run as CSR or feature-major. Both transforms
    are deterministic functions of the weights, so no pickled module is stored."""
    return {"form": form,
            "csr": [n for n, m in exported.named_modules() if isinstance(m, CSRLinear)],
            "feature_major": [n for n, m in exported.named_modules()
                              if type(m) is FeatureMajorLinear]}


@torch.no_grad()
def rebuild_export(model: nn.Module, layout: dict[str, object]) -> nn.Module:
    """The exported form of ``model`` (its dense-with-zeros weights loaded) that
    :func:`export_layout` described, e.g. read from a ``sparse export`` run's
    ``export.json``: dead units removed if the form says so, the named layers as CSR or
    feature-major. Raises one line if the layout does not fit the model."""
    form = layout.get("form")
    if form not in ("unchanged", "csr", DEAD_UNITS_FORM):
        raise NeuroplasticError(f"unknown export form {form!r}")
    rebuilt = remove_dead_units(model)[0] if form == DEAD_UNITS_FORM else copy.deepcopy(model)
    rebuilt.eval()
    modules = dict(rebuilt.named_modules())
    for kind, wrap in (("csr", CSRLinear), ("feature_major", FeatureMajorLinear)):
        for name in layout.get(kind, []):  # type: ignore[union-attr]
            if type(modules.get(name)) is not nn.Linear:
                raise NeuroplasticError(f"export layout names {name!r}, which is not a Linear "
                                        "layer of this model")
            _replace(rebuilt, name, wrap(modules[name]))
    return rebuilt
