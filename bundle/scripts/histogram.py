"""Nyúl-style histogram standardisation (paper Sec. 5.2: "pairwise histogram matching" of the Shifts studies to a
BraTS subject): per modality, a piecewise-linear intensity map that sends a volume's brain percentiles (the
landmarks) onto a standard scale.

* :func:`standard_landmarks`: the standard scale of a set of volumes; :func:`match_histogram`: one volume onto it;
* :func:`save_landmarks` / :func:`load_landmarks`: the JSON file the bundle ships (``models/histogram_landmarks.json``);
* :class:`HistogramMatchd`: the preprocessing step (``pre#match`` in ``configs/inference.yaml``);
* :func:`build_histogram_landmarks`: the landmarks file from a dataset (``python -m scripts.cli
  build-histogram-landmarks``).

Pure numpy on the voxel values: no geometry, no registration.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scripts import MODALITIES, as_bool
from scripts.errors import StudyError
from scripts.files import atomic_write_bytes
from scripts.progress import progress
from scripts.studies import list_studies

DEFAULT_PERCENTILES: tuple[float, ...] = (1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)

PathLike = str | os.PathLike


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


def standard_landmarks(
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
        raise ValueError("standard_landmarks needs at least one volume")
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
    return atomic_write_bytes((json.dumps(content, indent=4) + "\n").encode(), path)


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


class HistogramMatchd(MapTransform):
    """Nyul-style histogram matching of each modality (``keys``) to reference landmarks, inside the brain.

    ``landmarks`` is a JSON file written by ``python -m scripts.cli build-histogram-landmarks`` (one landmark
    vector per modality key, see :func:`save_landmarks`). Voxels that are 0 stay 0. With ``enabled`` false the data
    pass through and no file is read.
    """

    def __init__(
        self,
        keys: KeysCollection,
        landmarks: str | os.PathLike | None = None,
        enabled: bool | str = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.enabled = as_bool(enabled)
        self.landmarks: dict[str, np.ndarray] = {}
        if not self.enabled:
            return
        if not landmarks:
            raise ValueError("histogram matching is on but no landmarks file is given")
        self.landmarks = load_landmarks(landmarks)
        missing = [k for k in self.keys if k not in self.landmarks]
        if missing:
            raise StudyError(
                f"{landmarks}: no landmarks for modality {', '.join(map(str, missing))}; build them from your "
                "training data (python -m scripts.cli build-histogram-landmarks DATASET OUT --modalities ...)"
            )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if not self.enabled:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            matched = match_histogram(np.asarray(img.detach().cpu().numpy()), None, self.landmarks[str(key)])
            d[key] = img.new_tensor(matched) if isinstance(img, torch.Tensor) else matched
        return d


def build_histogram_landmarks(
    dataset_dir: str | os.PathLike,
    output: str | os.PathLike,
    datalist_key: str = "training",
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    max_studies: int = 50,
    modalities: Sequence[str] = MODALITIES,
) -> Path:
    """Build Nyul landmarks per modality from (at most ``max_studies``) studies already on one grid each, e.g. a
    prepared dataset, and save them to ``output`` (JSON). Voxels that are 0 (outside the brain) are ignored."""
    from scripts.loading import LoadStudyd

    path = Path(dataset_dir)
    modalities = list(modalities)
    studies = list_studies(path, datalist_key, modalities, unique_names=False)
    loader = LoadStudyd(keys=modalities)
    volumes: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    for study in progress(studies[:max_studies], desc="reading for landmarks", unit="study"):
        data = loader({m: study[m] for m in modalities})
        for m in modalities:
            volumes[m].append(torch.as_tensor(data[m])[0].numpy())
    landmarks = {m: standard_landmarks(volumes[m], None, percentiles) for m in modalities}
    return save_landmarks(output, landmarks, percentiles)
