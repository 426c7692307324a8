"""Bringing a study into the SRI24 atlas space ("BraTS space", 240 x 240 x 155 at 1 mm) and back, and Nyúl-style
histogram standardisation.

Pipeline (``register_study``), all with SimpleITK:

1. every modality is read as a 3D float32 image (a trailing singleton 4th axis is dropped);
2. every modality is co-registered rigidly to the reference modality (default ``t1``): Mattes mutual information,
   multi-resolution pyramid, centred-transform initialisation (centres of mass matched) and, as a second start,
   the scanner's own coordinates; the start ending with the better metric wins;
3. a brain mask, when given, is brought onto the reference grid (it may sit on another modality's grid, then the
   co-registration of that modality carries it) and the reference is masked; without a mask and with an image
   that does not look skull-stripped (``looks_skull_stripped``) a ``SkullStripWarning`` says that results will
   be poor, skull stripping being out of scope;
4. the (masked) reference is registered affinely to the atlas: centre-of-mass (MOMENTS) initialisation, Mattes
   mutual information, multi-resolution;
5. per modality the transforms are composed and the native image is resampled ONCE onto the atlas grid (linear,
   zero outside).

Transform convention (SimpleITK's): resampling onto grid A with transform T reads the moving image at ``T(p)`` for
every point ``p`` of A, so a transform returned here maps *atlas* points to *native* points of a modality. Bringing
a map computed on the atlas grid back to the native reference grid (``to_native``) therefore resamples with the
inverse transform.

A study already on the atlas lattice (``needs_registration`` is False, e.g. a BraTS study) passes through without
any resampling.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform

from scripts import MODALITIES, as_flag_or_auto
from scripts.studies import MODALITY_ALIASES, StudyError, atomic_write_bytes

ATLAS_NAME = "sri24_t1_brain.nii.gz"
ATLAS_SIZE: tuple[int, int, int] = (240, 240, 155)
ATLAS_SPACING: tuple[float, float, float] = (1.0, 1.0, 1.0)
DEFAULT_PERCENTILES: tuple[float, ...] = (1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)

# LPS (ITK) <-> RAS (MONAI / nibabel) world coordinates differ by a flip of x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

PathLike = str | os.PathLike


class SkullStripWarning(UserWarning):
    """A study without brain mask does not look skull-stripped: registration to a brain-only atlas will be poor."""


# --------------------------------------------------------------------------------------------------------------
# settings and results
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageSettings:
    """One registration stage: pyramid, metric sampling and optimiser budget.

    ``shrink_factors`` and ``smoothing_sigmas`` (mm) are per pyramid level, coarse to fine; ``iterations`` is the
    maximum number of optimiser steps per level; ``sampling`` the fraction of fixed-image voxels at which the
    metric is evaluated (random, seeded).
    """

    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas: tuple[float, ...] = (2.0, 1.0, 0.0)
    iterations: int = 100
    sampling: float = 0.1
    bins: int = 32
    learning_rate: float = 1.0
    min_step: float = 1e-3


@dataclass(frozen=True)
class RegistrationSettings:
    """Settings of ``register_study``: a rigid stage (modality -> reference) and an affine one (reference -> atlas).

    The defaults are tuned on the lgg_native study for <= 60 s per 4-modality study on 2 CPU cores while keeping the
    registered brain mask's Dice with the atlas brain >= 0.90 (see ``benchmarks/registration.py``).
    """

    rigid: StageSettings = field(default_factory=StageSettings)
    affine: StageSettings = field(
        default_factory=lambda: StageSettings(
            shrink_factors=(8, 4, 2), smoothing_sigmas=(4.0, 2.0, 1.0), iterations=200, sampling=0.05
        )
    )
    rigid_starts: tuple[str, ...] = ("moments", "identity")
    seed: int = 20240613
    mask_dilation_mm: float = 6.0


@dataclass
class RegistrationResult:
    """What ``register_study`` returns.

    Attributes:
        images: per modality, the image on the atlas grid (240 x 240 x 155, float32), or the image as read when the
            study passed through unregistered.
        transforms: per modality, the composed transform mapping atlas points to that modality's native points
            (``sitk.CompositeTransform``: atlas -> reference affine, then reference -> modality rigid), or None when
            the study passed through.
        reference: the reference modality's key.
        reference_native: an image with the reference modality's original grid (size, spacing, origin, direction),
            for ``to_native``.
        mask: the brain mask on the output grid (uint8), or None when no mask was given.
        registered: whether the study was registered (False: passed through unchanged).
    """

    images: dict[str, sitk.Image]
    transforms: dict[str, sitk.Transform | None]
    reference: str
    reference_native: sitk.Image
    mask: sitk.Image | None
    registered: bool


# --------------------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------------------


def atlas_path() -> Path:
    """Path of the SRI24 T1 brain atlas shipped with the bundle (``bundle/atlas/sri24_t1_brain.nii.gz``)."""
    return Path(__file__).parents[1] / "atlas" / ATLAS_NAME


def _drop_singleton(image: sitk.Image, fname: str) -> sitk.Image:
    """A 3D image from ``image``, dropping a trailing singleton 4th axis; StudyError for other dimensions."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise StudyError(f"{fname}: expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components")
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = sitk.Extract(image, [*image.GetSize()[:3], 0], [0, 0, 0, 0])
    if image.GetDimension() != 3:
        raise StudyError(f"{fname}: expected a 3D volume (or 4D with a singleton 4th axis), got size {image.GetSize()}")
    return image


def _check_finite_nifti(fname: str) -> None:
    """StudyError if a floating-point NIfTI file holds NaN/inf voxels (ITK's reader silently turns NaN into 0)."""
    if not fname.lower().endswith((".nii", ".nii.gz")):
        return
    try:
        image = nib.load(fname)
    except Exception:  # unreadable for nibabel: ITK has already accepted the file, nothing more to check
        return
    if np.issubdtype(image.get_data_dtype(), np.floating):
        array = np.asanyarray(image.dataobj)
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise StudyError(f"{fname}: holds {bad} NaN or infinite voxels")


def read_image(path: PathLike, dtype: int = sitk.sitkFloat32) -> sitk.Image:
    """Read a NIfTI (or any ITK-readable) volume as a 3D SimpleITK image of ``dtype``.

    Raises:
        StudyError: unreadable file, not 3D (a trailing singleton 4th axis is accepted), or NaN/infinite voxels.
    """
    fname = str(path)
    try:
        image = sitk.ReadImage(fname)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise StudyError(f"{fname}: unreadable as an image ({first})") from err
    image = sitk.Cast(_drop_singleton(image, fname), dtype)
    _check_finite_nifti(fname)
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise StudyError(f"{fname}: holds NaN or infinite voxels")
    return image


@dataclass(frozen=True)
class Grid:
    """A voxel grid in ITK's LPS world: size (x, y, z), spacing (mm), origin (mm), direction (3 x 3, columns = axes)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def index_to_world(self) -> np.ndarray:
        """4 x 4 matrix mapping a continuous index (x, y, z, 1) to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.reshape(self.direction, (3, 3)) @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def blank(self) -> sitk.Image:
        """An empty uint8 image on this grid (a cheap resampling reference)."""
        image = sitk.Image([int(s) for s in self.size], sitk.sitkUInt8)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def read_grid(path: PathLike) -> Grid:
    """The grid of an image file from its header alone (a trailing singleton 4th axis is dropped).

    Raises:
        StudyError: unreadable header or not 3D.
    """
    fname = str(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(fname)
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise StudyError(f"{fname}: unreadable as an image ({str(err).strip().splitlines()[-1]})") from err
    dim = reader.GetDimension()
    size = reader.GetSize()
    if dim == 4 and size[3] == 1:
        direction = np.reshape(reader.GetDirection(), (4, 4))[:3, :3].ravel()
        return Grid(tuple(size[:3]), reader.GetSpacing()[:3], reader.GetOrigin()[:3], tuple(direction))
    if dim != 3:
        raise StudyError(f"{fname}: expected a 3D volume (or 4D with a singleton 4th axis), got size {size}")
    return Grid(tuple(size), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())


@lru_cache(maxsize=2)
def _cached_atlas(path: str) -> sitk.Image:
    return read_image(path)


def load_atlas(atlas: PathLike | sitk.Image | None = None) -> sitk.Image:
    """The atlas as a float32 image: the shipped SRI24 T1 brain by default, or ``atlas`` (path or image).

    Do not modify the returned image in place: reads from a path are cached.
    """
    if isinstance(atlas, sitk.Image):
        return sitk.Cast(_drop_singleton(atlas, "atlas image"), sitk.sitkFloat32)
    return _cached_atlas(str(atlas_path() if atlas is None else atlas))


# --------------------------------------------------------------------------------------------------------------
# is the study already in atlas space?
# --------------------------------------------------------------------------------------------------------------


def same_lattice(grid: Grid, target: Grid, tol_mm: float = 1e-2, tol_direction: float = 1e-4) -> bool:
    """True when ``grid`` samples exactly the points of ``target``, possibly in another voxel order.

    The voxel order may differ by axis flips and permutations: a BraTS file (LPS header) and the SRI24 atlas (LAS
    header) hold the same 240 x 240 x 155 physical points, with the anterior-posterior axis stored in opposite
    orders. Formally, the index-to-index map ``target^-1 o grid`` must be a signed permutation (within
    ``tol_direction``) whose image of ``grid``'s index box is ``target``'s index box (within ``tol_mm``).
    """
    to_target = np.linalg.inv(target.index_to_world()) @ grid.index_to_world()
    linear = to_target[:3, :3]
    rounded = np.round(linear)
    if not np.allclose(linear, rounded, atol=tol_direction):
        return False
    if not (np.count_nonzero(rounded, axis=0) == 1).all() or abs(abs(np.linalg.det(rounded)) - 1) > 1e-6:
        return False
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, grid.size[0] - 1) for j in (0, grid.size[1] - 1) for k in (0, grid.size[2] - 1)]
    )
    mapped = (to_target @ corners.T).T[:, :3]
    tol_index = tol_mm / min(target.spacing)
    low, high = mapped.min(axis=0), mapped.max(axis=0)
    return bool(np.allclose(low, 0, atol=tol_index) and np.allclose(high, np.array(target.size) - 1, atol=tol_index))


def _same_grid(a: Grid, b: Grid, tol_mm: float = 1e-2, tol_direction: float = 1e-4) -> bool:
    """True when two grids are identical (same size, voxel order and geometry within tolerance)."""
    return (
        tuple(a.size) == tuple(b.size)
        and np.allclose(a.spacing, b.spacing, atol=tol_mm)
        and np.allclose(a.origin, b.origin, atol=tol_mm)
        and np.allclose(a.direction, b.direction, atol=tol_direction)
    )


def needs_registration(
    paths: Mapping[str, PathLike] | Sequence[PathLike], atlas: PathLike | None = None, tol_mm: float = 1e-2
) -> bool:
    """True unless all files share one grid that is the atlas lattice (``same_lattice``), read from headers only.

    A BraTS study (240 x 240 x 155, 1 mm, LPS header, origin (0, -239, 0)) lies on the SRI24 atlas lattice (LAS
    header, origin (0, 0, 0) in LPS): it does not need registration.
    """
    files = list(paths.values()) if isinstance(paths, Mapping) else list(paths)
    if not files:
        raise StudyError("needs_registration: no files given")
    target = read_grid(atlas_path() if atlas is None else atlas)
    grids = [read_grid(f) for f in files]
    if not all(_same_grid(g, grids[0], tol_mm) for g in grids[1:]):
        return True
    return not same_lattice(grids[0], target, tol_mm)


# --------------------------------------------------------------------------------------------------------------
# skull stripping heuristic and masks
# --------------------------------------------------------------------------------------------------------------


def looks_skull_stripped(image: sitk.Image, max_brain_ml: float = 2500.0, min_background: float = 0.3) -> bool:
    """Heuristic: does ``image`` look like a skull-stripped brain?

    A skull-stripped volume has a background set to one constant (its minimum), covering a large part of the field of
    view (>= ``min_background`` of the voxels), and what is left is brain-sized (<= ``max_brain_ml`` millilitres; an
    adult brain is about 1.0-1.8 l, a head with skull and neck in the field of view is well above 2.5 l). A raw scan
    fails the first test through its noisy background, and a scan whose background the scanner zeroed fails the
    second. A partial-coverage slab of a raw head could pass; the heuristic only decides whether to warn.
    """
    array = sitk.GetArrayViewFromImage(image)
    foreground = array > array.min()
    background = 1.0 - float(np.count_nonzero(foreground)) / foreground.size
    foreground_ml = np.count_nonzero(foreground) * float(np.prod(image.GetSpacing())) / 1000.0
    return background >= min_background and foreground_ml <= max_brain_ml


def _binary(mask: sitk.Image) -> sitk.Image:
    """uint8 0/1 image: voxels >= 0.5."""
    return sitk.Cast(sitk.BinaryThreshold(sitk.Cast(mask, sitk.sitkFloat32), 0.5, 1e30, 1, 0), sitk.sitkUInt8)


def _dilate(mask: sitk.Image, radius_mm: float) -> sitk.Image:
    """Binary dilation of a uint8 mask by about ``radius_mm`` (per-axis radius in voxels, at least 1)."""
    radius = [max(1, int(round(radius_mm / s))) for s in mask.GetSpacing()]
    return sitk.BinaryDilate(mask, radius, sitk.sitkBall, 0, 1)


def _resample(
    image: sitk.Image, reference: sitk.Image, transform: sitk.Transform, interpolator: int = sitk.sitkLinear
) -> sitk.Image:
    """``image`` resampled onto ``reference``'s grid, reading it at ``transform(p)``; zero outside."""
    return sitk.Resample(image, reference, transform, interpolator, 0.0, image.GetPixelID())


# --------------------------------------------------------------------------------------------------------------
# registration stages
# --------------------------------------------------------------------------------------------------------------


def _method(stage: StageSettings, seed: int) -> sitk.ImageRegistrationMethod:
    """A Mattes-MI, multi-resolution registration method configured from ``stage``."""
    if len(stage.shrink_factors) != len(stage.smoothing_sigmas):
        raise ValueError("shrink_factors and smoothing_sigmas need one entry per pyramid level")
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=stage.bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(stage.sampling, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=stage.learning_rate,
        minStep=stage.min_step,
        numberOfIterations=stage.iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(stage.shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(stage.smoothing_sigmas))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def _image_centre(image: sitk.Image) -> tuple[float, float, float]:
    """Physical centre of an image's field of view (LPS mm)."""
    return image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in image.GetSize()])


def _rigid_start(fixed: sitk.Image, moving: sitk.Image, start: str) -> sitk.Euler3DTransform:
    """Initial rigid transform: "moments" (centres of mass matched), "geometry" (field-of-view centres matched) or
    "identity" (scanner coordinates trusted), all rotating about the fixed image's centre or centre of mass."""
    if start == "identity":
        initial = sitk.Euler3DTransform()
        initial.SetCenter(_image_centre(fixed))
        return initial
    modes = {
        "moments": sitk.CenteredTransformInitializerFilter.MOMENTS,
        "geometry": sitk.CenteredTransformInitializerFilter.GEOMETRY,
    }
    if start not in modes:
        raise ValueError(f"unknown rigid start {start!r}; use 'moments', 'geometry' or 'identity'")
    return sitk.Euler3DTransform(
        sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(), modes[start])
    )


def coregister_rigid(
    fixed: sitk.Image,
    moving: sitk.Image,
    stage: StageSettings | None = None,
    fixed_mask: sitk.Image | None = None,
    moving_mask: sitk.Image | None = None,
    seed: int = 0,
    starts: Sequence[str] = ("moments", "identity"),
) -> sitk.Euler3DTransform:
    """Rigid transform mapping ``fixed`` points to ``moving`` points.

    One registration per initialisation in ``starts`` (see ``_rigid_start``); the one ending with the best metric
    value wins. Trusting the scanner coordinates alone is not enough: in the lgg_native study the T2 and FLAIR
    headers are ~15-18 mm and up to 14 degrees off the T1's, and an identity start then ends in a wrong local
    optimum. Metric masks (uint8, on the fixed/moving grids) restrict the metric to the brain when given.
    """
    stage = stage or StageSettings()
    best: tuple[float, sitk.Euler3DTransform] | None = None
    for start in starts:
        transform = _rigid_start(fixed, moving, start)
        method = _method(stage, seed)
        method.SetInitialTransform(transform, inPlace=True)
        if fixed_mask is not None:
            method.SetMetricFixedMask(fixed_mask)
        if moving_mask is not None:
            method.SetMetricMovingMask(moving_mask)
        method.Execute(fixed, moving)
        value = method.GetMetricValue()
        if best is None or value < best[0]:
            best = (value, transform)
    if best is None:
        raise ValueError("coregister_rigid needs at least one start")
    return best[1]


def register_affine(
    atlas: sitk.Image,
    moving: sitk.Image,
    stage: StageSettings | None = None,
    atlas_mask: sitk.Image | None = None,
    seed: int = 0,
) -> sitk.AffineTransform:
    """Affine transform mapping atlas points to ``moving`` points: MOMENTS initialisation, Mattes MI, pyramid."""
    stage = stage or RegistrationSettings().affine
    initial = sitk.CenteredTransformInitializer(
        atlas, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    transform = sitk.AffineTransform(initial)
    method = _method(stage, seed)
    method.SetInitialTransform(transform, inPlace=True)
    if atlas_mask is not None:
        method.SetMetricFixedMask(atlas_mask)
    method.Execute(atlas, moving)
    return transform


def compose(*transforms: sitk.Transform) -> sitk.CompositeTransform:
    """Composite applying ``transforms`` in the order given (first one first) to a point."""
    return sitk.CompositeTransform(list(reversed(transforms)))


# --------------------------------------------------------------------------------------------------------------
# whole study
# --------------------------------------------------------------------------------------------------------------


def _names_modality(path: PathLike, key: str) -> bool:
    """Whether a file name holds a token naming modality ``key`` (``bet_t1c_mask.nii.gz`` names ``t1c``)."""
    stem = Path(path).name.lower()
    for suffix in (".nii.gz", ".nii"):
        stem = stem.removesuffix(suffix)
    return any(token in MODALITY_ALIASES.get(key, (key,)) for token in re.split(r"[_\-.]", stem))


def mask_modality(mask: PathLike, grids: Mapping[str, Grid], reference: str, explicit: str | None = None) -> str | None:
    """The modality a brain mask was made on: its voxels are that modality's, carried by its co-registration.

    ``explicit`` wins; otherwise among the modalities whose grid the mask shares, the one its file name names (as
    in ``bet_t1c_mask.nii.gz``), else the reference, else the first. None when it shares no modality's grid: it is
    then taken to lie in the reference's physical space. Two modalities may share one header and still not be
    aligned (lgg_native's t1 and t1c are about 8 degrees apart), hence the file-name rule.
    """
    if explicit is not None:
        if explicit not in grids:
            raise StudyError(f"{mask}: mask modality '{explicit}' is not among the study's keys {sorted(grids)}")
        return explicit
    mask_grid = read_grid(mask)
    matching = [key for key in grids if _same_grid(mask_grid, grids[key])]
    named = [key for key in matching if _names_modality(mask, key)]
    if named:
        return named[0]
    if reference in matching:
        return reference
    return matching[0] if matching else None


def _passthrough(paths: Mapping[str, PathLike], reference: str, mask: PathLike | None) -> RegistrationResult:
    images = {key: read_image(path) for key, path in paths.items()}
    mask_image = _binary(read_image(mask)) if mask is not None else None
    return RegistrationResult(
        images=images,
        transforms=dict.fromkeys(paths),
        reference=reference,
        reference_native=images[reference],
        mask=mask_image,
        registered=False,
    )


def _decide(
    register: bool | str, paths: Mapping[str, PathLike], atlas: PathLike | sitk.Image | None, mask: PathLike | None
) -> bool:
    """Whether to register: ``register`` itself, or for "auto" whether the files (mask included) need it."""
    if register == "auto":
        files = [*paths.values(), *([mask] if mask is not None else [])]
        return needs_registration(files, None if isinstance(atlas, sitk.Image) else atlas)
    if isinstance(register, bool):
        return register
    raise ValueError(f"register must be 'auto', True or False, got {register!r}")


def register_study(
    paths: Mapping[str, PathLike],
    reference: str = "t1",
    mask: PathLike | None = None,
    register: bool | str = "auto",
    atlas: PathLike | sitk.Image | None = None,
    settings: RegistrationSettings | None = None,
    mask_on: str | None = None,
) -> RegistrationResult:
    """Register a study's modalities (``paths``: key -> file) to the atlas and resample each once onto its grid.

    Args:
        paths: modality key -> image file; the modalities may lie on different grids.
        reference: the key registered to the atlas; the others are co-registered rigidly to it.
        mask: optional brain mask file, on any modality's grid (or anywhere in the reference's physical space).
            It is applied before the atlas registration and to the outputs (zero outside the brain).
        register: "auto" (``needs_registration``), True (always) or False (never: pass through).
        atlas: atlas path or image; the shipped SRI24 T1 brain by default.
        settings: registration budget; ``RegistrationSettings()`` by default.
        mask_on: the modality the mask was made on; by default found by ``mask_modality`` (grid, file name).

    Returns:
        a ``RegistrationResult``; on the atlas grid every image is (240, 240, 155) float32 (SimpleITK size order).

    Warns:
        SkullStripWarning: no mask and the reference does not look skull-stripped.
    """
    if reference not in paths:
        raise StudyError(f"reference modality '{reference}' is not among the study's keys {sorted(paths)}")
    if not _decide(register, paths, atlas, mask):
        return _passthrough(paths, reference, mask)
    settings = settings or RegistrationSettings()
    images = {key: read_image(path) for key, path in paths.items()}
    fixed = images[reference]
    transforms: dict[str, sitk.Transform] = {reference: sitk.Euler3DTransform()}
    native_mask, mask_image, mask_key = None, None, None
    if mask is not None:
        mask_image = _binary(read_image(mask))
        if np.count_nonzero(sitk.GetArrayViewFromImage(mask_image)) == 0:
            raise StudyError(f"{mask}: the brain mask is empty")
        grids = {key: Grid.of(image) for key, image in images.items()}
        mask_key = mask_modality(mask, grids, reference, mask_on)
        native_mask = _mask_on_reference(mask_image, mask_key, images, reference, settings, transforms)
    if native_mask is None and not looks_skull_stripped(fixed):
        warnings.warn(
            f"{paths[reference]}: no brain mask given and the image does not look skull-stripped; skull stripping "
            "is out of scope of this bundle and the registration to the brain-only atlas will be poor. "
            "Give a brain mask (key 'mask') or skull-stripped images.",
            SkullStripWarning,
            stacklevel=2,
        )
    fixed_mask = _dilate(native_mask, settings.mask_dilation_mm) if native_mask is not None else None
    for key, image in images.items():
        if key not in transforms:
            transforms[key] = coregister_rigid(
                fixed, image, settings.rigid, fixed_mask=fixed_mask, seed=settings.seed, starts=settings.rigid_starts
            )
    moving = fixed if native_mask is None else sitk.Mask(fixed, native_mask)
    atlas_image = load_atlas(atlas)
    atlas_mask = _dilate(_binary(sitk.BinaryThreshold(atlas_image, 1e-6, 1e30, 1, 0)), settings.mask_dilation_mm)
    affine = register_affine(atlas_image, moving, settings.affine, atlas_mask=atlas_mask, seed=settings.seed)
    composed = {key: compose(affine, transforms[key]) for key in images}
    atlas_grid_mask = None
    if mask_image is not None:
        mask_transform = composed[mask_key] if mask_key is not None else compose(affine)
        atlas_grid_mask = _binary(_resample(sitk.Cast(mask_image, sitk.sitkFloat32), atlas_image, mask_transform))
    out = {}
    for key, image in images.items():
        resampled = _resample(image, atlas_image, composed[key])
        out[key] = resampled if atlas_grid_mask is None else sitk.Mask(resampled, atlas_grid_mask)
    return RegistrationResult(out, dict(composed), reference, fixed, atlas_grid_mask, True)


def _mask_on_reference(
    mask_image: sitk.Image,
    key: str | None,
    images: Mapping[str, sitk.Image],
    reference: str,
    settings: RegistrationSettings,
    transforms: dict[str, sitk.Transform],
) -> sitk.Image:
    """The brain mask (uint8, on the grid of modality ``key``) brought onto the reference grid.

    A mask of another modality is carried by that modality's rigid co-registration, computed here (with the mask as
    moving metric mask) and stored in ``transforms``; with ``key`` None the mask is resampled as it lies in space.
    """
    fixed = images[reference]
    if key is not None and key not in transforms:
        transforms[key] = coregister_rigid(
            fixed,
            images[key],
            settings.rigid,
            moving_mask=_dilate(mask_image, settings.mask_dilation_mm),
            seed=settings.seed,
            starts=settings.rigid_starts,
        )
    carry = transforms[key] if key is not None else sitk.Euler3DTransform()
    return _binary(_resample(sitk.Cast(mask_image, sitk.sitkFloat32), fixed, carry))


# --------------------------------------------------------------------------------------------------------------
# back to native space, transforms on disk
# --------------------------------------------------------------------------------------------------------------


def image_from_array(array: np.ndarray, affine_ras: np.ndarray) -> sitk.Image:
    """SimpleITK image from a MONAI/nibabel-style array (x, y, z) and its 4 x 4 RAS affine."""
    affine = _LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64)  # RAS -> LPS (the flip is its own inverse)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in affine[:3, 3]])
    image.SetDirection([float(d) for d in (affine[:3, :3] / spacing).ravel()])
    return image


def affine_ras(image: sitk.Image | Grid) -> np.ndarray:
    """4 x 4 RAS affine (MONAI's convention) of a SimpleITK image's grid, voxel order (x, y, z)."""
    grid = image if isinstance(image, Grid) else Grid.of(image)
    return _LPS_TO_RAS @ grid.index_to_world()


def to_metatensor(image: sitk.Image, filename: PathLike | None = None) -> MetaTensor:
    """Channel-first MetaTensor (1, x, y, z) float32 with the RAS affine, as ``LoadImage(ensure_channel_first)``."""
    array = sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkFloat32)).transpose(2, 1, 0)[None]
    affine = torch.as_tensor(affine_ras(image), dtype=torch.float64)
    meta = {
        "spatial_shape": np.asarray(image.GetSize()),
        "original_affine": affine.clone(),
        "original_channel_dim": "no_channel",
        "space": "RAS",
    }
    if filename is not None:
        meta["filename_or_obj"] = str(filename)
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), affine=affine, meta=meta)


def _atlas_space_image(
    volume: np.ndarray | torch.Tensor | sitk.Image, atlas: PathLike | sitk.Image | None
) -> sitk.Image:
    """``volume`` as a SimpleITK image: a MetaTensor keeps its own affine, a plain array lies on the atlas grid."""
    if isinstance(volume, sitk.Image):
        return volume
    affine = volume.affine if isinstance(volume, MetaTensor) else None
    array = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"expected a (x, y, z) or (1, x, y, z) volume, got shape {array.shape}")
    if affine is not None:
        return image_from_array(array, np.asarray(affine, dtype=np.float64))
    grid = Grid.of(load_atlas(atlas)) if isinstance(atlas, sitk.Image) else read_grid(atlas or atlas_path())
    if tuple(array.shape) != tuple(grid.size):
        raise ValueError(f"a plain array must be on the atlas grid {grid.size} in (x, y, z) order, got {array.shape}")
    return image_from_array(array, affine_ras(grid))


def transform_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4 x 4 homogeneous matrix (LPS mm -> LPS mm) of an affine ``transform`` (composites of rigid and affine
    maps included), found from the images of four points. A matrix, unlike a SimpleITK object, passes through
    MONAI's batching and can be saved anywhere."""
    points = np.array([[0.0, 0, 0], [100.0, 0, 0], [0, 100.0, 0], [0, 0, 100.0]])
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in points])
    matrix = np.eye(4)
    matrix[:3, :3] = (mapped[1:] - mapped[0]).T / 100.0
    matrix[:3, 3] = mapped[0]
    return matrix


def matrix_transform(matrix: np.ndarray | torch.Tensor) -> sitk.AffineTransform:
    """The SimpleITK transform of a 4 x 4 homogeneous matrix from :func:`transform_matrix`."""
    m = np.asarray(matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"expected a 4 x 4 matrix, got shape {m.shape}")
    return sitk.AffineTransform(m[:3, :3].ravel().tolist(), m[:3, 3].tolist())


def to_native(
    volume: np.ndarray | torch.Tensor | sitk.Image,
    transform: sitk.Transform | np.ndarray | torch.Tensor | None,
    reference_native: sitk.Image | PathLike,
    interpolator: str = "linear",
    atlas: PathLike | sitk.Image | None = None,
) -> sitk.Image:
    """Resample a map from atlas space back onto the reference modality's original grid.

    Args:
        volume: the map: a SimpleITK image, a MetaTensor (its affine is used, so it may have been reoriented), or a
            plain array (x, y, z) / (1, x, y, z) on the atlas grid in the atlas file's voxel order.
        transform: the reference modality's composed transform (atlas points -> native points), as a SimpleITK
            transform or its 4 x 4 matrix (``data["atlas_transform"]``); None for a study that passed through.
        reference_native: the reference modality's native image or its file (only the header is read).
        interpolator: "linear" (float32 output) or "nearest" (labels; keeps the pixel type).

    Returns:
        an image with exactly the size, spacing, origin and direction of ``reference_native``; zero outside the
        atlas field of view.
    """
    kinds = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    if interpolator not in kinds:
        raise ValueError(f"interpolator must be one of {sorted(kinds)}, got {interpolator!r}")
    image = _atlas_space_image(volume, atlas)
    if interpolator == "linear":
        image = sitk.Cast(image, sitk.sitkFloat32)
    target = reference_native if isinstance(reference_native, sitk.Image) else read_grid(reference_native).blank()
    if transform is None:
        # a study that passed through: same points, maybe another voxel order; nearest copies them exactly
        exact = same_lattice(Grid.of(image), Grid.of(target))
        kind = sitk.sitkNearestNeighbor if exact else kinds[interpolator]
        return sitk.Resample(image, target, sitk.Transform(), kind, 0.0, image.GetPixelID())
    if not isinstance(transform, sitk.Transform):
        transform = matrix_transform(transform)
    # Resampling onto the native grid reads the atlas-space map at T^-1(p) for every native point p.
    return sitk.Resample(image, target, transform.GetInverse(), kinds[interpolator], 0.0, image.GetPixelID())


def write_transform(transform: sitk.Transform, path: PathLike) -> Path:
    """Write ``transform`` to ``path`` (.tfm, or any ITK transform format by suffix) atomically."""
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        staged = Path(tmp) / f"transform{''.join(path.suffixes) or '.tfm'}"
        sitk.WriteTransform(transform, str(staged))
        return atomic_write_bytes(staged.read_bytes(), path)


def read_transform(path: PathLike) -> sitk.Transform:
    """Read a transform written by ``write_transform``; StudyError when unreadable."""
    try:
        return sitk.ReadTransform(str(path))
    except RuntimeError as err:
        raise StudyError(f"{path}: unreadable as an ITK transform ({str(err).strip().splitlines()[-1]})") from err


# --------------------------------------------------------------------------------------------------------------
# MONAI transform
# --------------------------------------------------------------------------------------------------------------


class RegisterToAtlasd(MapTransform):
    """Load a study given as FILE PATHS and bring it onto the SRI24 atlas grid (registering only when needed).

    Input: ``data[key]`` is a file path for each of ``keys`` (and optionally ``data[mask_key]``, a brain mask on any
    modality's grid). Output: ``data[key]`` is a ``MetaTensor`` (1, 240, 240, 155) float32 on the atlas lattice with
    its RAS ``affine``; ``data[mask_key]`` likewise (0/1) when a mask was given; ``data["atlas_transform"]`` is the
    reference modality's composed transform (atlas -> native points) as a 4 x 4 matrix (see :func:`transform_matrix`),
    absent when the study was not registered; ``data["native_reference"]`` is the reference modality's file.
    A label (``label_key``) of a registered study is brought onto the atlas grid with the transform of the modality
    whose grid it shares (linear interpolation of the binary label, then > 0.5, as the paper does for Shifts).

    A study already on the atlas lattice is just loaded with ``LoadImage(image_only=True, ensure_channel_first=True)``
    (identical to a plain load; its voxel order stays the file's, e.g. LPS for BraTS files, whereas registered
    outputs follow the atlas file's LAS order: use ``Orientationd`` afterwards when one voxel order is needed).

    Bringing a map computed on these images back to the native reference grid::

        native = to_native(anomaly_map, data.get("atlas_transform"), data["native_reference"])  # sitk.Image
        sitk.WriteImage(native, "anomaly_native.nii.gz")

    ``anomaly_map`` may be a MetaTensor (its affine is honoured, so a reoriented map is fine) or a plain array in the
    output's voxel order; use ``interpolator="nearest"`` for label maps.

    Args:
        keys: the modality keys (file paths in, images out).
        reference: the modality registered to the atlas (the others are co-registered to it).
        mask_key: key of an optional brain mask file (absent or None: no mask).
        register: "auto" (``needs_registration``, mask included), True (always) or False (never, just load).
        atlas: atlas file; the shipped SRI24 T1 brain by default.
        settings: registration budget, ``RegistrationSettings()`` by default.
        mask_on: the modality the mask was made on (default: found by ``mask_modality``).
        allow_missing_keys: as for every ``MapTransform``.
    """

    def __init__(
        self,
        keys: Sequence[Hashable] = MODALITIES,
        reference: str = "t1",
        mask_key: str | None = "mask",
        register: bool | str = "auto",
        atlas: PathLike | None = None,
        settings: RegistrationSettings | None = None,
        mask_on: str | None = None,
        label_key: str | None = "label",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        register = as_flag_or_auto(register)
        if reference not in self.keys:
            raise ValueError(f"reference '{reference}' must be one of keys {self.keys}")
        self.reference = reference
        self.mask_key = mask_key
        self.register = register
        self.atlas = atlas
        self.settings = settings
        self.mask_on = mask_on
        self.label_key = label_key
        self._loader = LoadImage(image_only=True, ensure_channel_first=True)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        paths = {str(key): d[key] for key in self.key_iterator(d)}
        for key, value in paths.items():
            if not isinstance(value, (str, os.PathLike)):
                raise StudyError(f"RegisterToAtlasd: '{key}' must be a file path, got {type(value).__name__}")
        if self.reference not in paths:
            raise StudyError(f"RegisterToAtlasd: the reference modality '{self.reference}' is missing")
        mask = d.get(self.mask_key) if self.mask_key is not None else None
        d["native_reference"] = str(paths[self.reference])
        if not _decide(self.register, paths, self.atlas, mask):
            for key, path in paths.items():
                d[key] = self._loader(path)
            if mask is not None:
                d[self.mask_key] = self._loader(mask)
            label = d.get(self.label_key) if self.label_key is not None else None
            if isinstance(label, (str, os.PathLike)):
                d[self.label_key] = self._loader(label)
            d.pop("atlas_transform", None)
            return d
        result = register_study(paths, self.reference, mask, True, self.atlas, self.settings, self.mask_on)
        for key, image in result.images.items():
            d[key] = to_metatensor(image, paths[key])
        if result.mask is not None:
            d[self.mask_key] = to_metatensor(result.mask, mask)
        label = d.get(self.label_key) if self.label_key is not None else None
        if isinstance(label, (str, os.PathLike)):
            d[self.label_key] = to_metatensor(self._label_to_atlas(label, paths, result), label)
        d["atlas_transform"] = transform_matrix(result.transforms[self.reference])
        return d

    def _label_to_atlas(self, label: PathLike, paths: Mapping[str, PathLike], result: RegistrationResult) -> sitk.Image:
        """The binary label on the atlas grid, moved with the transform of the modality whose grid it shares."""
        image = read_image(label)
        grid = Grid.of(image)
        key = next((k for k, p in paths.items() if _same_grid(read_grid(p), grid)), self.reference)
        binary = sitk.Cast(sitk.BinaryThreshold(image, 1e-6, 1e30, 1, 0), sitk.sitkFloat32)
        moved = _resample(binary, load_atlas(self.atlas), result.transforms[key])
        return sitk.Cast(sitk.BinaryThreshold(moved, 0.5, 1e30, 1, 0), sitk.sitkFloat32)


# --------------------------------------------------------------------------------------------------------------
# Nyúl histogram standardisation
# --------------------------------------------------------------------------------------------------------------


def _landmarks_of(volume: np.ndarray, mask: np.ndarray | None, percentiles: Sequence[float]) -> np.ndarray:
    """Intensity percentiles of ``volume`` inside ``mask`` (None: non-zero voxels); shape (len(percentiles),)."""
    volume = np.asarray(volume, dtype=np.float64)
    inside = volume != 0 if mask is None else np.asarray(mask).astype(bool)
    if inside.shape != volume.shape:
        raise ValueError(f"mask shape {inside.shape} differs from volume shape {volume.shape}")
    values = volume[inside]
    if values.size == 0:
        raise ValueError("histogram landmarks need a non-empty mask")
    return np.percentile(values, list(percentiles))


def build_landmarks(
    volumes: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """Nyúl's standard scale: the mean over volumes of their landmarks, each mapped linearly onto a common range.

    Every volume's landmarks (percentiles inside its mask) are mapped linearly so that its first and last landmarks
    land on the mean first and last landmarks of all volumes; the standard scale is the mean of the mapped
    landmarks. Built from one volume, it is that volume's own landmarks (matching it is the identity).

    Args:
        volumes: any-shaped arrays; masks: boolean arrays of the same shapes (None: the non-zero voxels).

    Returns:
        (len(percentiles),) strictly increasing standard landmarks.
    """
    if not volumes:
        raise ValueError("build_landmarks needs at least one volume")
    masks = list(masks) if masks is not None else [None] * len(volumes)
    if len(masks) != len(volumes):
        raise ValueError(f"{len(volumes)} volumes but {len(masks)} masks")
    own = np.stack([_landmarks_of(v, m, percentiles) for v, m in zip(volumes, masks, strict=True)])
    low, high = own[:, 0].mean(), own[:, -1].mean()
    span = np.maximum(own[:, -1] - own[:, 0], 1e-12)[:, None]
    mapped = low + (own - own[:, :1]) / span * (high - low)
    return _strictly_increasing(mapped.mean(axis=0))


def _strictly_increasing(values: np.ndarray) -> np.ndarray:
    """Nudge ties apart so that interpolation between landmarks is well defined."""
    values = np.asarray(values, dtype=np.float64).copy()
    eps = 1e-6 * max(1.0, float(np.abs(values).max()))
    for i in range(1, values.size):
        values[i] = max(values[i], values[i - 1] + eps)
    return values


def match_histogram(
    volume: np.ndarray,
    mask: np.ndarray | None,
    landmarks: np.ndarray,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """Map ``volume``'s intensities inside ``mask`` piecewise-linearly so its landmarks land on ``landmarks``.

    Beyond the first/last landmarks the first/last segments are extended. Voxels outside the mask (None: the
    non-zero voxels) are returned unchanged.

    Returns:
        float32 array of ``volume``'s shape.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (len(percentiles),):
        raise ValueError(f"landmarks shape {landmarks.shape} does not match {len(percentiles)} percentiles")
    volume = np.asarray(volume)
    inside = volume != 0 if mask is None else np.asarray(mask).astype(bool)
    source = _strictly_increasing(_landmarks_of(volume, inside, percentiles))
    values = volume[inside].astype(np.float64)
    mapped = np.interp(values, source, landmarks)
    low_slope = (landmarks[1] - landmarks[0]) / (source[1] - source[0])
    high_slope = (landmarks[-1] - landmarks[-2]) / (source[-1] - source[-2])
    below, above = values < source[0], values > source[-1]
    mapped[below] = landmarks[0] + (values[below] - source[0]) * low_slope
    mapped[above] = landmarks[-1] + (values[above] - source[-1]) * high_slope
    out = volume.astype(np.float32, copy=True)
    out[inside] = mapped
    return out


def save_landmarks(
    path: PathLike, landmarks: Mapping[str, np.ndarray], percentiles: Sequence[float] = DEFAULT_PERCENTILES
) -> Path:
    """Write per-modality standard landmarks and their percentiles as JSON, atomically."""
    content = {
        "percentiles": [float(p) for p in percentiles],
        "landmarks": {str(k): [float(x) for x in np.asarray(v).ravel()] for k, v in landmarks.items()},
    }
    for key, values in content["landmarks"].items():
        if len(values) != len(percentiles):
            raise ValueError(f"landmarks of '{key}' have {len(values)} values for {len(percentiles)} percentiles")
    return atomic_write_bytes((json.dumps(content, indent=2) + "\n").encode(), path)


def load_landmarks(path: PathLike, percentiles: Sequence[float] | None = DEFAULT_PERCENTILES) -> dict[str, np.ndarray]:
    """Read landmarks written by ``save_landmarks``.

    Raises:
        StudyError: unreadable file, or percentiles other than ``percentiles`` (None: accept any).
    """
    try:
        content = json.loads(Path(path).read_text())
        stored = [float(p) for p in content["percentiles"]]
        landmarks = {str(k): np.asarray(v, dtype=np.float64) for k, v in content["landmarks"].items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StudyError(f"{path}: not a readable landmarks JSON ({err})") from err
    if percentiles is not None and (len(stored) != len(percentiles) or not np.allclose(stored, list(percentiles))):
        raise StudyError(f"{path}: landmarks were built at percentiles {stored}, expected {list(percentiles)}")
    if any(v.shape != (len(stored),) for v in landmarks.values()):
        raise StudyError(f"{path}: every modality needs {len(stored)} landmarks")
    return landmarks


__all__ = [
    "ATLAS_SIZE",
    "DEFAULT_PERCENTILES",
    "Grid",
    "RegisterToAtlasd",
    "RegistrationResult",
    "RegistrationSettings",
    "SkullStripWarning",
    "StageSettings",
    "atlas_path",
    "build_landmarks",
    "coregister_rigid",
    "load_atlas",
    "load_landmarks",
    "looks_skull_stripped",
    "match_histogram",
    "needs_registration",
    "read_grid",
    "read_image",
    "register_affine",
    "register_study",
    "same_lattice",
    "save_landmarks",
    "to_metatensor",
    "to_native",
    "write_transform",
]
