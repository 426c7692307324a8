"""Noise for training and scoring: Gaussian, and pyramidal Gaussian noise (paper Eq. 9-10).

Pyramidal noise sums Gaussian noise drawn at coarser and coarser resolutions, each bilinearly upsampled to the
image size and discounted by ``c**i``, then normalised to unit variance:

    eps = sum_{i=1}^{L} c^i * U(eps_i; H, W),   eps_i ~ N(0, I_{h_i x w_i x C}),
    h_i = ceil(H / r_i^(i-1)),  w_i = ceil(W / r_i^(i-1)),  r_i = 2 + Unif(0, 2).

Two variants are offered so they can be compared:

* ``"pyramid"`` (default): the paper's equation as written. Level i's size divides the *image* size by
  ``r_i**(i-1)``; each noise map in the batch is normalised to unit variance on its own.
* ``"pyramid_authors"``: the construction of the authors' public code (after Whitaker's multi-resolution noise):
  a full-resolution Gaussian term, then levels whose size divides the *already reduced* size again by
  ``r_i**i``, starting with a second full-resolution term; the sum is divided by one standard deviation taken
  over the whole batch.

``"gaussian"`` is plain N(0, I) noise (the Table 2 ablation, and the default at scoring time).
All functions take a ``torch.Generator`` so that a run is reproducible.

Noise of the baselines (``scripts.baselines``):

* ``"simplex"``: multi-octave 3D simplex noise, AnoDDPM's training and sampling noise (Wyatt et al. 2022; paper
  Appendix A: starting frequency 2^-6, 6 octaves, persistence 0.8); each map is a plane through the 3D noise at a
  random offset, normalised to unit variance per sample.
* :func:`coarse_noise` (not a diffusion noise type, so not in ``NOISE_TYPES``): the DAE's corruption (Kascenas et
  al. 2022), N(0, 0.2^2) drawn at 16 x 16, bilinearly upsampled and randomly rolled; its amplitude is the method's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

NOISE_TYPES = ("gaussian", "pyramid", "pyramid_authors", "simplex")

NoiseFn = Callable[..., torch.Tensor]


def _uniform(generator: torch.Generator | None, device: torch.device | str) -> float:
    return float(torch.rand((), generator=generator, device=device))


def _standardised_per_sample(noise: torch.Tensor) -> torch.Tensor:
    """``noise`` (B, ...) shifted and scaled so that every sample has zero mean and unit (sample) variance."""
    flat = noise.reshape(noise.shape[0], -1)
    return ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-12)).view_as(noise)


def _upsampled_noise(
    shape: Sequence[int], size: tuple[int, int], generator: torch.Generator | None, device, dtype
) -> torch.Tensor:
    """Gaussian noise of spatial ``size`` bilinearly upsampled to ``shape`` (B, C, H, W)."""
    b, c, h, w = shape
    coarse = torch.randn((b, c, *size), generator=generator, device=device, dtype=dtype)
    if size == (h, w):
        return coarse
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def gaussian_noise(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard Gaussian noise of ``shape`` (B, C, H, W)."""
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def pyramid_noise(
    shape: Sequence[int],
    levels: int = 10,
    discount: float = 0.8,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Pyramidal Gaussian noise as in the paper's Eq. 9-10, normalised to unit variance per sample.

    Args:
        shape: (B, C, H, W) of the noise.
        levels: number of pyramid levels L (paper: 10).
        discount: the scale factor c (paper: 0.8); level i is weighted by ``c**i``.
        generator: random generator (the jitter r_i is drawn from it as well).

    Returns:
        Tensor of ``shape`` whose every sample (C, H, W) has zero mean and unit variance.
    """
    h, w = shape[-2:]
    noise = torch.zeros(tuple(shape), device=device, dtype=torch.float32)
    for i in range(1, levels + 1):
        r_i = 2.0 + 2.0 * _uniform(generator, device)
        scale = r_i ** (i - 1)
        size = (max(1, math.ceil(h / scale)), max(1, math.ceil(w / scale)))
        noise += discount**i * _upsampled_noise(shape, size, generator, device, torch.float32)
    return _standardised_per_sample(noise).to(dtype)


def pyramid_noise_authors(
    shape: Sequence[int],
    levels: int = 10,
    discount: float = 0.8,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Pyramidal noise built the way the authors' public code builds it (see the module docstring).

    Args:
        shape: (B, C, H, W) of the noise.
        levels: at most this many pyramid levels after the full-resolution term; stops once a side reaches 1.
        discount: level i is weighted by ``discount**i`` (i = 0, 1, ...).

    Returns:
        Tensor of ``shape``, divided by the standard deviation over the whole batch.
    """
    _, _, h, w = shape
    noise = _upsampled_noise(shape, (h, w), generator, device, torch.float32)
    for i in range(levels):
        r = 2.0 + 2.0 * _uniform(generator, device)
        h, w = max(1, int(h / r**i)), max(1, int(w / r**i))
        noise += discount**i * _upsampled_noise(shape, (h, w), generator, device, torch.float32)
        if h == 1 or w == 1:
            break
    return (noise / noise.std()).to(dtype)


def get_noise_fn(noise_type: str = "pyramid", **kwargs) -> NoiseFn:
    """The noise function named ``noise_type`` (one of ``NOISE_TYPES``), with ``kwargs`` bound (levels, discount).

    For ``"simplex"``, ``levels`` is the number of octaves and ``discount`` the persistence.

    The returned callable has the signature ``fn(shape, generator=None, device="cpu", dtype=torch.float32)``.
    """
    fns = {
        "gaussian": gaussian_noise,
        "pyramid": pyramid_noise,
        "pyramid_authors": pyramid_noise_authors,
        "simplex": simplex_noise,
    }
    if noise_type not in fns:
        raise ValueError(f"unknown noise type {noise_type!r}; choose one of {NOISE_TYPES}")
    fn = fns[noise_type]
    return fn if noise_type == "gaussian" else functools.partial(fn, **kwargs)  # settings visible to describe()


# The 12 gradients of 3D simplex noise: the midpoints of the edges of a cube.
_SIMPLEX_GRADIENTS = (
    (1, 1, 0), (-1, 1, 0), (1, -1, 0), (-1, -1, 0),
    (1, 0, 1), (-1, 0, 1), (1, 0, -1), (-1, 0, -1),
    (0, 1, 1), (0, -1, 1), (0, 1, -1), (0, -1, -1),
)  # fmt: skip


def simplex3d(points: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """3D simplex noise (Perlin 2001, as in Gustavson's 2005 reference implementation) at ``points``, vectorised.

    Args:
        points: (..., 3) float coordinates x, y, z in lattice units.
        perm: (512,) long lattice hash, a permutation of 0..255 written twice.

    Returns:
        (...) noise values in about [-1, 1], continuous, with features about one lattice unit wide.
    """
    cell = (points + points.sum(-1, keepdim=True) / 3.0).floor_()  # the skewed cell holding each point
    d0 = points - cell
    d0 += cell.sum(-1, keepdim=True) / 6.0  # offset from the cell origin, unskewed
    # Rank of each coordinate of d0 among the three (2: largest); ties broken as in the reference implementation.
    x, y, z = d0.unbind(-1)
    x_ge_y, y_ge_z, x_ge_z = x >= y, y >= z, x >= z
    rank = torch.stack((x_ge_y.long() + x_ge_z, (~x_ge_y).long() + y_ge_z, 2 - x_ge_z.long() - y_ge_z.long()), -1)
    lattice = cell.long() & 255
    gradients = torch.tensor(_SIMPLEX_GRADIENTS, dtype=points.dtype, device=points.device)[perm % 12]  # (512, 3)
    total = torch.zeros_like(x)
    corners = (torch.zeros_like(rank), (rank == 2).long(), (rank >= 1).long(), torch.ones_like(rank))
    for n, corner in enumerate(corners):  # the 4 corners of the simplex holding each point
        d = d0 - corner + n / 6.0
        i, j, k = (lattice + corner).unbind(-1)
        gradient = gradients[i + perm[j + perm[k]]]
        falloff = (0.6 - d.square().sum(-1)).clamp_min_(0.0).square_().square_()
        total += falloff.mul_((gradient * d).sum(-1))
    return total.mul_(32.0)


def simplex_noise(
    shape: Sequence[int],
    levels: int = 6,
    discount: float = 0.8,
    frequency: float = 2.0**-6,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    max_points: int = 2**21,
) -> torch.Tensor:
    """Multi-octave simplex noise (AnoDDPM), normalised to unit variance per sample.

    Every (sample, channel) map is the plane z = const through 3D simplex noise, at a random offset in all three
    coordinates (one lattice hash per call, drawn from ``generator``):

        n(r, c) = sum_{o=0}^{N-1} gamma^o * simplex3d(c * nu * 2^o + u_x, r * nu * 2^o + u_y, u_z)

    Args:
        shape: (B, C, H, W) of the noise.
        levels: number of octaves N (AnoDDPM: 6).
        discount: persistence gamma, the amplitude ratio of successive octaves (AnoDDPM: 0.8).
        frequency: starting frequency nu in lattice units per pixel (AnoDDPM: 2^-6, i.e. its ``frequency=64``).
        generator: random generator for the hash and the offsets.
        max_points: points evaluated at once (memory bound); the result does not depend on it.

    Returns:
        Tensor of ``shape`` whose every sample (C, H, W) has zero mean and unit variance.
    """
    b, c, h, w = shape
    perm = torch.randperm(256, generator=generator, device=device)
    perm = torch.cat((perm, perm))
    offsets = 256.0 * torch.rand((b * c, 1, 1, 3), generator=generator, device=device)
    grid = torch.stack(
        torch.meshgrid(
            torch.arange(w, device=device, dtype=torch.float32),  # x: column
            torch.arange(h, device=device, dtype=torch.float32),  # y: row
            indexing="xy",
        )
        + (torch.zeros((h, w), device=device),),  # z: the plane, offset only
        -1,
    )  # (H, W, 3)
    noise = torch.zeros((b * c, h, w), device=device, dtype=torch.float32)
    step = max(1, max_points // (h * w))
    for start in range(0, b * c, step):
        for octave in range(levels):
            points = grid * (frequency * 2.0**octave) + offsets[start : start + step]
            noise[start : start + step] += discount**octave * simplex3d(points, perm)
    return _standardised_per_sample(noise.view(b, c, h, w)).to(dtype)


def coarse_noise(
    shape: Sequence[int],
    resolution: int = 16,
    std: float = 0.2,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The DAE's coarse noise (Kascenas et al. 2022): N(0, std^2) drawn at ``resolution`` x ``resolution``,
    bilinearly upsampled to (H, W) (corners aligned, as their ``F.upsample_bilinear``), then rolled circularly by a
    random shift per sample.

    Not normalised: after upsampling its standard deviation is about ``2/3 * std``, as in the original.

    Args:
        shape: (B, C, H, W) of the noise.
        resolution: side of the coarse grid (DAE: 16).
        std: standard deviation of the coarse draw (DAE: 0.2).
        generator: random generator for the draw and the shifts.

    Returns:
        Tensor of ``shape``.
    """
    b, c, h, w = shape
    coarse = std * torch.randn((b, c, resolution, resolution), generator=generator, device=device)
    noise = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
    shift_r = torch.randint(0, h, (b, 1), generator=generator, device=device)
    shift_c = torch.randint(0, w, (b, 1), generator=generator, device=device)
    rows = (torch.arange(h, device=device) - shift_r) % h  # (B, H): torch.roll by shift_r, per sample
    cols = (torch.arange(w, device=device) - shift_c) % w
    batch = torch.arange(b, device=device).view(b, 1, 1)
    rolled = noise.permute(0, 2, 3, 1)[batch, rows.view(b, h, 1), cols.view(b, 1, w)]  # (B, H, W, C)
    return rolled.permute(0, 3, 1, 2).contiguous().to(dtype)
