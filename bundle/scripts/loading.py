"""Reading a study once and checking it once: the first two steps of the preprocessing (``pre#load`` and
``pre#check`` in ``configs/inference.yaml``).

* :class:`LoadStudyd`: every file of a study (the modalities, and a brain ``mask`` and ``label`` when given) read
  once with MONAI's ``LoadImage`` into a channel-first MetaTensor (1, x, y, z) float32 with its RAS affine; a 4D
  file with a trailing singleton axis counts as 3D. An unreadable or truncated file, or one that is not a 3D volume,
  stops the study with a :class:`~scripts.errors.StudyError` naming the file.
* :class:`CheckStudyd`: the voxel checks, on the arrays just read: no NaN or infinite voxel, no empty or constant
  modality, a brain of a brain's size.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import LoadImage, MapTransform
from scripts import MODALITIES
from scripts.errors import StudyError
from scripts.grid import voxel_ml
from scripts.studies import source_name

PathLike = str | os.PathLike


class LoadStudyd(MapTransform):
    """Read each file of ``keys`` (paths in, MetaTensors (1, x, y, z) float32 out), once.

    Also sets ``data["native_reference"]`` to the file of the ``reference`` modality, whose grid registered studies'
    outputs go back to (``scripts.native.ToNatived``).

    Args:
        keys: the study's keys to read; missing ones are skipped with ``allow_missing_keys`` (mask, label).
        reference: the reference modality (``reference_modality``).
    """

    # MONAI's reader of each file: which readers it holds depends on the packages installed, not the image read
    not_settings = ("reader",)

    def __init__(self, keys: KeysCollection, reference: str = "t1", allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference = reference
        # LoadImage builds every reader whose package is installed; with pydicom there, MONAI's GPU DICOM reader
        # warns (a warning and a log line) that its nvImageCodec plugin is absent. The bundle reads NIfTI here (DICOM
        # studies are converted first, scripts.dicom_series), so that message is not for the user.
        plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
        level = plugin_log.level
        plugin_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)
                self.reader = LoadImage(image_only=True, ensure_channel_first=True, dtype="float32")
        finally:
            plugin_log.setLevel(level)

    def load(self, path: PathLike) -> torch.Tensor:
        """One file as a MetaTensor (1, x, y, z); StudyError naming the file when it cannot be one."""
        fname = str(path)
        try:
            image = self.reader(fname)
        except Exception as err:  # nibabel and MONAI raise many types for unreadable, truncated or alien files
            cause = err.__cause__ or err
            text = str(cause).strip().splitlines()[-1] if str(cause).strip() else ""
            detail = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
            raise StudyError(f"{fname}: unreadable or truncated ({detail})") from err
        if image.ndim != 4 or image.shape[0] != 1:
            shape = tuple(image.shape[1:]) if image.ndim == 4 else tuple(image.shape)
            raise StudyError(f"{fname}: expected a 3D volume (or 4D with a singleton 4th axis), got shape {shape}")
        return image

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if value is None:
                continue
            if not isinstance(value, (str, os.PathLike)):
                raise StudyError(f"study {d.get('name', '?')}: '{key}' must be a file path, got {type(value).__name__}")
            d[key] = self.load(value)
            if key == self.reference:
                d["native_reference"] = str(value)
        return d


SLAB = 16
"""Slices (last axis) a voxel check looks at together: its temporaries are a slab's, not a volume's."""


def slabs(image: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``image`` (..., D) in views of :data:`SLAB` slices along its last axis."""
    return image.split(SLAB, dim=-1) if image.ndim else (image,)


def positive_stats(image: torch.Tensor) -> tuple[int, float, float]:
    """(count, mean, standard deviation) of the voxels of ``image`` above zero, summed in float64 a slab at a time
    (no copy of the voxels); the deviation is the sample's (n - 1), 0 for fewer than two voxels."""
    count, total, squares = 0, 0.0, 0.0
    for slab in slabs(image):
        values = torch.masked_select(slab, slab > 0).double()
        count += values.numel()
        total += float(values.sum())
        squares += float((values * values).sum())
    if count == 0:
        return 0, 0.0, 0.0
    mean = total / count
    variance = (squares - total * mean) / (count - 1) if count > 1 else 0.0
    return count, mean, max(variance, 0.0) ** 0.5


class CheckStudyd(MapTransform):
    """The voxel checks of a loaded study, on the arrays :class:`LoadStudyd` read (``keys``; missing ones skipped):

    * no NaN or infinite voxel, in any file;
    * each modality of ``modalities`` has voxels above zero (not an empty image) and is not constant (the spread of
      its non-zero voxels is at least ``min_relative_spread`` of their mean: a mask or a constant volume saved as
      a modality is refused);
    * the brain (voxels where any modality is above zero) is at least ``min_brain_ml`` millilitres: an adult brain
      is about 1000-1800 ml, and a much smaller "brain" is a wrong file or a wrong header.

    Raises:
        StudyError: naming the file and the problem.
    """

    # gates: a study is refused or scored, its map never changed
    not_settings = ("min_brain_ml", "min_relative_spread")

    def __init__(
        self,
        keys: KeysCollection,
        modalities: Sequence[str] = MODALITIES,
        min_brain_ml: float = 100.0,
        min_relative_spread: float = 1e-3,
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.modalities = tuple(modalities)
        self.min_brain_ml = float(min_brain_ml)
        self.min_relative_spread = float(min_relative_spread)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        brain = None
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key]).as_subclass(torch.Tensor)
            not_finite = sum(int((~torch.isfinite(slab)).sum()) for slab in slabs(image))
            if not_finite:
                raise StudyError(f"{source_name(d[key])}: holds {not_finite} NaN or infinite voxels")
            if key not in self.modalities:
                continue
            inside = image > 0
            count, mean, spread = positive_stats(image)
            if count == 0:
                raise StudyError(f"{source_name(d[key])}: no voxel above zero (an empty image)")
            if spread <= self.min_relative_spread * abs(mean):
                raise StudyError(
                    f"{source_name(d[key])}: a constant image (its {count} non-zero voxels are all about "
                    f"{mean:.4g}); expected an MR image"
                )
            brain = inside if brain is None or brain.shape != inside.shape else brain | inside
        if brain is not None:
            reference = d[next(k for k in self.modalities if k in d)]
            ml = int(torch.count_nonzero(brain)) * voxel_ml(reference)  # a bool sum would make an int64 copy
            if ml < self.min_brain_ml:
                raise StudyError(
                    f"{source_name(reference)}: the brain (voxels above zero) is {ml:.1f} ml, far too small for a "
                    f"brain (at least {self.min_brain_ml:g} ml expected): a wrong file or a wrong voxel size?"
                )
        return d
