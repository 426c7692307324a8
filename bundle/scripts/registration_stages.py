"""The two registration stages, with SimpleITK: a rigid co-registration of a modality to the reference modality, and
an affine registration of the reference to the atlas (Mattes mutual information, multi-resolution pyramids, seeded
metric sampling), with their settings and the small image helpers they share. ``scripts.registration`` runs them for
a whole study."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import SimpleITK as sitk  # noqa: N813


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
    registered brain mask's Dice with the atlas brain >= 0.90 (see ``benchmarks/registration_speed.py``).
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


def binary_mask(mask: sitk.Image) -> sitk.Image:
    """uint8 0/1 image: voxels >= 0.5."""
    return sitk.Cast(sitk.BinaryThreshold(sitk.Cast(mask, sitk.sitkFloat32), 0.5, 1e30, 1, 0), sitk.sitkUInt8)


def dilate_mask(mask: sitk.Image, radius_mm: float) -> sitk.Image:
    """Binary dilation of a uint8 mask by about ``radius_mm`` (per-axis radius in voxels, at least 1)."""
    radius = [max(1, int(round(radius_mm / s))) for s in mask.GetSpacing()]
    return sitk.BinaryDilate(mask, radius, sitk.sitkBall, 0, 1)


def resample_onto(
    image: sitk.Image, reference: sitk.Image, transform: sitk.Transform, interpolator: int = sitk.sitkLinear
) -> sitk.Image:
    """``image`` resampled onto ``reference``'s grid, reading it at ``transform(p)``; zero outside."""
    return sitk.Resample(image, reference, transform, interpolator, 0.0, image.GetPixelID())


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
