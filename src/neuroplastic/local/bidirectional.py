"""Bidirectional learning (Pontes-Filho & Liwicki, IJCNN 2019, arXiv 1805.08006; reference
code ``sidneyp/bidirectional``).

A classifier x -> y and a generator y -> x share their weights: the generator runs the
classifier's layers backwards with transposed weights (``F.linear(h, W.T)``,
``conv_transpose2d``) and biases of its own, with the same activations in between.
Training alternates, per batch, a classifier step (cross-entropy, Adam) and a generator
step on the shared weights and the generator biases:

- ``biprop``: the generator reconstructs each image from its one-hot label (sigmoid
  cross-entropy on the generator's logits), every step;
- ``halfbiprop``: the same for the first half of the steps only, then backprop alone;
- ``han``: the generator, fed uniform noise z ~ U(-1, 1)^classes, is trained adversarially
  against a separate discriminator (non-saturating GAN loss); the reference uses Adam with
  beta1 0.5 and lr 2e-4 (classifier, discriminator) / 1e-3 (generator).

Classifiers are ``nn.Sequential`` models (nested ones are flattened) of Linear / Conv2d
layers with activations, Flatten, pooling (undone by nearest upsampling) and dropout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuroplastic import distributed, loop
from neuroplastic.batches import model_device
from neuroplastic.checks import require_choice, require_positive
from neuroplastic.errors import NeuroplasticError
from neuroplastic.local.protocol import LearnContext, LearnDefaults, LearnMethod, LearnOutcome
from neuroplastic.loop import FitResult, Plugin, ProgressFn
from neuroplastic.registry import register
from neuroplastic.types import Data

WEIGHTED = (nn.Linear, nn.Conv2d)
ACTIVATIONS = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Softplus, nn.GELU, nn.SiLU)
POOLS = (nn.MaxPool2d, nn.AvgPool2d)
PASSTHROUGH = (nn.Dropout, nn.Identity)


def sequential_layers(model: nn.Module) -> list[nn.Module]:
    """The leaf layers of an ``nn.Sequential`` (nested ones flattened), in order."""
    if not isinstance(model, nn.Sequential):
        raise NeuroplasticError("bidirectional learning needs an nn.Sequential classifier (Linear / "
                                f"Conv2d layers with activations), got {type(model).__name__}")
    layers: list[nn.Module] = []
    for module in model:
        layers.extend(sequential_layers(module) if isinstance(module, nn.Sequential) else [module])
    for layer in layers:
        if not isinstance(layer, (*WEIGHTED, *ACTIVATIONS, *POOLS, *PASSTHROUGH, nn.Flatten)):
            raise NeuroplasticError(f"bidirectional learning cannot run a {type(layer).__name__} "
                                    "backwards: use Linear, Conv2d, activations, Flatten, pooling, dropout")
        if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or isinstance(layer.padding, str)
                                             or layer.padding_mode != "zeros"):
            raise NeuroplasticError("bidirectional learning supports Conv2d with groups=1 and zero "
                                    "integer padding")
    if not any(isinstance(layer, WEIGHTED) for layer in layers):
        raise NeuroplasticError("the classifier has no Linear or Conv2d layer to share")
    return layers


class TransposedGenerator(nn.Module):
    """y -> x through a classifier's own weights, transposed; only its biases are its own.

    Args:
        classifier: an ``nn.Sequential`` (see the module docstring).
        example: one input batch (its shapes fix the generator's output shapes).

    ``forward(code)`` returns the generator's *logits* for x, shaped like the inputs.
    The classifier's modules are referenced, not registered, so ``parameters()`` holds
    only the generator biases; :meth:`shared_weights` gives the shared tensors.
    """

    def __init__(self, classifier: nn.Module, example: Tensor) -> None:
        super().__init__()
        layers = sequential_layers(classifier)
        shapes = []
        h = example[:1]
        with torch.no_grad():
            for layer in layers:
                shapes.append(tuple(h.shape[1:]))
                h = layer.eval()(h) if isinstance(layer, nn.Dropout) else layer(h)
        object.__setattr__(self, "_layers", layers)  # not submodules: no parameter is counted twice
        self.shapes = shapes
        weighted = [i for i, layer in enumerate(layers) if isinstance(layer, WEIGHTED)]
        self.first, self.last = weighted[0], weighted[-1]
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(shapes[i][0], device=example.device)) for i in weighted)
        self.bias_of = {i: n for n, i in enumerate(weighted)}

    def shared_weights(self) -> list[Tensor]:
        return [layer.weight for layer in self._layers if isinstance(layer, WEIGHTED)]  # type: ignore[attr-defined]

    def forward(self, code: Tensor) -> Tensor:
        h = code
        layers: list[nn.Module] = self._layers  # type: ignore[attr-defined]
        for index in range(self.last, self.first - 1, -1):
            layer, shape = layers[index], self.shapes[index]
            if isinstance(layer, nn.Linear):
                h = F.linear(h, layer.weight.t(), self.biases[self.bias_of[index]])
            elif isinstance(layer, nn.Conv2d):
                h = self._conv_transpose(layer, h, shape) + self.biases[self.bias_of[index]][:, None, None]
            elif isinstance(layer, nn.Flatten):
                h = h.reshape(len(h), *shape)
            elif isinstance(layer, POOLS):
                h = F.interpolate(h, size=shape[-2:], mode="nearest")
            elif isinstance(layer, ACTIVATIONS):
                h = layer(h)
        for index in range(self.first - 1, -1, -1):  # reshapes before the first layer (Flatten)
            if isinstance(layers[index], nn.Flatten):
                h = h.reshape(len(h), *self.shapes[index])
        return h

    @staticmethod
    def _conv_transpose(layer: nn.Conv2d, h: Tensor, shape: tuple[int, ...]) -> Tensor:
        stride, padding, dilation = layer.stride, layer.padding, layer.dilation
        extra = []
        for axis in range(2):
            natural = (h.shape[2 + axis] - 1) * stride[axis] - 2 * padding[axis] \
                + dilation[axis] * (layer.kernel_size[axis] - 1) + 1  # type: ignore[index]
            extra.append(shape[1 + axis] - natural)
        return F.conv_transpose2d(h, layer.weight, None, stride, padding, tuple(extra), 1, dilation)


def _reconstruction_loss(kind: str, logits: Tensor, x: Tensor) -> Tensor:
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, x)
    return F.mse_loss(logits, x)


@dataclass
class GeneratorSteps(Plugin):
    """A loop plugin: after each classifier step, one generator step on the same batch."""

    generator: TransposedGenerator
    optimizer: torch.optim.Optimizer
    reconstruction: str
    num_classes: int
    until_step: float = math.inf
    discriminator: nn.Module | None = None
    disc_optimizer: torch.optim.Optimizer | None = None
    batch: tuple[Tensor, Tensor] | None = None
    losses: list[float] = field(default_factory=list)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, loss: Tensor) -> Tensor:
        self.batch = (x, y)
        return loss

    def after_step(self, model: nn.Module, step: int) -> None:
        if step > self.until_step or self.batch is None:
            return
        x, y = self.batch
        if self.discriminator is None:
            code = F.one_hot(y, self.num_classes).to(x.dtype)
            self.optimizer.zero_grad(set_to_none=True)
            loss = _reconstruction_loss(self.reconstruction, self.generator(code), x)
            loss.backward()
            # under torchrun: the full batch's gradient, as the classifier's (loop.fit)
            distributed.all_reduce_gradients_(self._trained(), distributed.batch_share())
            self.optimizer.step()
        else:
            loss = self._adversarial_step(x)
        self.losses.append(float(loss.detach()))
        model.zero_grad(set_to_none=True)

    def _trained(self) -> list[nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _fake(self, count: int, like: Tensor) -> Tensor:
        z = torch.rand(count, self.num_classes, device=like.device, dtype=like.dtype) * 2 - 1
        logits = self.generator(z)
        return torch.sigmoid(logits) if self.reconstruction == "bce" else logits

    def _adversarial_step(self, x: Tensor) -> Tensor:
        disc, disc_opt = self.discriminator, self.disc_optimizer
        assert disc is not None and disc_opt is not None
        ones = torch.ones(len(x), 1, device=x.device)
        disc_opt.zero_grad(set_to_none=True)
        fake = self._fake(len(x), x).detach()
        d_loss = F.binary_cross_entropy_with_logits(disc(x), ones) + \
            F.binary_cross_entropy_with_logits(disc(fake), torch.zeros_like(ones))
        d_loss.backward()
        disc_opt.step()
        self.optimizer.zero_grad(set_to_none=True)
        g_loss = F.binary_cross_entropy_with_logits(disc(self._fake(len(x), x)), ones)
        g_loss.backward()
        self.optimizer.step()
        disc.zero_grad(set_to_none=True)
        return g_loss


class Bidirectional(LearnMethod):
    """Shared-weight classifier and generator trained in alternation (see module docstring).

    Class attributes: ``adversarial`` (HAN: the generator trains against a discriminator,
    Adam betas (0.5, 0.999)) and ``half`` (half biprop: the generator stops half-way).

    Args:
        generator_lr: the generator's Adam learning rate (default: the classifier's for
            biprop, as the reference's single 0.003; 1e-3 for HAN).
        reconstruction: ``bce`` (sigmoid cross-entropy; inputs in [0, 1], the reference's),
            ``mse``, or ``auto`` (bce when the first batch lies in [0, 1]).
        disc_hidden: width of HAN's discriminator (an MLP on flattened inputs).
    """

    adversarial = False
    half = False
    # the reference: 784-16-10, Adam 0.003, batch 100
    defaults = LearnDefaults((16,), 100, 3e-3, 100)

    def __init__(self, *, generator_lr: float | None = None, reconstruction: str = "auto",
                 disc_hidden: int = 128, disc_lr: float = 2e-4) -> None:
        self.generator_lr = None if generator_lr is None else require_positive("generator_lr", generator_lr)
        self.reconstruction = require_choice("reconstruction", reconstruction, ("auto", "bce", "mse"))
        self.disc_hidden = int(require_positive("disc_hidden", disc_hidden))
        self.disc_lr = require_positive("disc_lr", disc_lr)
        self.generator: TransposedGenerator | None = None
        self.steps: GeneratorSteps | None = None

    def fit(self, model: nn.Module, data: Data, *, num_classes: int, epochs: float, lr: float,
            progress: ProgressFn | None = None, plugins: tuple[object, ...] = (),
            example: Tensor | None = None) -> FitResult:
        """Train ``model`` (the classifier) in place; the generator is kept in
        ``self.generator``. ``example``: a few inputs that fix the generator's shapes
        (default: the first batch of ``data``; note that reading it advances a shuffling
        loader's random generator, so pass ``example`` to keep the batch order of a twin run)."""
        require_positive("lr", lr)
        device = model_device(model)
        if example is None:
            first = next(iter(data), None)
            if first is None:
                raise NeuroplasticError("cannot train on empty data")
            example = first[0]
        x0 = example.to(device)
        self.generator = TransposedGenerator(model, x0).to(device)
        kind = self.reconstruction
        if kind == "auto":
            kind = "bce" if float(x0.min()) >= 0 and float(x0.max()) <= 1 else "mse"
        han = self.adversarial
        betas = (0.5, 0.999) if han else (0.9, 0.999)
        gen_lr = self.generator_lr or (1e-3 if han else lr)
        gen_opt = torch.optim.Adam([*self.generator.shared_weights(), *self.generator.parameters()],
                                   lr=gen_lr, betas=betas)
        steps = GeneratorSteps(self.generator, gen_opt, kind, num_classes)
        if self.half:
            per_epoch = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
            if per_epoch is None:
                raise NeuroplasticError("halfbiprop needs data with a length (to find the half-way step)")
            steps.until_step = epochs * per_epoch / 2
        if han:
            width = math.prod(x0.shape[1:])
            steps.discriminator = nn.Sequential(
                nn.Flatten(), nn.Linear(width, self.disc_hidden), nn.LeakyReLU(0.2),
                nn.Linear(self.disc_hidden, 1)).to(device)
            steps.disc_optimizer = torch.optim.Adam(steps.discriminator.parameters(), lr=self.disc_lr,
                                                    betas=betas)
        self.steps = steps
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
        return loop.fit(model, data, optimizer=optimizer, epochs=epochs, plugins=[*plugins, steps],
                        progress=progress)

    def train(self, model: nn.Module, ctx: LearnContext) -> LearnOutcome:
        """:meth:`fit` on the run's batches (``ctx.example`` fixes the generator's shapes, so
        the batch order matches the backprop twin's)."""
        self.fit(model, ctx.batches(ctx.batch_size), num_classes=ctx.split.num_classes, epochs=ctx.epochs,
                 lr=ctx.lr, progress=ctx.progress, plugins=tuple(ctx.plugins), example=ctx.example)
        return LearnOutcome()


@register("biprop", kind="learn", needs=("labels", "lr"))
class Biprop(Bidirectional):
    """Bidirectional propagation (Pontes-Filho & Liwicki, IJCNN 2019): a shared-weight
    generator reconstructs each input from its label, alternating with the classifier."""


@register("halfbiprop", kind="learn", needs=("labels", "lr"))
class HalfBiprop(Bidirectional):
    """Half biprop (Pontes-Filho & Liwicki, IJCNN 2019): biprop for the first half of
    training, backprop alone for the second."""

    half = True


@register("han", kind="learn", needs=("labels", "lr"))
class HAN(Bidirectional):
    """Hybrid adversarial networks (Pontes-Filho & Liwicki, IJCNN 2019): the shared-weight
    generator is trained adversarially against a discriminator."""

    adversarial = True
