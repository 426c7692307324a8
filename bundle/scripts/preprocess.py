"""Intensity preprocessing shared by training and scoring (paper Sec. 5.2), as MONAI array/dictionary transforms.

* :class:`CheckFinite` / :class:`CheckFinited`: refuse volumes with NaN or infinite voxels, naming the file.
* :class:`ScaleByPercentile` / :class:`ScaleByPercentiled`: divide every channel by the given percentile
  (paper: the 99th) of its non-zero voxels.

:func:`volume_transforms` assembles the whole volume preprocessing from these and MONAI's own transforms; the
geometric steps (``Orientationd``, ``Resized``) are invertible, so ``Invertd`` brings the maps back onto each
study's grid.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    ConcatItemsd,
    DeleteItemsd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    Resized,
    Transform,
)

from scripts import MODALITIES, as_bool, as_flag_or_auto
from scripts.registration import RegisterToAtlasd, load_landmarks, match_histogram
from scripts.studies import StudyError


def _source_name(img) -> str:
    meta = getattr(img, "meta", None) or {}
    name = meta.get("filename_or_obj", "<array>")
    return str(name[0] if isinstance(name, (list, tuple)) and name else name)


def brain_mask(image: torch.Tensor, threshold: float = 0.0, channel_dim: int = 0) -> torch.Tensor:
    """Voxels where any channel of ``image`` exceeds ``threshold`` in magnitude, the channel axis kept with size 1:
    a volume (C, H, W, D) gives bool (1, H, W, D); slices (K, C, H, W) with ``channel_dim=1`` give (K, 1, H, W).

    A bool ``image`` is taken as a mask already.
    """
    image = torch.as_tensor(image)
    inside = image if image.dtype == torch.bool else image.abs() > threshold
    return inside.any(dim=channel_dim, keepdim=True)


class BrainMaskd(MapTransform):
    """Store the brain mask of ``data[key]`` (any channel non-zero) as a plain bool tensor in ``data[mask_key]``.

    Used on the study's own grid, before any resampling, so that outputs brought back to that grid can be
    restricted to the brain exactly. The mask is not a MetaTensor: later spatial transforms leave it alone.
    """

    def __init__(self, keys: KeysCollection, mask_key: str = "brain", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.mask_key] = brain_mask(d[key]).as_subclass(torch.Tensor)
        return d


class LabelledSlicesd(MapTransform):
    """Store which axial slices of ``data[key]`` (a label (1, H, W, D)) hold a labelled voxel, as a bool (D,) tensor
    in ``data[out_key]``.

    Placed before the in-plane resize, so that training keeps or drops a slice on the label at its own resolution, as
    the authors' ``split_healthy.py`` does: a small tumour fragment can vanish from a nearest-neighbour 128 x 128
    label, and its slice would then pass for healthy. The resize keeps the axial slices, so the flags stay aligned.
    Studies without a label get no flags.
    """

    def __init__(self, keys: KeysCollection, out_key: str = "label_slices", allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.out_key = out_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = torch.as_tensor(d[key]).as_subclass(torch.Tensor)
            d[self.out_key] = (label != 0).flatten(0, -2).any(dim=0)
        return d


class CheckFinite(Transform):
    """Raise :class:`~scripts.studies.StudyError` naming the source file when a volume holds NaN or infinities."""

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(torch.as_tensor(img))
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise StudyError(f"{_source_name(img)}: holds {bad} NaN or infinite voxels")
        return img


class ScaleByPercentile(Transform):
    """Divide each channel of ``img`` (C, ...) by its ``percentile`` over non-zero voxels (paper: 99th).

    A channel with no non-zero voxel is left as is; so is the zero background.
    """

    def __init__(self, percentile: float = 99.0) -> None:
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.percentile = float(percentile)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        out = (
            img.to(torch.float32, copy=True)
            if isinstance(img, torch.Tensor)
            else torch.as_tensor(np.asarray(img), dtype=torch.float32)
        )
        for c in range(out.shape[0]):
            values = out[c][out[c] != 0]
            if values.numel() == 0:
                continue
            scale = float(np.percentile(values.detach().cpu().numpy(), self.percentile))
            if scale > 0:
                out[c] = out[c] / scale
        return out


class CheckFinited(MapTransform):
    """Dictionary version of :class:`CheckFinite`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = CheckFinite()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


class ScaleByPercentiled(MapTransform):
    """Dictionary version of :class:`ScaleByPercentile`."""

    def __init__(self, keys: KeysCollection, percentile: float = 99.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = ScaleByPercentile(percentile)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


class HistogramMatchd(MapTransform):
    """Nyul-style histogram matching of each modality (``keys``) to reference landmarks, inside the brain.

    ``landmarks`` is a JSON file written by ``python -m scripts.cli build-histogram-landmarks`` (one landmark
    vector per modality key, see :func:`scripts.registration.save_landmarks`). Voxels that are 0 stay 0.
    """

    def __init__(self, keys: KeysCollection, landmarks: str | os.PathLike, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.landmarks = load_landmarks(landmarks)
        missing = [k for k in self.keys if k not in self.landmarks]
        if missing:
            raise StudyError(f"{landmarks}: no landmarks for modality {', '.join(map(str, missing))}")

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            matched = match_histogram(np.asarray(img.detach().cpu().numpy()), None, self.landmarks[str(key)])
            d[key] = img.new_tensor(matched) if isinstance(img, torch.Tensor) else matched
        return d


def volume_transforms(
    modalities: Sequence[str] = MODALITIES,
    image_size: int = 128,
    percentile: float = 99.0,
    label_key: str = "label",
    image_key: str = "image",
    register: bool | str = False,
    reference: str = "t1",
    histogram_matching: bool | str = False,
    histogram_landmarks: str | os.PathLike | None = None,
    extra: Sequence[Transform] = (),
    label_mode: str = "nearest-exact",
) -> list[Transform]:
    """The volume preprocessing of paper Sec. 5.2, shared by training and scoring, as a list of MONAI transforms.

    Input: a study dict of file paths (one per modality, optionally ``label`` and a brain ``mask``). Output:
    ``data[image_key]``, a MetaTensor (C, image_size, image_size, D) in RAS orientation, each channel divided by
    its 99th percentile of non-zero voxels; ``data[label_key]`` (1, image_size, image_size, D) when a label was
    given; ``data["brain"]``, the brain mask on the grid the study was loaded on. Steps:

    1. load each modality channel-first (a 4D file with a trailing singleton axis is 3D); with ``register``
       ("auto": when the study is not on the SRI24 lattice) co-register the modalities and register them to the
       SRI24 atlas, resampling each once onto the atlas grid (``scripts.registration.RegisterToAtlasd``);
       refuse NaN/inf;
    2. with ``histogram_matching``, match each modality's histogram to the ``histogram_landmarks`` file (Nyul);
    3. stack the modalities in ``modalities`` order as channels; keep the brain mask of this grid in ``brain``;
    4. reorient to RAS, so that axial slices are the last axis whatever the file's header;
    5. divide by the percentile of non-zero voxels, per channel;
    6. flag the axial slices that hold a labelled voxel (``data["label_slices"]``, on the label's own resolution),
       then resize the axial slices to image_size x image_size with anti-aliasing; labels nearest-neighbour with
       MONAI's ``nearest-exact`` rule, which samples the same pixel centres as the image's interpolation (the legacy
       ``nearest`` rule shifts the label by half an output pixel).

    Steps 4 and 6 are invertible (``Invertd`` brings maps back onto the loaded grid; a registered study then needs
    ``scripts.outputs.ToNatived`` for the last step back to its native grid). ``extra`` transforms run between
    steps 5 and 6 (e.g. ``scripts.outputs.SavePreprocessedd``).
    """
    keys = [*modalities, label_key]
    both = [image_key, label_key]
    register = as_flag_or_auto(register)
    steps: list[Transform] = [
        RegisterToAtlasd(keys=list(modalities), reference=reference, register=register, label_key=label_key),
        CheckFinited(keys=keys, allow_missing_keys=True),
    ]
    if as_bool(histogram_matching):
        if not histogram_landmarks:
            raise ValueError("histogram_matching is on but no histogram_landmarks file is given")
        steps.append(HistogramMatchd(keys=list(modalities), landmarks=histogram_landmarks))
    steps += [
        ConcatItemsd(keys=list(modalities), name=image_key),
        DeleteItemsd(keys=[*modalities, "mask"]),
        BrainMaskd(keys=image_key, mask_key="brain"),
        Orientationd(keys=both, axcodes="RAS", allow_missing_keys=True),
        ScaleByPercentiled(keys=image_key, percentile=percentile),
        *extra,
        LabelledSlicesd(keys=label_key),
        Resized(
            keys=both,
            spatial_size=(image_size, image_size, -1),
            mode=("bilinear", label_mode),
            anti_aliasing=(True, False),
            allow_missing_keys=True,
        ),
        EnsureTyped(keys=both, dtype=torch.float32, allow_missing_keys=True),
    ]
    return steps
