"""Healthy training slices: every study preprocessed once, its healthy brain slices cached as a memory-mapped array.

A study goes through the bundle's volume preprocessing (``configs/inference.yaml``: load, check, RAS, 99th-percentile
scaling, axial slices resized to 128x128). Its axial slices are kept when the brain is not empty (at least
``min_brain_fraction`` of the slice, and at least one voxel) and no voxel carries a label. The kept slices,
(K, C, 128, 128) float32, are saved once per study as ``.npy`` in ``cache_dir`` and read memory-mapped, so an epoch
never decodes NIfTI. The cache file's name hashes the study's files (path, size, mtime), the configured
preprocessing itself (``scripts.fingerprint``: every setting of every step, the contents of a landmarks file
included) and ``min_brain_fraction``, so a changed input or setting makes a new file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from scripts import MODALITIES
from scripts.errors import StudyError
from scripts.files import atomic_path, remove_partials
from scripts.fingerprint import fingerprint
from scripts.modalities import channel_of
from scripts.progress import progress
from scripts.selection import check_study
from scripts.slices import healthy_slice_indices
from scripts.studies import FILE_KEYS, list_studies
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)


def split_studies(
    dataset_dir: str | os.PathLike,
    split: str = "training",
    validation_fraction: float = 0.1,
    modalities: Sequence[str] = MODALITIES,
) -> list[dict[str, str]]:
    """Studies of one split, with the configured ``modalities``. A datalist JSON gives its ``split`` list directly; a
    folder (of study folders, or a BIDS dataset) is split deterministically (sorted names): the last
    ``validation_fraction`` (at least one study) is ``validation``. Training writes nothing per study, so two
    studies may share a name.
    """
    path = Path(dataset_dir)
    if path.is_file():
        return list_studies(path, datalist_key=split, modalities=modalities, unique_names=False)
    studies = list_studies(path, modalities=modalities, unique_names=False)
    n_val = max(1, round(len(studies) * validation_fraction)) if len(studies) > 1 else 0
    return studies[len(studies) - n_val :] if split == "validation" else studies[: len(studies) - n_val]


CACHE_VERSION = 2
"""Bumped when the way slices are chosen or stored changes (2: labelled slices decided at the label's resolution)."""


def _files_key(study: dict[str, str]) -> list[list[object]]:
    items = []
    for key in sorted(k for k in study if k in FILE_KEYS):
        stat = os.stat(study[key])
        items.append([key, os.path.abspath(study[key]), stat.st_size, stat.st_mtime_ns])
    return items


def cache_study_slices(
    study: dict[str, str],
    transform: Callable[[dict], dict],
    cache_dir: str | os.PathLike,
    settings_key: str = "",
    min_brain_fraction: float = 0.0,
    image_key: str = "image",
    labelled_key: str = "label_slices",
    channel: int | None = None,
) -> Path:
    """Preprocess ``study`` and save its healthy slices (K, C, H, W) float32 to ``cache_dir``; returns the file.

    ``settings_key`` names everything but the files that shapes the slices (:class:`HealthySliceDataset` makes it
    from the transform and ``min_brain_fraction``). An existing file for the same inputs and key is reused. Writes
    are atomic. ``channel``: the channel whose non-empty slices are brain slices (None: any channel).
    """
    cache_dir = Path(cache_dir)
    key = hashlib.sha1(
        json.dumps(
            [_files_key(study), settings_key, min_brain_fraction, *([channel] if channel is not None else [])]
        ).encode()
    ).hexdigest()[:16]
    target = cache_dir / f"{study.get('name', 'study')}_{key}.npy"
    if target.exists():
        return target
    check_study(study)
    data = transform(dict(study))
    image = torch.as_tensor(data[image_key])
    keep = healthy_slice_indices(image, data.get(labelled_key), min_brain_fraction, channel)
    slices = image[..., keep].permute(3, 0, 1, 2).contiguous().numpy().astype(np.float32)
    with atomic_path(target) as tmp:
        np.save(tmp, slices)
    logger.info("cached %d healthy slices of %s", len(keep), study.get("name", study.get("t1")))
    return target


class HealthySliceDataset(Dataset):
    """Healthy axial slices of many studies, each item ``{"image": (C, H, W) float32 tensor}``.

    Args:
        studies: study dicts (paths per modality, optional ``label``), e.g. from :func:`split_studies`.
        transform: the volume preprocessing, producing ``data["image"]`` (C, H, W, D).
        cache_dir: where the per-study slice arrays are kept; each file's key covers the study's files, every
            setting of ``transform`` (``scripts.fingerprint.fingerprint``) and ``min_brain_fraction``.
        min_brain_fraction: keep slices whose brain covers at least this fraction of the slice.
        modalities, brain_modality: the configured modalities and the one whose non-empty slices are brain slices
            (``healthy_slice_modality``; None: any modality non-empty). One not configured stops with one line.
    """

    def __init__(
        self,
        studies: Sequence[dict[str, str]],
        transform: Callable[[dict], dict],
        cache_dir: str | os.PathLike,
        min_brain_fraction: float = 0.0,
        modalities: Sequence[str] = MODALITIES,
        brain_modality: str | None = None,
    ) -> None:
        named = brain_modality not in (None, "", "null", "any")
        channel = channel_of(modalities, str(brain_modality), "healthy_slice_modality") if named else None
        if not studies:
            raise StudyError("no studies given to build the healthy-slice dataset")
        # Under DDP, rank 0 builds the cache while the others wait; they then find every file in place.
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed and dist.get_rank() > 0:
            dist.barrier()
        if not distributed or dist.get_rank() == 0:
            remove_partials(cache_dir)  # what a killed run was writing
        settings_key = fingerprint(CACHE_VERSION, transform)
        self.files = [
            cache_study_slices(s, transform, cache_dir, settings_key, min_brain_fraction, channel=channel)
            for s in progress(studies, desc="healthy slices", unit="study")
        ]
        if distributed and dist.get_rank() == 0:
            dist.barrier()
        self.arrays = [np.load(f, mmap_mode="r") for f in self.files]
        counts = np.array([len(a) for a in self.arrays])
        if counts.sum() == 0:
            raise StudyError(f"no healthy brain slice in {len(studies)} studies (all empty or labelled)")
        self.offsets = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        study = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return {"image": torch.from_numpy(np.array(self.arrays[study][index - self.offsets[study]]))}
