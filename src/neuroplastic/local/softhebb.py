"""SoftHebb: soft winner-take-all Hebbian learning with anti-Hebbian non-winners.

Journé, Rodriguez, Guo & Moraitis, "Hebbian deep learning without feedback", ICLR 2023
(reference code ``NeuromorphicComputing/SoftHebb``, ``demo.py``). For a layer with weighted
input ``u = W x`` (per position of a convolution):

- ``y = softmax(t_invert * u)`` over the output units (channels); every non-winner's ``y`` is
  negated (anti-Hebbian), the winner keeps its sign;
- ``dW = y x^T - (sum y * u) W`` summed over the batch (and positions), then divided by
  ``max |dW|``;
- each unit k moves by ``lr * |‖w_k‖ - 1| ** 0.5 * dW_k``, so weight norms converge to 1.

Hebbian layers carry no bias. Blocks are ``BatchNorm(affine=False) -> layer -> Triangle``,
and a linear readout is trained by backprop on the frozen features.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from neuroplastic import distributed, loop
from neuroplastic.batches import eval_mode, iter_batches, model_device, train_mode
from neuroplastic.checks import require_positive
from neuroplastic.data.splits import DataSplit, loader
from neuroplastic.errors import NeuroplasticError
from neuroplastic.local.base import LocalRule, LocalUpdates, add_grad_
from neuroplastic.local.protocol import Control, LearnContext, LearnDefaults, LearnMethod, LearnOutcome
from neuroplastic.loop import FitResult, ProgressFn
from neuroplastic.record import as_rows
from neuroplastic.registry import register
from neuroplastic.types import Data


class Triangle(nn.Module):
    """``relu(u - mean over channels) ** power`` (the mean is taken without gradient, as in
    the reference)."""

    def __init__(self, power: float = 1.0) -> None:
        super().__init__()
        self.power = power

    def forward(self, x: Tensor) -> Tensor:
        centred = x - x.detach().mean(dim=1, keepdim=True)
        return F.relu(centred) ** self.power


def _patches(layer: nn.Module, pre: Tensor) -> Tensor:
    """Inputs as rows, one per (sample, output position): ``(N, fan_in)``."""
    if isinstance(layer, nn.Linear):
        return pre.reshape(-1, layer.in_features)
    conv: nn.Conv2d = layer  # type: ignore[assignment]
    if conv.groups != 1 or isinstance(conv.padding, str):
        raise NeuroplasticError("SoftHebb supports Conv2d with groups=1 and integer padding")
    return as_rows(conv, pre)  # padded as the layer pads (its padding mode)


def _weighted_inputs(layer: nn.Module, post: Tensor) -> Tensor:
    """``u = W x`` as rows ``(N, units)`` (the bias, if any, taken off the output)."""
    if isinstance(layer, nn.Linear):
        u = post.reshape(-1, layer.out_features)
        return u if layer.bias is None else u - layer.bias
    u = post.permute(0, 2, 3, 1).reshape(-1, post.shape[1])
    return u if layer.bias is None else u - layer.bias


class SoftHebb(LocalRule):
    """SoftHebb (Journé et al., ICLR 2023): soft winner-take-all Hebbian plasticity with
    anti-Hebbian non-winners and a norm-dependent learning rate; unsupervised.

    Args:
        t_invert: inverse temperature of the softmax competition.
        anti_hebbian: negate the non-winners' activations (the reference's default).
        lr_power: exponent of the per-unit learning-rate factor ``|‖w_k‖ - 1|``.
    """

    supported = (nn.Linear, nn.Conv2d)

    def __init__(self, *, t_invert: float = 1.0, anti_hebbian: bool = True, lr_power: float = 0.5) -> None:
        require_positive("t_invert", t_invert)
        self.t_invert = t_invert
        self.anti_hebbian = anti_hebbian
        self.lr_power = lr_power

    def delta(self, layer: nn.Module, pre: Tensor, post: Tensor) -> Tensor:
        """The normalised Hebbian change ``dW / max|dW|``, shaped like the weight (an ascent
        direction: the weight moves along it)."""
        x = _patches(layer, pre)
        u = _weighted_inputs(layer, post)
        y = torch.softmax(self.t_invert * u, dim=1)
        if self.anti_hebbian:
            winners = u.argmax(dim=1)
            y = -y
            rows = torch.arange(len(y), device=y.device)
            y[rows, winners] = -y[rows, winners]
        weight = layer.weight.reshape(layer.weight.shape[0], -1)
        # y^T x - (y * u)^T 1 * W, in place: a weight-sized temporary in every step costs its
        # page faults (most of the step on a 784-2000 layer at batch 10)
        change = (y.T @ x).addcmul_(weight, (y * u).sum(dim=0)[:, None], value=-1)
        # a sum over the batch: under torchrun every rank's part, before the normalisation
        distributed.all_reduce_sum_(change)
        low, high = torch.aminmax(change)
        change.div_(torch.maximum(low.abs(), high.abs()) + 1e-30)  # max |dW|, without an |dW| copy
        return change.reshape(layer.weight.shape)

    def rate_factor(self, layer: nn.Module) -> Tensor:
        """Per unit ``|‖w_k‖ - 1| ** lr_power`` (+1e-10, as the reference)."""
        norms = layer.weight.reshape(layer.weight.shape[0], -1).norm(dim=1)
        return ((norms - 1).abs() + 1e-10) ** self.lr_power

    def update_(self, layer: nn.Module, pre: Tensor, post: Tensor) -> None:
        change = self.delta(layer, pre, post)
        factor = self.rate_factor(layer).reshape(-1, *([1] * (change.dim() - 1)))
        add_grad_(layer.weight, change.mul_(factor).neg_())  # descent direction: the optimizer subtracts it


@dataclass
class HebbianLayer:
    """One Hebbian layer of a :class:`SoftHebbNet`: its competition and learning rate."""

    t_invert: float
    lr: float


@dataclass
class SoftHebbPlan:
    """Which layers of a network learn by SoftHebb, and how."""

    layers: dict[str, HebbianLayer] = field(default_factory=dict)


class SoftHebbNet(nn.Module):
    """Hebbian feature blocks, then a readout (dropout + linear) trained by backprop."""

    def __init__(self, features: nn.Sequential, readout: nn.Sequential, plan: SoftHebbPlan) -> None:
        super().__init__()
        self.features = features
        self.readout = readout
        self.plan = plan

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.features(x))


def _hebbian_init_(layer: nn.Module) -> nn.Module:
    """The reference's init: ``randn * 25 / sqrt(fan_in)``."""
    fan_in = layer.weight[0].numel()
    with torch.no_grad():
        layer.weight.copy_(torch.randn_like(layer.weight) * 25 / math.sqrt(fan_in))
    return layer


def softhebb_mlp(in_features: int, num_classes: int, *, width: int = 32, t_invert: float = 1.0,
                 power: float = 1.0, lr: float = 0.08, dropout: float = 0.5) -> SoftHebbNet:
    """One Hebbian fully connected block: flatten, BatchNorm1d(affine=False),
    Linear(no bias, SoftHebb), Triangle(power); then dropout + linear readout."""
    layer = _hebbian_init_(nn.Linear(in_features, width, bias=False))
    features = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(in_features, affine=False), layer, Triangle(power))
    readout = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))
    return SoftHebbNet(features, readout, SoftHebbPlan({"features.2": HebbianLayer(t_invert, lr)}))


def softhebb_cifar(num_classes: int = 10, *, in_channels: int = 3, image_size: int = 32) -> SoftHebbNet:
    """The reference's CIFAR-10 network (``demo.py``): three blocks BN(affine=False) -> conv
    (96 k5 / 384 k3 / 1536 k3, reflect padding) -> Triangle(0.7 / 1.4 / 1) -> pool
    (max 4/2/1, max 4/2/1, avg 2/2); t_invert 1 / 0.65 / 0.25; lr 0.08 / 0.005 / 0.01;
    readout dropout 0.5 + linear."""
    specs = [(in_channels, 96, 5, 2, 1.0, 0.7, 0.08, nn.MaxPool2d(4, 2, 1)),
             (96, 384, 3, 1, 0.65, 1.4, 0.005, nn.MaxPool2d(4, 2, 1)),
             (384, 1536, 3, 1, 0.25, 1.0, 0.01, nn.AvgPool2d(2, 2))]
    blocks: list[nn.Module] = []
    plan = SoftHebbPlan()
    for c_in, c_out, k, pad, t_inv, power, lr, pool in specs:
        conv = _hebbian_init_(nn.Conv2d(c_in, c_out, k, padding=pad, padding_mode="reflect", bias=False))
        plan.layers[f"features.{len(blocks) + 1}"] = HebbianLayer(t_inv, lr)
        blocks += [nn.BatchNorm2d(c_in, affine=False), conv, Triangle(power), pool]
    blocks.append(nn.Flatten())
    features = nn.Sequential(*blocks)
    with torch.no_grad():
        width = features.eval()(torch.zeros(1, in_channels, image_size, image_size)).shape[1]
    return SoftHebbNet(features, nn.Sequential(nn.Dropout(0.5), nn.Linear(width, num_classes)), plan)


def hebbian_phase(model: SoftHebbNet, data: Data, *, epochs: float, anti_hebbian: bool = True,
                  lr_power: float = 0.5, progress: ProgressFn | None = None) -> FitResult:
    """Unsupervised SoftHebb training of the plan's layers (SGD, one step per batch, each
    layer at its own learning rate and competition), through :func:`neuroplastic.loop.fit`."""
    modules = dict(model.named_modules())
    rules = {name: SoftHebb(t_invert=spec.t_invert, anti_hebbian=anti_hebbian, lr_power=lr_power)
             for name, spec in model.plan.layers.items()}
    groups = [{"params": [modules[name].weight], "lr": spec.lr} for name, spec in model.plan.layers.items()]
    optimizer = torch.optim.SGD(groups, lr=0.0)
    return loop.fit(model, data, optimizer=optimizer, epochs=epochs,
                    batch_grads=LocalUpdates(model, rules), progress=progress)


@torch.no_grad()
def estimate_norm_stats_(model: nn.Module, data: Data) -> None:
    """Re-estimate every BatchNorm's running statistics as exact averages over ``data``
    with the current weights (after Hebbian learning the deeper blocks' inputs changed)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    device = model_device(model)
    with train_mode(model):
        for x, _ in iter_batches(data, device=device, name="training"):
            model(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


@torch.no_grad()
def features_of(model: SoftHebbNet, data: Data) -> TensorDataset:
    """The frozen feature extractor's outputs (eval mode) with their labels."""
    device = model_device(model)
    xs, ys = [], []
    with eval_mode(model):
        for x, y in iter_batches(data, device=device, name="features"):
            xs.append(model.features(x))
            ys.append(y)
    return TensorDataset(torch.cat(xs), torch.cat(ys))


def train_softhebb(model: SoftHebbNet, data: Data, *, hebbian_epochs: float = 5,
                   readout_epochs: int = 50, readout_lr: float = 1e-3, readout_batch_size: int = 64,
                   hebbian: bool = True, anti_hebbian: bool = True, lr_power: float = 0.5,
                   seed: int = 0, plugins: Sequence[object] = (),
                   progress: ProgressFn | None = None) -> dict[str, float]:
    """Hebbian phase (skipped with ``hebbian=False``: the random-features control), BatchNorm
    statistics re-estimated, then the readout trained by Adam on the frozen features
    (batches of ``readout_batch_size``, the reference's 64; ``plugins`` join that loop).

    Returns:
        Seconds of each phase: ``hebbian_seconds``, ``readout_seconds``.
    """
    begin = time.perf_counter()
    if hebbian:
        hebbian_phase(model, data, epochs=hebbian_epochs, anti_hebbian=anti_hebbian, lr_power=lr_power,
                      progress=progress)
    estimate_norm_stats_(model, data)
    middle = time.perf_counter()
    features = features_of(model, data)
    batches = loader(features, batch_size=readout_batch_size, shuffle=True, seed=seed)
    optimizer = torch.optim.Adam(model.readout.parameters(), lr=readout_lr)
    loop.fit(model.readout, batches, optimizer=optimizer, epochs=readout_epochs, plugins=plugins,
             progress=progress)
    model.eval()
    return {"hebbian_seconds": middle - begin, "readout_seconds": time.perf_counter() - middle}


@register("softhebb", kind="learn", needs=("own_network",))
class SoftHebbLearning(LearnMethod):
    """SoftHebb (Journé et al., ICLR 2023): soft winner-take-all Hebbian plasticity with
    anti-Hebbian non-winners and a norm-dependent learning rate, unsupervised; then a linear
    readout trained by Adam on the frozen features.

    Args:
        t_invert: inverse temperature of the softmax competition.
        anti_hebbian: negate the non-winners' activations (the reference's default).
        lr_power: exponent of the per-unit learning-rate factor ``|‖w_k‖ - 1|``.
        hebbian_epochs: epochs of the unsupervised phase (the run's ``epochs`` are the
            readout's).
        readout_batch_size: the readout's batch size (the reference's 64; the run's batch
            size is the Hebbian phase's).
    """

    # epochs = readout epochs (the Hebbian phase has its own, 5); batch = Hebbian batch (10)
    defaults = LearnDefaults((32,), 50, 1e-3, 10)
    own_network = True
    twin_batch_size = 64
    curve_note = "readout epochs"

    def __init__(self, *, t_invert: float = 1.0, anti_hebbian: bool = True, lr_power: float = 0.5,
                 hebbian_epochs: float = 5, readout_batch_size: int = 64) -> None:
        self.t_invert = require_positive("t_invert", t_invert)
        self.anti_hebbian, self.lr_power = anti_hebbian, lr_power
        self.hebbian_epochs = require_positive("hebbian_epochs", hebbian_epochs)
        self.readout_batch_size = int(require_positive("readout_batch_size", readout_batch_size))

    def network(self, split: DataSplit, hidden: tuple[int, ...]) -> nn.Module:
        """:func:`softhebb_mlp` of the one width in ``hidden``."""
        if len(hidden) != 1:
            raise NeuroplasticError("softhebb's default network has one Hebbian layer: "
                                    "give one --hidden width")
        return softhebb_mlp(math.prod(split.input_shape), split.num_classes, width=hidden[0],
                            t_invert=self.t_invert)

    def train(self, model: nn.Module, ctx: LearnContext, *, hebbian: bool = True) -> LearnOutcome:
        """:func:`train_softhebb`; ``hebbian=False`` trains only the readout (the
        random-features control)."""
        phases = train_softhebb(model, ctx.batches(ctx.batch_size), hebbian=hebbian,  # type: ignore[arg-type]
                                hebbian_epochs=self.hebbian_epochs, anti_hebbian=self.anti_hebbian,
                                lr_power=self.lr_power, readout_epochs=ctx.epochs, readout_lr=ctx.lr,
                                readout_batch_size=self.readout_batch_size, seed=ctx.seed,
                                plugins=ctx.plugins, progress=ctx.progress)
        if not hebbian:
            return LearnOutcome()
        norms = weight_norms(model)  # type: ignore[arg-type]
        return LearnOutcome(metrics={**phases, "weight_norm.mean": float(norms.mean()),
                                     "weight_norm.max_deviation": float((norms - 1).abs().max())})

    def controls(self) -> dict[str, Control]:
        """Random features: the same network with its Hebbian layer left at initialisation."""
        return {"random_features": lambda model, ctx: self.train(model, ctx, hebbian=False)}


def weight_norms(model: SoftHebbNet) -> Tensor:
    """The L2 norm of every Hebbian unit's weights (SoftHebb drives them to 1)."""
    modules = dict(model.named_modules())
    return torch.cat([modules[name].weight.detach().flatten(1).norm(dim=1) for name in model.plan.layers])
