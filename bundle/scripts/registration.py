"""Registration to the atlas (``scripts.atlas``: SRI24 "BraTS space" by default) with SimpleITK, and the
preprocessing step that does it (``pre#register`` in ``configs/inference.yaml``).

Pipeline (:func:`register_study`), on images already read (``scripts.loading``):

1. every modality is co-registered rigidly to the reference modality (default ``t1``): Mattes mutual information,
   multi-resolution pyramid, centred-transform initialisation (centres of mass matched) and, as a second start,
   the scanner's own coordinates; the start ending with the better metric wins;
2. a brain mask, when given, is brought onto the reference grid (it may sit on another modality's grid, then the
   co-registration of that modality carries it) and the reference is masked; without a mask and with an image
   that does not look skull-stripped (``looks_skull_stripped``) a ``SkullStripWarning`` says that results will
   be poor, skull stripping being out of scope;
3. the (masked) reference is registered affinely to the atlas: centre-of-mass (MOMENTS) initialisation, Mattes
   mutual information, multi-resolution;
4. per modality the transforms are composed and the native image is resampled ONCE onto the atlas grid (linear,
   zero outside).

The transforms map *atlas* points to *native* points (SimpleITK's convention); ``scripts.native`` brings maps back.
A study already on the atlas lattice (:func:`needs_registration` is False, e.g. a BraTS study on SRI24) passes
through without any resampling. Grid geometry is ``scripts.grid``; histogram matching is ``scripts.histogram``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813
from monai.data import MetaTensor
from monai.transforms import MapTransform
from scripts import MODALITIES, as_flag_or_auto
from scripts.atlas import atlas_grid, load_atlas
from scripts.errors import StudyError
from scripts.grid import (
    Grid,
    read_grid,
    read_image,
    same_grid,
    same_lattice,
    to_metatensor,
    to_sitk,
    with_header_geometry,
)
from scripts.native import transform_matrix
from scripts.progress import progress
from scripts.registration_stages import (
    RegistrationSettings,
    binary_mask,
    compose,
    coregister_rigid,
    dilate_mask,
    register_affine,
    resample_onto,
)
from scripts.studies import MODALITY_ALIASES, source_name

PathLike = str | os.PathLike
Atlas = str | PathLike | sitk.Image | None


class SkullStripWarning(UserWarning):
    """A study without brain mask does not look skull-stripped: registration to a brain-only atlas will be poor."""


@dataclass
class RegistrationResult:
    """What ``register_study`` returns.

    Attributes:
        images: per modality, the image on the atlas grid (float32).
        transforms: per modality, the composed transform mapping atlas points to that modality's native points
            (``sitk.CompositeTransform``: atlas -> reference affine, then reference -> modality rigid).
        reference: the reference modality's key.
        reference_native: an image with the reference modality's original grid (size, spacing, origin, direction),
            for ``to_native``.
        mask: the brain mask on the output grid (uint8), or None when no mask was given.
        registered: whether the study was registered (always, here; ``RegisterToAtlasd`` passes studies through).
    """

    images: dict[str, sitk.Image]
    transforms: dict[str, sitk.Transform | None]
    reference: str
    reference_native: sitk.Image
    mask: sitk.Image | None
    registered: bool


# --------------------------------------------------------------------------------------------------------------
# does the study need registration?
# --------------------------------------------------------------------------------------------------------------


def needs_registration(
    grids: Sequence[Grid | PathLike] | Mapping[str, Grid | PathLike], atlas: Atlas = None, tol_mm: float = 1e-2
) -> bool:
    """True unless all ``grids`` (grids, or files whose headers give them) are one grid that is the atlas lattice
    (:func:`scripts.grid.same_lattice`).

    A BraTS study (240 x 240 x 155, 1 mm, LPS header, origin (0, -239, 0)) lies on the SRI24 atlas lattice (LAS
    header, origin (0, 0, 0) in LPS): it does not need registration.
    """
    grids = list(grids.values()) if isinstance(grids, Mapping) else list(grids)
    grids = [g if isinstance(g, Grid) else read_grid(g) for g in grids]
    if not grids:
        raise StudyError("needs_registration: no grids given")
    if not all(same_grid(g, grids[0], tol_mm) for g in grids[1:]):
        return True
    return not same_lattice(grids[0], atlas_grid(atlas), tol_mm)


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


# --------------------------------------------------------------------------------------------------------------
# whole study
# --------------------------------------------------------------------------------------------------------------


def _names_modality(path: PathLike, key: str) -> bool:
    """Whether a file name holds a token naming modality ``key`` (``bet_t1c_mask.nii.gz`` names ``t1c``)."""
    stem = Path(path).name.lower()
    for suffix in (".nii.gz", ".nii"):
        stem = stem.removesuffix(suffix)
    return any(token in MODALITY_ALIASES.get(key, (key,)) for token in re.split(r"[_\-.]", stem))


def mask_modality(
    mask_grid: Grid,
    grids: Mapping[str, Grid],
    reference: str,
    explicit: str | None = None,
    mask_name: PathLike | None = None,
) -> str | None:
    """The modality a brain mask was made on: its voxels are that modality's, carried by its co-registration.

    ``explicit`` wins; otherwise among the modalities whose grid the mask shares, the one its file name
    ``mask_name`` names (as in ``bet_t1c_mask.nii.gz``), else the reference, else the first. None when it shares no
    modality's grid: it is then taken to lie in the reference's physical space. Two modalities may share one header
    and still not be aligned (lgg_native's t1 and t1c are about 8 degrees apart), hence the file-name rule.
    """
    if explicit is not None:
        if explicit not in grids:
            raise StudyError(f"{mask_name}: mask modality '{explicit}' is not among the study's keys {sorted(grids)}")
        return explicit
    matching = [key for key in grids if same_grid(mask_grid, grids[key])]
    named = [key for key in matching if mask_name is not None and _names_modality(mask_name, key)]
    if named:
        return named[0]
    if reference in matching:
        return reference
    return matching[0] if matching else None


def register_study(
    images: Mapping[str, sitk.Image | PathLike],
    reference: str = "t1",
    mask: sitk.Image | PathLike | None = None,
    atlas: Atlas = None,
    settings: RegistrationSettings | None = None,
    mask_on: str | None = None,
    mask_name: PathLike | None = None,
) -> RegistrationResult:
    """Register a study's modalities (``images``: key -> 3D image, e.g. from :func:`scripts.grid.read_image`) to the
    atlas and resample each once onto its grid.

    Args:
        images: modality key -> image (or its file); the modalities may lie on different grids.
        reference: the key registered to the atlas; the others are co-registered rigidly to it.
        mask: optional brain mask (or its file), on any modality's grid (or anywhere in the reference's physical
            space). It is applied before the atlas registration and to the outputs (zero outside the brain).
        atlas: atlas name, path or image (``scripts.atlas``); SRI24 by default.
        settings: registration budget; ``RegistrationSettings()`` by default.
        mask_on: the modality the mask was made on; by default found by ``mask_modality`` (grid, file name).
        mask_name: the mask's file, for messages and for ``mask_modality``'s file-name rule.

    Returns:
        a ``RegistrationResult``; on the atlas grid every image is float32 (SimpleITK size order).

    Warns:
        SkullStripWarning: no mask and the reference does not look skull-stripped.
    """
    if reference not in images:
        raise StudyError(f"reference modality '{reference}' is not among the study's keys {sorted(images)}")
    settings = settings or RegistrationSettings()
    if mask is not None and not isinstance(mask, sitk.Image):
        mask_name, mask = mask_name or mask, read_image(mask)
    images = {
        key: sitk.Cast(image if isinstance(image, sitk.Image) else read_image(image), sitk.sitkFloat32)
        for key, image in images.items()
    }
    fixed = images[reference]
    transforms: dict[str, sitk.Transform] = {reference: sitk.Euler3DTransform()}
    native_mask, mask_image, mask_key = None, None, None
    if mask is not None:
        mask_image = binary_mask(mask)
        if np.count_nonzero(sitk.GetArrayViewFromImage(mask_image)) == 0:
            raise StudyError(f"{mask_name or 'the brain mask'}: the brain mask is empty")
        grids = {key: Grid.of(image) for key, image in images.items()}
        mask_key = mask_modality(Grid.of(mask_image), grids, reference, mask_on, mask_name)
        native_mask = _mask_on_reference(mask_image, mask_key, images, reference, settings, transforms)
    if native_mask is None and not looks_skull_stripped(fixed):
        warnings.warn(
            f"{reference}: no brain mask given and the image does not look skull-stripped; skull stripping "
            "is out of scope of this bundle and the registration to the brain-only atlas will be poor. "
            "Give a brain mask (key 'mask') or skull-stripped images.",
            SkullStripWarning,
            stacklevel=2,
        )
    fixed_mask = dilate_mask(native_mask, settings.mask_dilation_mm) if native_mask is not None else None
    bar = progress(total=len(images), desc="registering to the atlas", unit="stage")
    for key, image in images.items():
        if key not in transforms:
            transforms[key] = coregister_rigid(
                fixed, image, settings.rigid, fixed_mask=fixed_mask, seed=settings.seed, starts=settings.rigid_starts
            )
            bar.update()
    moving = fixed if native_mask is None else sitk.Mask(fixed, native_mask)
    atlas_image = load_atlas(atlas)
    atlas_mask = dilate_mask(
        binary_mask(sitk.BinaryThreshold(atlas_image, 1e-6, 1e30, 1, 0)), settings.mask_dilation_mm
    )
    affine = register_affine(atlas_image, moving, settings.affine, atlas_mask=atlas_mask, seed=settings.seed)
    bar.update(bar.total - bar.n)
    bar.close()
    composed = {key: compose(affine, transforms[key]) for key in images}
    atlas_grid_mask = None
    if mask_image is not None:
        mask_transform = composed[mask_key] if mask_key is not None else compose(affine)
        atlas_grid_mask = binary_mask(
            resample_onto(sitk.Cast(mask_image, sitk.sitkFloat32), atlas_image, mask_transform)
        )
    out = {}
    for key, image in images.items():
        resampled = resample_onto(image, atlas_image, composed[key])
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
            moving_mask=dilate_mask(mask_image, settings.mask_dilation_mm),
            seed=settings.seed,
            starts=settings.rigid_starts,
        )
    carry = transforms[key] if key is not None else sitk.Euler3DTransform()
    return binary_mask(resample_onto(sitk.Cast(mask_image, sitk.sitkFloat32), fixed, carry))


# --------------------------------------------------------------------------------------------------------------
# the preprocessing step
# --------------------------------------------------------------------------------------------------------------


class RegisterToAtlasd(MapTransform):
    """Bring a loaded study onto the atlas grid, registering it only when needed (``pre#register``).

    Input: ``data[key]`` a MetaTensor (1, x, y, z) per modality of ``keys`` (from ``scripts.loading.LoadStudyd``),
    optionally ``data[mask_key]`` (a brain mask on any modality's grid) and ``data[label_key]``. A study that needs
    no registration (``register`` False, or "auto" and already on the atlas lattice) passes through untouched: its
    voxel order stays the file's (e.g. LPS for BraTS files), so use ``Orientationd`` afterwards. A registered study
    comes out as MetaTensors (1, X, Y, Z) on the atlas grid (the atlas file's voxel order), masked by the brain mask
    when one was given; its label is moved with the transform of the modality whose grid it shares (linear
    interpolation of the binary label, then > 0.5, as the paper does for Shifts); ``data["atlas_transform"]`` is the
    reference modality's composed transform (atlas -> native points) as a 4 x 4 matrix (``scripts.native``), absent
    when the study passed through.

    Args:
        keys: the modality keys.
        reference: the modality registered to the atlas (the others are co-registered to it).
        mask_key: key of an optional brain mask (absent or None: no mask).
        register: "auto" (:func:`needs_registration`, mask included), True (always) or False (never).
        atlas: the atlas (``scripts.atlas``: "sri24", "mni152" or a file); SRI24 by default.
        settings: registration budget, ``RegistrationSettings()`` by default.
        mask_on: the modality the mask was made on (default: found by ``mask_modality``).
        label_key: key of an optional label.
    """

    def __init__(
        self,
        keys: Sequence[Hashable] = MODALITIES,
        reference: str = "t1",
        mask_key: str | None = "mask",
        register: bool | str = "auto",
        atlas: Atlas = None,
        settings: RegistrationSettings | None = None,
        mask_on: str | None = None,
        label_key: str | None = "label",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        register = as_flag_or_auto(register)
        if register not in ("auto", True, False):
            raise ValueError(f"register must be 'auto', True or False, got {register!r}")
        if reference not in self.keys:
            raise ValueError(f"reference '{reference}' must be one of keys {self.keys}")
        self.reference = reference
        self.mask_key = mask_key
        self.register = register
        self.atlas = atlas
        self.settings = settings
        self.mask_on = mask_on
        self.label_key = label_key

    def needed(self, data: Mapping[Hashable, object]) -> bool:
        """Whether this study is registered: ``register`` itself, or for "auto" whether its grids (mask
        included) are the atlas lattice."""
        if self.register != "auto":
            return bool(self.register)
        keys = [*self.key_iterator(dict(data)), *([self.mask_key] if data.get(self.mask_key) is not None else [])]
        return needs_registration([Grid.of_tensor(data[k]) for k in keys], self.atlas)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        images = {str(key): d[key] for key in self.key_iterator(d)}
        if self.reference not in images:
            raise StudyError(f"study {d.get('name', '?')}: the reference modality '{self.reference}' is missing")
        d.pop("atlas_transform", None)
        if not self.needed(d):
            return d
        mask = d.get(self.mask_key) if self.mask_key is not None else None
        result = register_study(
            {key: self.as_image(image) for key, image in images.items()},
            self.reference,
            self.as_image(mask) if mask is not None else None,
            self.atlas,
            self.settings,
            self.mask_on,
            mask_name=source_name(mask) if mask is not None else None,
        )
        for key, image in result.images.items():
            d[key] = to_metatensor(image, source_name(images[key]))
        if result.mask is not None:
            d[self.mask_key] = to_metatensor(result.mask, source_name(mask))
        label = d.get(self.label_key) if self.label_key is not None else None
        if isinstance(label, MetaTensor):
            d[self.label_key] = to_metatensor(self._label_to_atlas(label, images, result), source_name(label))
        d["atlas_transform"] = transform_matrix(result.transforms[self.reference])
        return d

    @staticmethod
    def as_image(tensor: MetaTensor) -> sitk.Image:
        """A loaded image as SimpleITK sees its file (:func:`scripts.grid.with_header_geometry`)."""
        return with_header_geometry(to_sitk(tensor), source_name(tensor))

    def _label_to_atlas(
        self, label: MetaTensor, images: Mapping[str, MetaTensor], result: RegistrationResult
    ) -> sitk.Image:
        """The binary label on the atlas grid, moved with the transform of the modality whose grid it shares."""
        image = self.as_image(label)
        grid = Grid.of(image)
        key = next((k for k, v in images.items() if same_grid(Grid.of_tensor(v), grid)), self.reference)
        binary = sitk.Cast(sitk.BinaryThreshold(image, 1e-6, 1e30, 1, 0), sitk.sitkFloat32)
        moved = resample_onto(binary, load_atlas(self.atlas), result.transforms[key])
        return sitk.Cast(sitk.BinaryThreshold(moved, 0.5, 1e30, 1, 0), sitk.sitkFloat32)
