"""Common corruptions of inputs at five severities, in the spirit of CIFAR-10-C / MNIST-C
(Hendrycks & Dietterich, ICLR 2019, ``make_cifar_c.py`` of ``hendrycks/robustness``).

Images are ``(N, C, H, W)`` tensors scaled to ``bounds`` (default [0, 1]). The severity
parameters are CIFAR-10-C's, in pixel units and unscaled: on 8x8 digits the spatial ones
(blur radii, motion length) are therefore relatively stronger than on 32x32 CIFAR, while
``pixelate`` and ``elastic`` scale with the image size as in the reference. What is
approximated, and how:

- ``motion_blur``: the reference calls ImageMagick; here a one-sided line kernel of length
  ``radius`` with Gaussian weights (``sigma``) at a random angle in [-45, 45] degrees.
- ``fog``: the reference's diamond-square plasma fractal, generated here with the seeded
  generator; ``jpeg_compression`` is real JPEG (Pillow) at the reference's qualities.
- ``brightness`` adds to the HSV value channel as the reference does (for grey images: to x).

Flat vectors (``(N, D)``, e.g. tables or MNIST-1D) take the subset that needs no image
geometry: ``gaussian_noise``, ``shot_noise``, ``impulse_noise``, ``contrast``,
``brightness``, each applied to the features mapped to [0, 1] by ``bounds``.

Every corruption is deterministic under ``seed``. Real CIFAR-10-C folders are read by
:func:`load_cifar10c`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from neuroplastic.errors import NeuroplasticError

SEVERITIES = (1, 2, 3, 4, 5)

PARAMETERS: dict[str, list] = {  # CIFAR-10-C's, severity 1..5
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
    "elastic": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
}
IMAGE_CORRUPTIONS = tuple(PARAMETERS)
FLAT_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "contrast", "brightness")


def corruptions_for(x: Tensor) -> tuple[str, ...]:
    """The corruptions that apply to inputs shaped like ``x`` (a batch)."""
    return IMAGE_CORRUPTIONS if x.dim() == 4 else FLAT_CORRUPTIONS


def parse_spec(spec: str, *, available: tuple[str, ...] = IMAGE_CORRUPTIONS) -> list[tuple[str, int]]:
    """``name:severity`` (``gaussian_noise:3``), ``name`` (every severity) or ``all``
    (every corruption x severity) as (name, severity) pairs."""
    if spec == "all":
        return [(name, s) for name in available for s in SEVERITIES]
    name, _, level = spec.partition(":")
    if name not in available:
        raise NeuroplasticError(f"unknown corruption {name!r} for this data: use one of "
                                f"{', '.join(available)} or all")
    if not level:
        return [(name, s) for s in SEVERITIES]
    if level not in {str(s) for s in SEVERITIES}:
        raise NeuroplasticError(f"corruption severity must be 1-5, got {level!r}")
    return [(name, int(level))]


def corrupt(x: Tensor, name: str, severity: int, *, seed: int = 0,
            bounds: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """``x`` with corruption ``name`` at ``severity`` (1-5), clipped to ``bounds``.

    Args:
        x: a batch, ``(N, C, H, W)`` images or ``(N, D)`` vectors, within ``bounds``.
        seed: the random draws (noise, angles, fields) are a function of it alone.
    """
    available = corruptions_for(x)
    if name not in available:
        kind = "images" if x.dim() == 4 else "flat vectors"
        raise NeuroplasticError(f"unknown corruption {name!r} for {kind}: use one of {', '.join(available)}")
    if severity not in SEVERITIES:
        raise NeuroplasticError(f"corruption severity must be 1-5, got {severity!r}")
    low, high = bounds
    if not high > low:
        raise NeuroplasticError(f"bounds must be (low, high) with high > low, got {bounds}")
    unit = ((x.detach().float().cpu() - low) / (high - low)).clamp(0, 1)
    rng = np.random.default_rng(seed)
    out = _FUNCTIONS[name](unit, PARAMETERS[name][severity - 1], rng)
    return (out.clamp(0, 1) * (high - low) + low).to(x.dtype).to(x.device)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> Tensor:
    return torch.from_numpy(rng.normal(scale=scale, size=shape).astype(np.float32))


def gaussian_noise(x: Tensor, c: float, rng: np.random.Generator) -> Tensor:
    return x + _normal(rng, tuple(x.shape), c)


def shot_noise(x: Tensor, c: float, rng: np.random.Generator) -> Tensor:
    return torch.from_numpy(rng.poisson(x.numpy() * c).astype(np.float32)) / c


def impulse_noise(x: Tensor, amount: float, rng: np.random.Generator) -> Tensor:
    """Salt and pepper on a fraction ``amount`` of the values, half each (skimage's s&p)."""
    out = x.clone()
    hit = torch.from_numpy(rng.random(tuple(x.shape)) < amount)
    salt = torch.from_numpy(rng.random(tuple(x.shape)) < 0.5)
    out[hit & salt] = 1.0
    out[hit & ~salt] = 0.0
    return out


def contrast(x: Tensor, c: float, rng: np.random.Generator) -> Tensor:
    dims = tuple(range(2, x.dim())) if x.dim() == 4 else (1,)
    means = x.mean(dim=dims, keepdim=True)
    return (x - means) * c + means


def brightness(x: Tensor, c: float, rng: np.random.Generator) -> Tensor:
    if x.dim() != 4 or x.shape[1] == 1:
        return x + c
    value = x.max(dim=1, keepdim=True).values  # HSV's V; H and S are kept by scaling RGB
    brighter = (value + c).clamp(max=1.0)
    return torch.where(value > 0, x * brighter / value.clamp_min(1e-12), brighter.expand_as(x))


def _filter(x: Tensor, kernel: Tensor) -> Tensor:
    """Each channel convolved with ``kernel`` (reflect padding, as cv2's default border)."""
    k = kernel.shape[-1] // 2
    channels = x.shape[1]
    padded = F.pad(x, (k, k, k, k), mode="reflect") if k < min(x.shape[-2:]) else \
        F.pad(x, (k, k, k, k), mode="replicate")
    weight = kernel.to(x.dtype).expand(channels, 1, *kernel.shape)
    return F.conv2d(padded, weight, groups=channels)


def _gaussian_kernel(sigma: float, size: int) -> Tensor:
    t = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-t ** 2 / (2 * sigma ** 2)) if sigma > 0 else (t == 0).float()
    kernel = g[:, None] * g[None, :]
    return kernel / kernel.sum()


def defocus_blur(x: Tensor, c: tuple[float, float], rng: np.random.Generator) -> Tensor:
    """The reference's ``disk``: a disk of radius c[0], anti-aliased by a 3x3 Gaussian
    of sigma c[1]."""
    radius, alias = c
    half = max(1, math.ceil(radius)) + 1
    t = torch.arange(-half, half + 1, dtype=torch.float32)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius ** 2).float()
    disk = F.conv2d(disk[None, None], _gaussian_kernel(alias, 3)[None, None], padding=1)[0, 0]
    return _filter(x, disk / disk.sum())


def motion_blur(x: Tensor, c: tuple[float, float], rng: np.random.Generator) -> Tensor:
    radius, sigma = c
    out = torch.empty_like(x)
    size = 2 * int(radius) + 1
    for i in range(len(x)):
        angle = math.radians(rng.uniform(-45, 45))
        kernel = torch.zeros(size, size)
        for step in range(int(radius) + 1):  # one-sided streak, as ImageMagick's motion blur
            row = round(size // 2 - step * math.sin(angle))
            col = round(size // 2 + step * math.cos(angle))
            kernel[row, col] += math.exp(-step ** 2 / (2 * sigma ** 2))
        out[i] = _filter(x[i:i + 1], kernel / kernel.sum())[0]
    return out


def pixelate(x: Tensor, c: float, rng: np.random.Generator) -> Tensor:
    h, w = x.shape[-2:]
    small = F.adaptive_avg_pool2d(x, (max(1, int(h * c)), max(1, int(w * c))))
    return F.interpolate(small, size=(h, w), mode="area")


def jpeg_compression(x: Tensor, quality: int, rng: np.random.Generator) -> Tensor:
    from PIL import Image

    pixels = (x * 255).round().to(torch.uint8)
    out = torch.empty_like(x)
    for i, image in enumerate(pixels):
        array = image.permute(1, 2, 0).numpy()
        mode = "L" if array.shape[2] == 1 else "RGB"
        buffer = io.BytesIO()
        picture = Image.fromarray(array[..., 0] if mode == "L" else array, mode=mode)
        picture.save(buffer, "JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(mode), dtype=np.float32) / 255
        out[i] = torch.from_numpy(decoded.reshape(array.shape)).permute(2, 0, 1)
    return out


def elastic(x: Tensor, c: tuple[float, float, float], rng: np.random.Generator) -> Tensor:
    """The reference's elastic transform: a random affine of three points (displacement
    c[2]·size), then a displacement field of uniform noise smoothed by a Gaussian of
    sigma c[1]·size, scaled by c[0]·size; bilinear sampling with reflection."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    size = x.shape[-1]
    alpha, sigma, affine = (v * size for v in c)
    n, channels, h, w = x.shape
    out = torch.empty_like(x)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for i in range(n):
        centre = np.float32([h, w]) // 2
        square = min(h, w) // 3
        src = np.float32([centre + square, [centre[0] + square, centre[1] - square], centre - square])
        dst = src + rng.uniform(-affine, affine, size=src.shape).astype(np.float32)
        # the affine map taking dst back to src, applied as a sampling grid
        a = np.linalg.solve(np.c_[dst, np.ones(3)], src)
        points = np.c_[rows.ravel(), cols.ravel(), np.ones(h * w)] @ a
        dx = gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha
        dy = gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha
        coords = [points[:, 0].reshape(h, w) + dy, points[:, 1].reshape(h, w) + dx]
        for ch in range(channels):
            out[i, ch] = torch.from_numpy(map_coordinates(x[i, ch].numpy(), coords, order=1,
                                                          mode="reflect").astype(np.float32))
    return out


def plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """The reference's diamond-square height map on a ``size`` x ``size`` grid (a power of
    2), values in [0, 1]; like the reference, each new point is the neighbours' sum / 4 plus
    ``wibble * U(-wibble, wibble)``, with ``wibble`` divided by ``decay`` per level."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0

    def wibbled(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        grid[half:size:step, half:size:step] = wibbled(square)
        centres = grid[half:size:step, half:size:step]
        corners = grid[0:size:step, 0:size:step]
        grid[0:size:step, half:size:step] = wibbled(centres + np.roll(centres, 1, axis=0)
                                                    + corners + np.roll(corners, -1, axis=1))
        grid[half:size:step, 0:size:step] = wibbled(centres + np.roll(centres, 1, axis=1)
                                                    + corners + np.roll(corners, -1, axis=0))
        step = half
        wibble /= decay
    grid -= grid.min()
    return grid / max(grid.max(), 1e-12)


def fog(x: Tensor, c: tuple[float, float], rng: np.random.Generator) -> Tensor:
    h, w = x.shape[-2:]
    size = max(32, 2 ** math.ceil(math.log2(max(h, w))))  # the reference's 32, cropped
    peak = x.amax(dim=tuple(range(1, x.dim())), keepdim=True)
    out = torch.empty_like(x)
    for i in range(len(x)):
        plasma = torch.from_numpy(plasma_fractal(size, c[1], rng)[:h, :w].astype(np.float32))
        out[i] = x[i] + c[0] * plasma
    return out * peak / (peak + c[0])


_FUNCTIONS: dict[str, Callable[[Tensor, object, np.random.Generator], Tensor]] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur, "motion_blur": motion_blur, "contrast": contrast,
    "brightness": brightness, "pixelate": pixelate, "jpeg_compression": jpeg_compression,
    "elastic": elastic, "fog": fog,
}


def check_cifar10c(root: str | Path, corruptions: list[str]) -> None:
    """One line naming the first file of a CIFAR-10-C folder that is missing."""
    folder = Path(root)
    for name in [*corruptions, "labels"]:
        if not (folder / f"{name}.npy").is_file():
            raise NeuroplasticError(f"{folder / (name + '.npy')} not found (a CIFAR-10-C folder holds "
                                    "<corruption>.npy and labels.npy)")


def load_cifar10c(root: str | Path, corruption: str, severity: int) -> TensorDataset:
    """One corruption x severity of CIFAR-10-C as distributed (``<corruption>.npy``: the
    test set under each severity 1-5 in turn, uint8 (N, 32, 32, 3); ``labels.npy``), read
    with numpy (``allow_pickle=False``), scaled to [0, 1] as (3, 32, 32) inputs."""
    folder = Path(root)
    if severity not in SEVERITIES:
        raise NeuroplasticError(f"corruption severity must be 1-5, got {severity!r}")
    images, labels = folder / f"{corruption}.npy", folder / "labels.npy"
    for path in (images, labels):
        if not path.is_file():
            raise NeuroplasticError(f"{path} not found (a CIFAR-10-C folder holds <corruption>.npy "
                                    "and labels.npy)")
    try:
        x = np.load(images, mmap_mode="r", allow_pickle=False)
        y = np.load(labels, allow_pickle=False)
    except ValueError as err:
        raise NeuroplasticError(f"cannot read {folder}: {err}") from None
    if x.ndim != 4 or x.shape[-1] != 3 or len(x) != len(y) or len(x) % 5:
        raise NeuroplasticError(f"{images} is not CIFAR-10-C data: shape {x.shape}, {len(y)} labels")
    per = len(x) // 5
    rows = slice((severity - 1) * per, severity * per)
    inputs = torch.from_numpy(np.array(x[rows])).permute(0, 3, 1, 2).float() / 255
    return TensorDataset(inputs, torch.from_numpy(np.asarray(y[rows], dtype=np.int64)))
