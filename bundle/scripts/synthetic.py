"""Made (synthetic) multi-modal brain MRI studies for the demo, the tests and the benchmarks.

Nothing here is real patient data. Every study is *made* from the MNI152 2009a symmetric templates (T1, grey and
white matter probability maps) that ship inside the nilearn wheel: the brain of the template is moved onto a
BraTS-like grid (240 x 240 x 155 voxels of 1 mm, LPS orientation) with a random smooth deformation and a small random
affine per subject, its tissue maps are turned into T1, T1Gd, T2 and FLAIR contrasts with per-subject contrast
jitter, a multiplicative bias field and Rician noise (a proton-density-like contrast, PD, is derived from the made T2:
:func:`pd_from_t2`), and, for anomalous studies, lesions of one of four families
(``LESIONS``: tumour-like, MS-like, small cortical T1-dark, T1-bright/T2-dark) are painted in with their label map.
Everything follows from one integer seed.

(About 500 lines, one job: the anatomy warp, the contrasts and the lesion painters share the same random fields and
coarse depth maps, and reading them in one place is easier than following them across modules.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation
from scripts import KNOWN_MODALITIES, MODALITIES
from scripts.atlas import nilearn_data_dir
from scripts.files import atomic_write_bytes, write_nifti

BRATS_SHAPE: tuple[int, int, int] = (240, 240, 155)
LESIONS: tuple[str, ...] = ("none", "tumour", "ms", "cortical", "bright")
"""Lesion families: healthy; one large tumour; many small periventricular MS-like lesions; a few small cortical
T1-dark lesions (T2-bright, FLAIR near grey matter: not a FLAIR lesion); a few T1-bright, T2-dark lesions (as
haemorrhage or melanin look). New families are appended, so the seeds of the older ones do not change."""
TOP_MARGIN_MM = 8.0  # space left above the brain when the grid is too short to centre it in z

# Mean intensity per tissue (CSF, GM, WM) and modality, in arbitrary scanner-like units.
TISSUE_MEANS: dict[str, tuple[float, float, float]] = {
    "t1": (250.0, 550.0, 800.0),
    "t1c": (280.0, 580.0, 820.0),
    "t2": (1000.0, 620.0, 420.0),
    "flair": (170.0, 650.0, 450.0),
}
# Lesion compartment intensities as multiples of the subject's WM intensity, per modality (t1, t1c, t2, flair).
LESION_CONTRAST: dict[str, tuple[float, float, float, float]] = {
    "oedema": (0.78, 0.80, 1.90, 1.75),
    "enhancing": (0.85, 1.55, 1.50, 1.40),
    "necrosis": (0.40, 0.42, 2.20, 0.90),
    "ms": (0.80, 0.82, 1.75, 1.60),
    "cortical": (0.40, 0.42, 1.90, 1.50),
    "bright": (1.35, 1.45, 0.55, 0.70),
}
TUMOUR_LABELS = {"necrosis": 1, "oedema": 2, "enhancing": 4}


@dataclass
class SyntheticStudy:
    """One made (synthetic) study on a voxel grid of shape (H, W, D).

    Attributes:
        images: ``t1``, ``t1c``, ``t2``, ``flair``, ``pd`` -> float32 (H, W, D), zero outside the brain.
        label: uint8 (H, W, D); 0 healthy; tumour 1 necrotic core, 2 oedema, 4 enhancing rim; other lesions 1.
        affine: 4x4 voxel-to-world (RAS) matrix, nibabel convention.
        mask: bool (H, W, D) brain mask.
        tissue: uint8 (H, W, D) dominant healthy tissue: 0 background, 1 CSF, 2 GM, 3 WM.
    """

    images: dict[str, np.ndarray]
    label: np.ndarray
    affine: np.ndarray
    mask: np.ndarray | None = None
    tissue: np.ndarray | None = None


@dataclass(frozen=True)
class _Template:
    maps: dict[str, np.ndarray]  # "mask", "gm", "wm", "vessel": float32 (X, Y, Z) in template voxels
    affine: np.ndarray  # template voxel -> MNI world (RAS)
    lo_mm: np.ndarray  # brain bounding box in MNI world, (3,)
    hi_mm: np.ndarray


@lru_cache(maxsize=1)
def _template() -> _Template:
    """Load the templates once: brain mask, GM, WM, and a made map of enhancing vessels/choroid plexus."""
    folder = nilearn_data_dir()
    loaded = {}
    for key in ("t1", "gm", "wm"):
        img = nib.load(folder / f"mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz")
        loaded[key] = np.asarray(img.dataobj, dtype=np.float32) / 255.0
    mask = loaded["t1"] > 0  # the template T1 is already skull-stripped
    labels, n = ndi.label(mask)
    if n > 1:
        mask = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    mask = ndi.binary_fill_holes(mask)
    # Keep the brain's bounding box (and a margin of 2 voxels) only: half the voxels, twice as fast.
    idx = np.argwhere(mask)
    lo, hi = np.maximum(idx.min(0) - 2, 0), np.minimum(idx.max(0) + 3, mask.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    affine = img.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ lo
    mask = mask[crop]
    gm, wm = loaded["gm"][crop] * mask, loaded["wm"][crop] * mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    # Vessels for T1Gd: thin random tubes of sulcal CSF near the surface and blobs in the deep (ventricular) CSF.
    depth = ndi.distance_transform_edt(mask)
    noise = ndi.gaussian_filter(np.random.default_rng(20090).standard_normal(mask.shape, dtype=np.float32), 1.5)
    noise /= noise.std()
    vessel = (csf > 0.5) & (((depth < 6) & (np.abs(noise) < 0.12)) | ((depth > 25) & (noise > 1.2)))
    vessel = ndi.gaussian_filter(vessel.astype(np.float32), 0.6)
    corners = np.stack([idx.min(0), idx.max(0)], 1).astype(np.float64)
    world = img.affine[:3, :3] @ corners + img.affine[:3, 3:]
    maps = {"mask": mask.astype(np.float32), "gm": gm, "wm": wm, "vessel": vessel}
    return _Template(maps, affine, world.min(1), world.max(1))


def grid_affine(shape: Sequence[int] = BRATS_SHAPE, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """A BraTS-like LPS affine (4, 4) for a grid of ``shape`` and ``spacing`` (mm) that holds the template brain.

    The brain is centred in x and y, and in z too when the grid is tall enough; otherwise its top is kept
    ``TOP_MARGIN_MM`` below the grid's top and the lower brainstem is cut, as in BraTS.
    """
    tpl = _template()
    fov = np.asarray(shape, float) * np.asarray(spacing, float)
    centre = (tpl.lo_mm + tpl.hi_mm) / 2
    if fov[2] < tpl.hi_mm[2] - tpl.lo_mm[2] + 2 * TOP_MARGIN_MM:
        centre[2] = tpl.hi_mm[2] + TOP_MARGIN_MM - fov[2] / 2
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0]).astype(np.float64)
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape, float) - 1) / 2)
    return affine


# The header of BraTS files (and of the SRI24 atlas lattice): LPS voxel axes, the first voxel at (0, 239, 0) RAS mm.
BRATS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])


def header_affine(shape: Sequence[int] = BRATS_SHAPE, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """The affine written to the files: BraTS's own on the full BraTS grid, so that made studies are already on the
    SRI24 atlas lattice like BraTS studies (no registration needed); :func:`grid_affine` on any other grid.
    The brain is placed by :func:`grid_affine` in both cases: only the world coordinates written differ.
    """
    if tuple(int(v) for v in shape) == BRATS_SHAPE and np.allclose(spacing, 1.0):
        return BRATS_AFFINE.copy()
    return grid_affine(shape, spacing)


def _smooth_field(rng: np.random.Generator, axes_mm: Sequence[np.ndarray], order: int, rms: float) -> np.ndarray:
    """A smooth random field (len(x), len(y), len(z)) of about ``rms`` RMS: a sum of low-order cosines in mm.

    The field is evaluated separably, so it costs little even on a full-size grid.
    """
    bases = []
    for x in axes_mm:
        span = max(float(x.max() - x.min()), 1e-6)
        k = np.arange(1, order + 1)
        bases.append(np.cos(np.pi * np.outer((x - x.min()) / span, k)).astype(np.float32))  # (n, order)
    decay = 1.0 / np.add.outer(np.add.outer(np.arange(order), np.arange(order)), np.arange(order)).clip(1, None)
    coef = rng.standard_normal((order,) * 3) * decay
    coef *= rms / np.sqrt((coef**2).sum() / 8)  # mean of a product of three cos^2 is 1/8
    field = np.tensordot(bases[0], coef.astype(np.float32), axes=(1, 0))  # (X, q, r)
    field = np.tensordot(field, bases[1], axes=(1, 1))  # (X, r, Y)
    field = np.tensordot(field, bases[2], axes=(1, 1))  # (X, Y, Z)
    return np.ascontiguousarray(field, dtype=np.float32)


def _random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A (3, 3) rotation of up to ``max_deg`` degrees about each axis."""
    return Rotation.from_euler("xyz", rng.uniform(-max_deg, max_deg, 3), degrees=True).as_matrix()


def _warped_maps(rng: np.random.Generator, affine: np.ndarray, box: tuple[slice, ...]) -> dict[str, np.ndarray]:
    """Sample the template maps into the ``box`` of the output grid through one random subject transform.

    A template point is M (x - c) + c + t + u(x) for an output world point x: M a small rotation and scaling, c the
    brain centre, t a shift of a few mm and u a smooth elastic displacement. Returns float32 maps of the box's shape.
    """
    tpl = _template()
    axes_mm = [affine[d, d] * np.arange(box[d].start, box[d].stop) + affine[d, 3] for d in range(3)]
    centre = (tpl.lo_mm + tpl.hi_mm) / 2
    lin = _random_rotation(rng, 4.0) @ np.diag(rng.uniform(0.95, 1.05, 3))
    shift = rng.uniform(-3.0, 3.0, 3)
    to_vox = np.linalg.inv(tpl.affine)
    lin_vox = to_vox[:3, :3] @ lin
    offset = to_vox[:3, :3] @ (centre + shift - lin @ centre) + to_vox[:3, 3]
    amplitude = rng.uniform(1.5, 3.0)
    disp = [_smooth_field(rng, axes_mm, 4, amplitude) for _ in range(3)]
    coords = np.empty((3, *(len(a) for a in axes_mm)), dtype=np.float32)
    for k in range(3):
        coords[k] = offset[k] + sum(to_vox[k, d] * disp[d] for d in range(3))
        coords[k] += (lin_vox[k, 0] * axes_mm[0]).astype(np.float32)[:, None, None]
        coords[k] += (lin_vox[k, 1] * axes_mm[1]).astype(np.float32)[None, :, None]
        coords[k] += (lin_vox[k, 2] * axes_mm[2]).astype(np.float32)[None, None, :]
    return {
        key: ndi.map_coordinates(value, coords, order=1, mode="constant", cval=0.0, output=np.float32)
        for key, value in tpl.maps.items()
    }


def _ellipsoid_level(
    rng: np.random.Generator,
    centre: np.ndarray,
    radii: np.ndarray,
    spacing: np.ndarray,
    shape: Sequence[int],
    rough: float,
) -> tuple[tuple[slice, ...], np.ndarray]:
    """A randomly rotated ellipsoid's level function in a box around ``centre`` (voxel indices, (3,)).

    Returns the box and f (h, w, d): f < 1 inside the ellipsoid, whose boundary is perturbed by smooth noise of
    relative size ``rough``.
    """
    reach = np.ceil(radii.max() * (1.0 + 2 * rough) / spacing).astype(int) + 1
    lo, hi = np.maximum(centre - reach, 0), np.minimum(centre + reach + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    axes_mm = [(np.arange(lo[d], hi[d]) - centre[d]) * spacing[d] for d in range(3)]
    grid = np.stack(np.meshgrid(*axes_mm, indexing="ij"))  # (3, h, w, d) in mm from the centre
    local = np.tensordot(_random_rotation(rng, 90.0).T, grid, axes=1) / radii[:, None, None, None]
    level = np.sqrt((local**2).sum(0))
    if rough > 0:
        level = level + _smooth_field(rng, axes_mm, 5, rough)
    return box, level.astype(np.float32)


def _coarse_depth(
    mask: np.ndarray, csf: np.ndarray, spacing: np.ndarray
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """Depth in the brain and distance to the ventricles (mm) on a ~4 mm subsampling of the grid (cheap)."""
    step = np.maximum(1, np.round(4.0 / spacing)).astype(int)
    sub = tuple(slice(None, None, int(s)) for s in step)
    depth = ndi.distance_transform_edt(mask[sub], sampling=spacing * step)
    ventricles = (csf[sub] > 0.5) & (depth > 12.0)
    to_ventricle = np.full(depth.shape, np.inf)
    if ventricles.any():
        to_ventricle = ndi.distance_transform_edt(~ventricles, sampling=spacing * step)
    return sub, depth, to_ventricle


def _pick(rng: np.random.Generator, candidates: np.ndarray, sub: tuple[slice, ...], shape: Sequence[int]) -> np.ndarray:
    """One random voxel index (3,) of the full grid near a random True voxel of a subsampled candidate map."""
    step = np.array([s.step for s in sub])
    idx = np.argwhere(candidates)
    return np.minimum(idx[rng.integers(len(idx))] * step + rng.integers(0, (step + 1) // 2), np.asarray(shape) - 1)


def _paint(
    images: dict[str, np.ndarray],
    box: tuple[slice, ...],
    weight: np.ndarray,
    kind: str,
    wm_means: dict[str, float],
    rng: np.random.Generator,
) -> None:
    """Blend a lesion compartment of ``kind`` into the images with ``weight`` (h, w, d) in [0, 1], in place."""
    texture = 1.0 + 0.06 * rng.standard_normal(weight.shape).astype(np.float32)
    for m, factor in zip(MODALITIES, LESION_CONTRAST[kind], strict=True):
        value = factor * wm_means[m] * rng.uniform(0.92, 1.08) * texture
        images[m][box] = (1 - weight) * images[m][box] + weight * value


def _add_tumour(
    rng: np.random.Generator,
    images: dict[str, np.ndarray],
    label: np.ndarray,
    maps: dict[str, np.ndarray],
    spacing: np.ndarray,
    wm_means: dict[str, float],
) -> None:
    """Paint one tumour (oedema 2, enhancing rim 4, necrotic core 1) deep enough inside the brain, in place.

    ``images`` and ``maps`` are (H, W, D) float32 arrays on the grid of ``label`` (H, W, D) uint8.
    """
    sub, depth, _ = _coarse_depth(maps["mask"] > 0.5, maps["csf"], spacing)
    radius = max(rng.uniform(10.0, 25.0), 4.0 * spacing.max())  # coarse grids: large enough to show all parts
    radii = radius * rng.uniform(0.75, 1.25, 3)
    ok = (maps["wm"][sub] > 0.5) & (depth > 0.6 * radius)
    centre = _pick(rng, ok if ok.any() else depth >= depth.max() * 0.8, sub, label.shape)
    box, level = _ellipsoid_level(rng, centre, radii, spacing, label.shape, 0.2)
    tissue = np.clip(maps["gm"][box] + maps["wm"][box], 0, 1)
    level_oedema = level - 0.3 * (maps["wm"][box] - maps["gm"][box])  # oedema spreads along white matter
    core = rng.uniform(0.45, 0.65)
    rim = max(rng.uniform(2.5, 5.0), 1.01 * spacing.max()) / radius
    necrosis = max(core - rim, 0.9 * spacing.max() / radius)
    edge = 0.5 * spacing.min() / radius  # partial volume across about one voxel
    # One connected lesion: drop the bits cut off by sulcal CSF, in the label and in the images.
    parts, n = ndi.label((level_oedema < 1.0) & (tissue > 0.5))
    inside = parts == 1 + np.argmax(np.bincount(parts.ravel())[1:]) if n else parts > 0
    reach = ndi.binary_dilation(inside)
    for kind, outer, lev in (("oedema", 1.0, level_oedema), ("enhancing", core, level), ("necrosis", necrosis, level)):
        weight = np.clip(0.5 + (outer - lev) / (2 * edge), 0, 1) * tissue * reach
        _paint(images, box, weight, kind, wm_means, rng)
        label[box][(lev < outer) & inside] = TUMOUR_LABELS[kind]


@dataclass(frozen=True)
class _ScatteredFamily:
    """Several small, separate lesions of one contrast (label 1): how many, how large, and where."""

    kind: str  # the LESION_CONTRAST row
    count: tuple[int, int]  # lesions per study, drawn in [low, high]
    radius_mm: tuple[float, float]
    where: str  # "periventricular" | "cortical" | "parenchyma"


SCATTERED: dict[str, _ScatteredFamily] = {
    "ms": _ScatteredFamily("ms", (5, 20), (2.0, 6.0), "periventricular"),
    "cortical": _ScatteredFamily("cortical", (3, 8), (3.0, 6.0), "cortical"),
    "bright": _ScatteredFamily("bright", (2, 5), (5.0, 10.0), "parenchyma"),
}


def _add_scattered(
    rng: np.random.Generator,
    images: dict[str, np.ndarray],
    label: np.ndarray,
    maps: dict[str, np.ndarray],
    spacing: np.ndarray,
    wm_means: dict[str, float],
    family: _ScatteredFamily,
) -> None:
    """Paint a family of small lesions (label 1), kept apart so that each is its own component, in place.

    ``periventricular``: mostly deep white matter near the ventricles (MS-like); ``cortical``: grey matter within a
    few millimetres of the brain's surface; ``parenchyma``: anywhere in grey or white matter away from the surface.
    Arrays as in :func:`_add_tumour`.
    """
    sub, depth, to_ventricle = _coarse_depth(maps["mask"] > 0.5, maps["csf"], spacing)
    deep_wm = (maps["wm"][sub] > 0.6) & (depth > 8.0)
    pools = {
        "periventricular": (deep_wm & (to_ventricle < 10.0), deep_wm, 0.75),
        "cortical": ((maps["gm"][sub] > 0.5) & (depth > 2.0) & (depth < 9.0), maps["gm"][sub] > 0.4, 0.9),
        "parenchyma": ((maps["gm"][sub] + maps["wm"][sub] > 0.7) & (depth > 10.0), deep_wm, 0.9),
    }
    preferred, fallback, p_preferred = pools[family.where]
    centres: list[tuple[np.ndarray, float]] = []
    wanted = rng.integers(family.count[0], family.count[1] + 1)
    for _ in range(50 * wanted):
        if len(centres) >= wanted:
            break
        pool = preferred if (preferred.any() and rng.random() < p_preferred) else fallback
        if not pool.any():
            pool = maps["mask"][sub] > 0.5
        centre = _pick(rng, pool, sub, label.shape)
        radius = max(rng.uniform(*family.radius_mm), 0.6 * spacing.max())
        if any(np.linalg.norm((c - centre) * spacing) < 1.4 * (r + radius) + 1.5 * spacing.max() for c, r in centres):
            continue  # keep lesions apart so each stays its own component
        centres.append((centre, radius))
        box, level = _ellipsoid_level(rng, centre, radius * rng.uniform(0.7, 1.3, 3), spacing, label.shape, 0.08)
        tissue = np.clip(maps["gm"][box] + maps["wm"][box], 0, 1)
        weight = np.clip(0.5 + (1.0 - level) * radius / spacing.min(), 0, 1) * tissue
        _paint(images, box, weight, family.kind, wm_means, rng)
        label[box][(level < 1.0) & (tissue > 0.5)] = 1


def make_study(
    seed: int, lesion: str = "none", shape: Sequence[int] = BRATS_SHAPE, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> SyntheticStudy:
    """Make one synthetic (made, not real) skull-stripped study of T1, T1Gd, T2 and FLAIR, shape (H, W, D).

    Args:
        seed: everything follows from it; the same seed gives the same study.
        lesion: ``"none"`` (healthy), ``"tumour"`` (labels 1 necrotic core, 2 oedema, 4 enhancing rim), or one of
            the scattered families (label 1): ``"ms"`` (5-20 small periventricular lesions), ``"cortical"`` (3-8
            small cortical T1-dark lesions), ``"bright"`` (2-5 T1-bright, T2-dark lesions); see ``SCATTERED``.
        shape, spacing: the grid (voxels, mm); coarse grids cover the same field of view as the BraTS grid if
            shape * spacing does.
    """
    if lesion not in LESIONS:
        raise ValueError(f"lesion must be one of {LESIONS}, not {lesion!r}")
    shape, spacing = tuple(int(s) for s in shape), np.asarray(spacing, dtype=np.float64)
    rng = np.random.default_rng(seed)
    affine = grid_affine(shape, spacing)
    tpl = _template()
    # Work only in the box of the grid that can hold the (moved) brain.
    lo = np.linalg.solve(affine[:3, :3], np.stack([tpl.lo_mm - 20, tpl.hi_mm + 20], 1) - affine[:3, 3:])
    box = tuple(
        slice(max(0, int(np.floor(lo[d].min()))), min(shape[d], int(np.ceil(lo[d].max())) + 1)) for d in range(3)
    )
    maps = _warped_maps(rng, affine, box)
    mask = maps["mask"] > 0.5
    for key in ("gm", "wm", "vessel"):
        maps[key] *= mask
    maps["csf"] = np.clip(mask - maps["gm"] - maps["wm"], 0.0, 1.0)
    images, wm_means = {}, {}
    for m in MODALITIES:
        csf, gm, wm = (mu * rng.uniform(0.9, 1.1) for mu in TISSUE_MEANS[m])
        images[m] = csf * maps["csf"] + gm * maps["gm"] + wm * maps["wm"]
        if m == "t1c":
            images[m] += maps["vessel"] * 0.8 * wm
        wm_means[m] = wm
    label = np.zeros(mask.shape, dtype=np.uint8)
    if lesion == "tumour":
        _add_tumour(rng, images, label, maps, spacing, wm_means)
    elif lesion in SCATTERED:
        _add_scattered(rng, images, label, maps, spacing, wm_means, SCATTERED[lesion])
    label[~mask] = 0
    axes_mm = [spacing[d] * np.arange(box[d].start, box[d].stop) for d in range(3)]
    for m in MODALITIES:  # scanner effects, computed on the brain voxels only
        ref = max(TISSUE_MEANS[m])
        img = ref * (np.maximum(images[m][mask], 0) / ref) ** rng.uniform(0.85, 1.15)  # gamma
        img *= np.exp(_smooth_field(rng, axes_mm, 3, rng.uniform(0.04, 0.1))[mask])  # bias field
        sigma = rng.uniform(0.02, 0.04) * wm_means[m]
        real = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(img.shape, dtype=np.float32)
        images[m] = np.zeros(mask.shape, dtype=np.float32)
        images[m][mask] = np.sqrt(real * real + imag * imag)  # Rician magnitude; zero outside the brain
    gm_or_wm = np.where(maps["gm"] > maps["wm"], 2, 3).astype(np.uint8)
    tissue = np.where(maps["csf"] >= np.maximum(maps["gm"], maps["wm"]), np.uint8(1), gm_or_wm) * mask

    def full(part: np.ndarray) -> np.ndarray:
        out = np.zeros(shape, dtype=part.dtype)
        out[box] = part
        return out

    images["pd"] = pd_from_t2(images["t2"], wm_means["t2"])
    return SyntheticStudy(
        images={m: full(images[m]) for m in KNOWN_MODALITIES},
        label=full(label),
        affine=header_affine(shape, spacing),
        mask=full(mask),
        tissue=full(tissue),
    )


def pd_from_t2(t2: np.ndarray, wm_t2: float, wm_pd: float = 600.0) -> np.ndarray:
    """A made proton-density-like contrast from a made T2 (any shape): ``wm_pd * sqrt(t2 / wm_t2)``, so that, as in a
    PD image, CSF is brighter than grey matter, grey matter brighter than white matter, and lesions keep the sign of
    their T2 contrast with less of it. It draws no random number, so the other contrasts of a seed do not change."""
    return (wm_pd * np.sqrt(np.maximum(t2, 0) / wm_t2)).astype(np.float32)


def study_paths(folder: str | os.PathLike, name: str, modalities: Sequence[str] = MODALITIES) -> dict[str, Path]:
    """BraTS-style file names of a study: ``folder/name/{name}_{t1,t1c,t2,flair,seg}.nii.gz`` (the ``modalities``
    asked for, and the label)."""
    base = Path(folder) / name
    paths = {m: base / f"{name}_{m}.nii.gz" for m in modalities}
    paths["label"] = base / f"{name}_seg.nii.gz"
    return paths


def write_study(
    study: SyntheticStudy,
    folder: str | os.PathLike,
    name: str,
    dtype: np.dtype | type = np.int16,
    modalities: Sequence[str] = MODALITIES,
) -> dict[str, str]:
    """Write a made study as BraTS-style NIfTI files (atomically); images rounded to ``dtype``, the label as uint8.

    Returns:
        ``{"name": name, "t1": path, "t1c": ..., "t2": ..., "flair": ..., "label": path}`` (the ``modalities``).
    """
    paths = study_paths(folder, name, modalities)
    for m in modalities:
        img = study.images[m]
        if np.issubdtype(np.dtype(dtype), np.integer):
            info = np.iinfo(dtype)
            img = np.clip(np.rint(img), info.min, info.max)
        write_nifti(img, study.affine, paths[m], dtype=dtype)
    write_nifti(study.label, study.affine, paths["label"], dtype=np.uint8)
    return {"name": name, **{k: str(p) for k, p in paths.items()}}


def make_dataset(
    out_dir: str | os.PathLike,
    n_healthy: int,
    n_anomalous: int = 0,
    lesion: str | Sequence[str] = "tumour",
    seed: int = 0,
    shape: Sequence[int] = BRATS_SHAPE,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    n_validation: int = 0,
    modalities: Sequence[str] = MODALITIES,
) -> Path:
    """Write a made (synthetic) dataset and its MONAI datalist ``out_dir/datalist.json``, with the ``modalities``
    asked for (any of ``t1``, ``t1c``, ``t2``, ``flair``, ``pd``).

    Studies are ``healthy_000``, ... and ``{lesion}_000``, ... (``n_anomalous`` of each lesion family named in
    ``lesion``: one name, a comma-separated string or a sequence); a study whose files all exist is not made again,
    so an interrupted run resumes. The datalist has ``training`` (healthy studies but the last ``n_validation``),
    ``validation`` (those) and ``testing`` (the anomalous ones), with paths relative to ``out_dir``.
    """
    if not 0 <= n_validation <= n_healthy:
        raise ValueError(f"n_validation must be in [0, n_healthy={n_healthy}], not {n_validation}")
    families = [f.strip() for f in lesion.split(",")] if isinstance(lesion, str) else [str(f) for f in lesion]
    wrong = [f for f in families if f not in LESIONS[1:]]
    if wrong and n_anomalous:
        raise ValueError(f"lesion families of anomalous studies must be among {LESIONS[1:]}, not {wrong}")
    out_dir = Path(out_dir)
    groups: dict[str, list[dict[str, str]]] = {"healthy": [], "anomalous": []}
    plan = [("healthy", "none", n_healthy)] + [("anomalous", f, n_anomalous) for f in families if n_anomalous]
    for group, kind, count in plan:
        prefix = "healthy" if kind == "none" else kind
        for i in range(count):
            name = f"{prefix}_{i:03d}"
            paths = study_paths(out_dir, name, modalities)
            if not all(p.is_file() for p in paths.values()):
                study_seed = int(np.random.SeedSequence([seed, LESIONS.index(kind), i]).generate_state(1)[0])
                write_study(make_study(study_seed, kind, shape, spacing), out_dir, name, modalities=modalities)
            groups[group].append({"name": name, **{k: str(p.relative_to(out_dir)) for k, p in paths.items()}})
    n_train = n_healthy - n_validation
    datalist = {
        "training": groups["healthy"][:n_train],
        "validation": groups["healthy"][n_train:],
        "testing": groups["anomalous"],
    }
    path = out_dir / "datalist.json"
    text = json.dumps(datalist, indent=2) + "\n"
    if not path.is_file() or path.read_text() != text:
        atomic_write_bytes(text.encode(), path)
    return path
