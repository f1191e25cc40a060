"""Gradient projection memory (GPM) and Hebbian learning based orthogonal projection (HLOP).

Both keep, for every Linear / Conv2d layer, a basis of the inputs old tasks gave that
layer, and train later tasks with weight gradients projected off it, G <- G - G Q Q^T, so
the layer's outputs on old inputs do not move. GPM finds the basis by SVD after each task;
HLOP learns it during the task with Oja's subspace rule, a local Hebbian update.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from neuroplastic import distributed
from neuroplastic.checks import require_in, require_positive
from neuroplastic.continual.base import ContinualMethod
from neuroplastic.data.splits import loader
from neuroplastic.data.streams import Experience
from neuroplastic.errors import NeuroplasticError
from neuroplastic.intervene.gradients import GradientProjection
from neuroplastic.record import LayerRecorder, as_rows, padded_input
from neuroplastic.registry import register

LAYERS = (nn.Linear, nn.Conv2d)


def projectable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Linear and Conv2d layer of ``model``, by name, in model order."""
    layers = {name: module for name, module in model.named_modules() if isinstance(module, LAYERS)}
    if not layers:
        raise NeuroplasticError(f"{type(model).__name__} has no Linear or Conv2d layer to project")
    return layers


def _output_size(layer: nn.Conv2d, padded: tuple[int, int]) -> tuple[int, int]:
    """(rows, columns) of positions a convolution takes on an input of ``padded`` size."""
    out = [(length - dilation * (kernel - 1) - 1) // stride + 1
           for length, kernel, dilation, stride in zip(padded, layer.kernel_size, layer.dilation,
                                                       layer.stride, strict=True)]
    return out[0], out[1]


def row_count(layer: nn.Module, inputs: Tensor) -> int:
    """How many rows :func:`as_rows` gives, without forming them."""
    if isinstance(layer, nn.Conv2d):
        left, right, top, bottom = layer._reversed_padding_repeated_twice
        out_h, out_w = _output_size(layer, (inputs.shape[-2] + top + bottom, inputs.shape[-1] + left + right))
        return inputs.shape[0] * out_h * out_w * layer.groups
    return inputs.numel() // inputs.shape[-1]


def sampled_rows(layer: nn.Module, inputs: Tensor, *, limit: int,
                 generator: torch.Generator) -> Tensor:
    """``limit`` rows of :func:`as_rows` drawn uniformly without replacement (all of them,
    in order, when there are no more), in the order of the draw (``torch.randperm`` with
    ``generator``, on the CPU). A convolution's drawn patches are gathered from the padded
    input directly: the whole unfolded input (a ResNet-18 layer1 batch's is 65,536 x 576
    floats) is never formed."""
    total = row_count(layer, inputs)
    if total <= limit:
        return as_rows(layer, inputs)
    index = torch.randperm(total, generator=generator)[:limit].to(inputs.device)
    if not isinstance(layer, nn.Conv2d):
        return inputs.reshape(-1, inputs.shape[-1])[index]
    padded = padded_input(layer, inputs).contiguous()
    (kh, kw), (dh, dw), (sh, sw) = layer.kernel_size, layer.dilation, layer.stride
    out_h, out_w = _output_size(layer, (padded.shape[-2], padded.shape[-1]))
    step_sample, step_channel, step_row, step_column = padded.stride()
    # every patch as a view (sample, channel, row, column, kernel row, kernel column): no copy
    windows = padded.as_strided((padded.shape[0], padded.shape[1], out_h, out_w, kh, kw),
                                (step_sample, step_channel, step_row * sh, step_column * sw,
                                 step_row * dh, step_column * dw))
    groups, group_channels = layer.groups, padded.shape[1] // layer.groups
    place, group = index // groups, index % groups  # row = (sample * positions + position) * groups + group
    position = (place % (out_h * out_w))[:, None]
    channel = group[:, None] * group_channels + torch.arange(group_channels, device=inputs.device)
    patches = windows[(place // (out_h * out_w))[:, None], channel, position // out_w,
                      position % out_w]  # (limit, group_channels, kh, kw)
    return patches.reshape(limit, -1)


class InputRecorder(LayerRecorder):
    """A :class:`~neuroplastic.record.LayerRecorder` of layer inputs, read as rows."""

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        super().__init__(layers, inputs=True)

    def rows(self, *, limit: int | None = None, generator: torch.Generator | None = None
             ) -> dict[str, Tensor]:
        """Each layer's last input as rows (:func:`as_rows`); with ``limit``, at most that
        many per layer, drawn at random with ``generator`` (:func:`sampled_rows`)."""
        if limit is None:
            return {name: as_rows(self.layers[name], x) for name, x in self.inputs.items()}
        if generator is None:
            raise NeuroplasticError("rows(limit=...) needs the generator that draws them")
        return {name: sampled_rows(self.layers[name], x, limit=limit, generator=generator)
                for name, x in self.inputs.items()}


class _Projected(ContinualMethod):
    """Shared by GPM and HLOP: a basis per layer, projection of weight gradients off it from
    the second task on, every other parameter (biases, norm affine) frozen after the first
    task (as the HLOP reference trains only >= 2-D parameters then)."""

    def __init__(self) -> None:
        self.bases: dict[str, Tensor] = {}  # layer name -> (inputs, k) orthonormal columns
        self.tasks_done = 0
        self._projection: GradientProjection | None = None
        self._frozen: frozenset[str] = frozenset()  # every parameter but the projected weights

    def _weights(self, model: nn.Module) -> dict[str, str]:
        return {f"{name}.weight": name for name in projectable_layers(model)}

    def _refresh_projection(self, model: nn.Module) -> None:
        weights = self._weights(model)
        bases = {weight: self.bases[layer] for weight, layer in weights.items() if layer in self.bases}
        self._projection = GradientProjection(bases) if bases else None
        self._frozen = frozenset(n for n, _ in model.named_parameters() if n not in weights)

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        if self.tasks_done == 0:
            return
        if self._projection is not None:
            self._projection.after_backward(model)
        for name, param in model.named_parameters():
            if name in self._frozen and param.grad is not None:
                param.grad.zero_()


def checked_rows(rows: object) -> int | tuple[int, ...]:
    """A row count per layer and task: one int >= 1, or a list of them (one per layer)."""
    values = [rows] if not isinstance(rows, (list, tuple)) else list(rows)
    if not values or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in values):
        raise NeuroplasticError(f"rows must be an integer >= 1 or a list of them (one per layer), got "
                                f"{rows!r} (0 rows would protect nothing: that is finetune)")
    return rows if isinstance(rows, int) else tuple(values)  # type: ignore[return-value]


def rows_of_layer(rows: int | Sequence[int], index: int) -> int:
    """The row count of layer ``index`` (in model order)."""
    if isinstance(rows, int):
        return rows
    if index >= len(rows):
        raise NeuroplasticError(f"rows lists {len(rows)} layer(s), and the model has more Linear/Conv2d "
                                "layers: give one count per layer, or one int for all")
    return int(rows[index])


class Representation:
    """The representation GPM decomposes for one layer, read batch by batch: the input rows
    themselves (float64) while they are fewer than the layer's inputs, then only their Gram
    matrix X^T X (inputs x inputs, summed in float64; each batch's product and the final
    eigendecomposition in ``products`` precision), so a convolution's hundreds of thousands
    of unfolded patches are never held at once. Both are sums over rows, so the ranks of a
    process group each read their part of every batch and :meth:`reduce` combines them."""

    def __init__(self, inputs: int, device: torch.device, *, products: torch.dtype = torch.float64) -> None:
        self.inputs, self.device, self.products = inputs, device, products
        self.rows: Tensor | None = None  # (count, inputs) while count < inputs
        self.gram: Tensor | None = None  # float64, summed over batches
        self.count = 0

    def add(self, rows: Tensor) -> None:
        self.count += rows.shape[0]
        if self.gram is None and self.count < self.inputs:
            rows = rows.double()
            self.rows = rows if self.rows is None else torch.cat([self.rows, rows])
            return
        if self.gram is None:  # the rows kept so far, then this batch's in ``products`` precision
            self._to_gram()
        rows = rows.to(self.products)
        self.gram += (rows.t() @ rows).double()  # type: ignore[operator]

    def _to_gram(self) -> None:
        rows = self.rows if self.rows is not None else self._no_rows()
        self.gram, self.rows = rows.t() @ rows, None

    def _no_rows(self) -> Tensor:
        return torch.zeros(0, self.inputs, dtype=torch.float64, device=self.device)

    def reduce(self) -> None:
        """Combine the ranks' parts (nothing in one process): the Gram matrices summed, or the
        rows of every rank stacked in rank order when all ranks' rows together are still
        fewer than the inputs."""
        if not distributed.is_distributed():
            return
        self.count = int(distributed.all_reduce_sum(float(self.count), device=self.device))
        if self.count >= self.inputs:
            if self.gram is None:
                self._to_gram()
            distributed.all_reduce_sum_(self.gram)  # type: ignore[arg-type]
        else:
            self.rows = distributed.all_gather_rows(self.rows if self.rows is not None else self._no_rows())

    def directions(self, old: Tensor | None) -> tuple[Tensor, Tensor, float, float]:
        """The left singular vectors and values (largest first) of the representation with
        the ``old`` basis (inputs x k, orthonormal) projected out, the representation's
        energy and the part of it ``old`` already captures. From the Gram matrix: the
        eigendecomposition of (I - Q Q^T) X^T X (I - Q Q^T), the same subspaces and squared
        values as the SVD of the projected rows."""
        if self.gram is None:
            r = (self.rows if self.rows is not None else self._no_rows()).t()
            residual = r if old is None else r - old.double() @ (old.double().t() @ r)
            u, s, _ = torch.linalg.svd(residual, full_matrices=False)
            total = _energy(r)
            return u, s, total, total - _energy(residual)
        gram, total = self.gram, float(self.gram.trace())
        if old is not None:
            q = old.double()
            gq = gram @ q
            gram = gram - q @ gq.t() - gq @ q.t() + q @ (q.t() @ gq) @ q.t()
        values, vectors = torch.linalg.eigh(gram.to(self.products))
        values, vectors = values.double(), vectors.double()
        return vectors.flip(1), values.flip(0).clamp_min(0).sqrt(), total, total - float(gram.trace())


@torch.no_grad()
def representations(model: nn.Module, data: object, layers: dict[str, nn.Module], *,
                    samples: dict[str, int]) -> dict[str, Representation]:
    """Each layer's :class:`Representation` of its inputs on the first ``samples[name]``
    samples of ``data``. In a process group every rank reads the same batches and runs the
    model on its contiguous part of each; the parts are combined at the end."""
    from neuroplastic.batches import eval_mode, iter_batches, model_device

    device = model_device(model)
    # a convolution's patch products in float32: they are most of the cost, and a Gram
    # matrix of hundreds of thousands of rows is still summed in float64 batch by batch
    found = {name: Representation(module.weight[0].numel(), device,
                                  products=torch.float32 if isinstance(module, nn.Conv2d) else torch.float64)
             for name, module in layers.items()}
    most, seen = max(samples.values()), 0
    with eval_mode(model), InputRecorder(layers) as recorder:
        for x, _ in iter_batches(data, device=device, name="representation"):  # type: ignore[arg-type]
            x = x[: most - seen]
            part, start = distributed.shard(x), seen + distributed.shard_start(len(x))
            seen += len(x)
            if len(part):
                model(part)
                for name, inputs in recorder.inputs.items():
                    wanted = min(max(samples[name] - start, 0), len(part))  # this layer's own limit
                    if wanted:
                        found[name].add(as_rows(layers[name], inputs[:wanted]))
            if seen >= most:
                break
    for representation in found.values():
        representation.reduce()
    return found


def _energy(rows: Tensor) -> float:
    return float((rows.double() ** 2).sum())


def _merge(old: Tensor | None, new: Tensor) -> Tensor:
    """Old basis columns followed by new ones, orthonormalised (QR), at most ``inputs`` wide."""
    merged = new if old is None else torch.cat([old, new], dim=1)
    merged = merged[:, : merged.shape[0]]
    return torch.linalg.qr(merged.double())[0].to(new.dtype)


@register("gpm", kind="continual", needs=('labels',))
class GPM(_Projected):
    """Gradient projection memory (Saha, Garg & Roy, ICLR 2021): after each task, the inputs
    of every layer on (up to ``max_samples``) task samples, with the old basis projected out,
    are decomposed by SVD; the fewest top singular vectors that bring the captured energy
    to ``threshold`` of the total join the basis (or exactly ``rows`` of them: the exact-PCA
    fixed point of HLOP's Hebbian rule). Later tasks' weight gradients are projected off it.
    Where the samples (a convolution's patches) are at least as many as the layer's inputs,
    the decomposition is the eigendecomposition of their Gram matrix, accumulated batch by
    batch (same subspaces and values; :class:`Representation`).
    The counts are the original's (``update_GPM``): after the first task, the directions
    whose cumulative energy ratio stays below the threshold; after later tasks, directions
    are added until the ratio reaches it.

    Deviations from the original, stated: every parameter that is not a projected weight
    (biases, norm affine) is frozen from the second task on (as HLOP's reference; GPM's MLP
    has no biases); BatchNorm running statistics are not frozen after the first task
    (GPM's CIFAR code trains with batch statistics; the reference models of this library's
    benchmark have no BatchNorm); where a convolution's patches outnumber its inputs, their
    products and the eigendecomposition of their Gram matrix are float32 (the original's SVD
    of the patches is float64): they are most of the cost.

    Args:
        threshold: captured-energy threshold in (0, 1] (GPM's epsilon_th; default 0.97).
        rows: a fixed number of new directions per layer and task instead (one int, or one
            per layer in model order).
        max_samples: task samples used for a Linear layer's representation (the original's
            300, ``main_pmnist.py``).
        conv_samples: task samples used for a Conv2d layer's representation: all their patches
            (the original takes 100-125 samples for the deeper convolutions of its AlexNet and
            ResNet-18, ``main_cifar100.py`` and ``main_five_dataset.py``, and 10-50 for the
            earlier ones).
    """

    def __init__(self, *, threshold: float | None = None, rows: int | Sequence[int] | None = None,
                 max_samples: int = 300, conv_samples: int = 100) -> None:
        super().__init__()
        if threshold is not None and rows is not None:
            raise NeuroplasticError("gpm takes threshold or rows, not both (rows replaces the "
                                    "energy threshold)")
        self.threshold = require_in("threshold", 0.97 if threshold is None else threshold, 0.0, 1.0,
                                    low_open=True)
        self.rows = None if rows is None else checked_rows(rows)
        self.max_samples = int(require_positive("max_samples", max_samples))
        self.conv_samples = int(require_positive("conv_samples", conv_samples))

    @torch.no_grad()
    def after_task(self, model: nn.Module, experience: Experience) -> None:  # type: ignore[override]
        layers = projectable_layers(model)
        # batches of 64: a convolution's unfolded patches of 256 images can take gigabytes
        samples = {name: self.conv_samples if isinstance(module, nn.Conv2d) else self.max_samples
                   for name, module in layers.items()}
        found = representations(model, loader(experience.train, batch_size=64), layers, samples=samples)
        for index, (name, representation) in enumerate(found.items()):
            old = self.bases.get(name)
            u, s, total, kept = representation.directions(old)
            count = self._count(index, s, total=total, kept=kept, first=self.tasks_done == 0)
            if count:
                self.bases[name] = _merge(old, u[:, :count].to(layers[name].weight.dtype))
        self.tasks_done += 1
        self._refresh_projection(model)

    def _count(self, index: int, singular: Tensor, *, total: float, kept: float, first: bool) -> int:
        if self.rows is not None:
            return min(rows_of_layer(self.rows, index), len(singular))
        if total == 0 or kept / total >= self.threshold:
            return 0
        cumulative = kept + torch.cumsum(singular.double() ** 2, 0)
        below = int((cumulative < self.threshold * total).sum())
        # as the original (main_pmnist.py, update_GPM): after the first task the directions
        # whose cumulative energy stays below the threshold; later, up to and including the
        # one that reaches it
        return below if first else min(below + 1, len(singular))


@register("hlop", kind="continual", needs=('labels',))
class HLOP(_Projected):
    """Hebbian learning based orthogonal projection (Xiao et al., ICLR 2024, arXiv 2402.11984),
    on ordinary (non-spiking) networks: during each task, every Linear/Conv2d layer learns
    ``rows`` new principal directions of its inputs with Oja's subspace rule, y = H x,
    dH = y (x - H^T y)^T / B (the old rows take part in y but stay fixed; ``iterations``
    updates per batch). After the task the new rows join the old ones. From the second task
    on, weight gradients are projected off the old rows, orthonormalised by QR first (the
    reference uses raw H, which is not a projection when the rows are not orthonormal:
    measured 84.9 vs 91.5 ACC on Permuted-digits, shared/CONTINUAL.md).

    The update, and how it differs from the reference (``modules/hlop_module.py``,
    ``update_weights``):

    - default (this library's form): heavy-ball momentum v <- m v + dH, H <- clamp(H + eta
      v, +-10), with dH divided by the batch's mean squared input norm (``normalize``), so
      one eta fits every layer whatever its input scale.
    - ``ema=True`` (the reference's form): dH clamped to +-10, v <- m v + (1 - m) dH (an
      exponential average: one tenth of the heavy-ball step at m = 0.9), H <- H + eta v,
      H not clamped. With ``normalize=False`` too it is the reference's rule exactly (a
      fixed eta, as it uses on spiking rates in [0, 1], 0.001-0.01).

    Deviations kept in both forms: BatchNorm running statistics are not frozen after the
    first task (the reference calls ``fix_bn``); biases and norm affine parameters are frozen
    from the second task on (the reference trains only >= 2-D parameters then); each step's
    Oja updates read at most ``max_rows`` rows of a layer's input, a uniform random sample
    (the reference reads every unfolded patch of a convolution: a ResNet-18's 3x32x32
    batch of 64 gives layer1 65,536 patch rows, and unfolding and Oja over all of them cost
    three times the training step; Oja's rule is a stochastic approximation of the inputs'
    principal subspace, and a random sample of the patches estimates the same covariance).
    A Linear layer fed (batch, in) rows stays whole up to batches of ``max_rows``.

    Args:
        rows: new rows per layer and task (one int, or one per layer in model order).
        eta: Hebbian learning rate (relative to the input energy when ``normalize``).
        iterations: Oja updates per batch.
        momentum: m.
        ema: the reference's exponential-average momentum and clamp of dH.
        normalize: divide dH by the batch's mean squared input norm.
        max_rows: the most input rows (a convolution's patches, a sequence's tokens) of each
            layer that a step's Oja updates read, drawn at random; ``None`` reads all (the
            reference's rule). In a process group each rank draws ceil(max_rows / ranks)
            of its own part.
        seed: seed of the rows' random orthonormal start and of the row draws.
    """

    def __init__(self, *, rows: int | Sequence[int] = 20, eta: float = 0.05, iterations: int = 5,
                 momentum: float = 0.9, ema: bool = False, normalize: bool = True,
                 max_rows: int | None = 1024, seed: int = 0) -> None:
        super().__init__()
        self.rows = checked_rows(rows)
        self.eta = require_positive("eta", eta)
        if iterations < 1:
            raise NeuroplasticError(f"iterations must be >= 1, got {iterations}")
        self.iterations = iterations
        self.momentum = require_in("momentum", momentum, 0.0, 1.0, high_open=True)
        self.ema = ema
        self.normalize = normalize
        if max_rows is not None and max_rows < 1:
            raise NeuroplasticError(f"max_rows must be >= 1, or None to read every row, got {max_rows}")
        self.max_rows = max_rows
        self.generator = torch.Generator().manual_seed(seed)
        self.sampler = torch.Generator().manual_seed(seed)  # the row draws, apart from the starts
        self.new: dict[str, Tensor] = {}  # this task's rows, (k, inputs)
        self.velocity: dict[str, Tensor] = {}
        self._recorder: InputRecorder | None = None

    def cleanup(self, model: nn.Module) -> None:
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None

    def _rows_for(self, index: int) -> int:
        return rows_of_layer(self.rows, index)

    def before_task(self, model: nn.Module, experience: Experience) -> None:  # type: ignore[override]
        layers = projectable_layers(model)
        self.new, self.velocity = {}, {}
        for index, (name, module) in enumerate(layers.items()):
            width = module.weight[0].numel()
            rows = min(self._rows_for(index), width)
            init = torch.linalg.qr(torch.randn(width, rows, generator=self.generator, dtype=torch.float64))[0]
            self.new[name] = init.t().to(module.weight.dtype).to(module.weight.device).contiguous()
            self.velocity[name] = torch.zeros_like(self.new[name])
        self._recorder = InputRecorder(layers)

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        if self._recorder is None:
            return
        if self.max_rows is None:
            rows = self._recorder.rows()
        else:
            limit = math.ceil(self.max_rows / distributed.world_size())
            rows = self._recorder.rows(limit=limit, generator=self.sampler)
        self._recorder.inputs.clear()  # a rank with no part of the next batch must not reuse these
        if distributed.is_distributed():
            # every rank takes part in every layer's reduction, also with no rows of this
            # batch (a batch smaller than the group)
            rows = {name: rows.get(name, new.new_zeros(0, new.shape[1])) for name, new in self.new.items()}
        self.new.update(self._oja_layers(rows))

    def _oja(self, name: str, x: Tensor, *, form: str | None = None) -> Tensor:
        """This task's rows of layer ``name`` after ``iterations`` Oja steps on the batch ``x``
        (rows x inputs); see :meth:`_oja_layers`."""
        return self._oja_layers({name: x}, form=form)[name]

    def _oja_layers(self, batches: dict[str, Tensor], *, form: str | None = None) -> dict[str, Tensor]:
        """This task's rows of every layer in ``batches`` (name -> its rows x inputs) after
        ``iterations`` Oja steps on its batch.

        dH = y_new^T (x - y [H_old; H]) / B is computed in one of two equal forms, the cheaper
        for the shapes (``form`` forces one, for tests): ``residual`` forms the part of the
        residual the fixed old rows leave, x - y_old H_old, once per batch (B x inputs), so
        each iteration costs only in the new rows; ``gram`` never forms a (B x inputs) matrix,
        y_new^T x - (y_new^T y) [H_old; H], and wins when the batch of rows is large and the
        old basis small (a convolution's unfolded patches early in the stream).

        In a process group each batch is this rank's part: the row counts, the input
        energies and every iteration's dH are sums over rows, all-reduced (every layer's in
        one call) before dividing, so every rank takes the step one process takes on the
        whole batch.
        """
        group = distributed.is_distributed()
        prepared = {}
        for name, x in batches.items():
            old = self.bases.get(name)
            fixed = old.t().to(x.dtype) if old is not None else x.new_zeros(0, x.shape[1])
            batch, inputs = x.shape
            k_old, k_new = fixed.shape[0], self.new[name].shape[0]
            chosen = form
            if chosen is None:  # multiply-adds per batch beyond what both forms share
                residual_cost = batch * k_old * inputs + self.iterations * k_new * k_new * (batch + inputs)
                gram_cost = self.iterations * k_new * (k_old + k_new) * (batch + inputs)
                chosen = "residual" if residual_cost < gram_cost else "gram"
            y_fixed = x @ fixed.t()  # (B, k_old): the old rows do not change within the step
            rest = x - y_fixed @ fixed if chosen == "residual" and k_old else x
            prepared[name] = (x, fixed, y_fixed, rest, chosen)
        # Oja's rule is stable only for eta * |x|^2 below about 1: dividing by the batch's mean
        # input energy makes one eta fit every layer (hidden ReLU layers' inputs grow during
        # training)
        if group:
            sums = torch.tensor([[float(x.shape[0]), float((x * x).sum())] for x, *_ in prepared.values()],
                                dtype=torch.float64).reshape(-1, 2)
            distributed.all_reduce_sum_(sums)
            counts = {name: float(total[0]) for name, total in zip(prepared, sums, strict=True)}
            energies = {name: float(total[1]) / max(counts[name], 1.0)
                        for name, total in zip(prepared, sums, strict=True)}
        else:
            counts = {name: float(x.shape[0]) for name, (x, *_) in prepared.items()}
            energies = {name: float((x * x).sum(1).mean()) for name, (x, *_) in prepared.items()}
        active = [name for name in prepared if counts[name] > 0]
        new = {name: self.new[name] for name in active}
        for _ in range(self.iterations):
            deltas = {}
            for name in active:
                x, fixed, y_fixed, rest, chosen = prepared[name]
                y_new = x @ new[name].t()  # (B, k_new)
                if chosen == "residual":
                    deltas[name] = y_new.t() @ rest - (y_new.t() @ y_new) @ new[name]
                else:
                    y = torch.cat([y_fixed, y_new], dim=1)
                    deltas[name] = y_new.t() @ x - (y_new.t() @ y) @ torch.cat([fixed, new[name]])
            if group and deltas:
                flat = distributed.all_reduce_sum_(torch.cat([d.reshape(-1) for d in deltas.values()]))
                deltas = dict(zip(deltas, flat.split([d.numel() for d in deltas.values()]), strict=True))
                deltas = {name: d.view_as(new[name]) for name, d in deltas.items()}
            for name in active:
                energy = max(energies[name], 1e-12) if self.normalize else 1.0
                delta = deltas[name] / (counts[name] * energy)  # new rows only
                velocity = self.velocity[name]
                if self.ema:
                    velocity.mul_(self.momentum).add_(delta.clamp(-10, 10), alpha=1 - self.momentum)
                    new[name] = new[name] + self.eta * velocity
                else:
                    velocity.mul_(self.momentum).add_(delta)
                    new[name] = (new[name] + self.eta * velocity).clamp_(-10, 10)
        return new

    @torch.no_grad()
    def after_task(self, model: nn.Module, experience: Experience) -> None:  # type: ignore[override]
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None
        for name, rows in self.new.items():
            if rows.shape[0]:
                self.bases[name] = _merge(self.bases.get(name), rows.t())
        self.tasks_done += 1
        self._refresh_projection(model)

    def captured_energy(self, rows: Tensor, name: str) -> float:
        """The fraction of the energy of ``rows`` (samples x inputs) inside ``name``'s basis."""
        basis = self.bases[name].to(rows.dtype)
        inside = rows @ basis
        return float((inside ** 2).sum() / (rows ** 2).sum().clamp_min(math.ulp(1.0)))
