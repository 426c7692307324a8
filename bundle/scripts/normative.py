"""A normative model of healthy maps on the atlas lattice, and the z-map it gives (beyond the paper).

Studies registered to one atlas (SRI24 by default) share anatomy voxel for voxel, and so do their maps on the
128 x 128 x D scoring grid. From the post-processed maps ``a`` of healthy studies (after the channel reduction and
the median filter, as inference makes them) the model keeps, per voxel v, a location and a scale of ``l = log a``:

    S_0(v) = sum_i m_i(v),  S_1(v) = sum_i m_i(v) l_i(v),  S_2(v) = sum_i m_i(v) l_i(v)^2      (m_i: healthy brain)
    mu(v)    = G * S_1 / G * S_0
    sigma(v) = sqrt(G * S_2 / G * S_0 - mu(v)^2),  at least ``min_scale`` x the pooled sigma of all brain voxels

with ``G`` a 3D Gaussian of ``sigma_voxels`` (normalised convolution: each voxel pools its neighbours over every
study, so a few dozen studies give a stable estimate; the pooled variance also holds the spread of the mean within
the window, which keeps the scale up along sharp edges such as the ventricles). Voxels that no study's brain covers
get the pooled location and scale. A study's z-map is

    z(v) = (log a(v) - mu(v)) / sigma(v)      inside its brain, 0 outside.

The model is stored compactly (:meth:`NormativeModel.to_bytes`: float16 arrays in a compressed ``.npz``, a few MB
for 128 x 128 x 155) beside the weights, and checked through the calibration file (``scripts.calibration``).
"""

from __future__ import annotations

import io
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scipy import ndimage
from scripts.errors import StudyError
from scripts.intensity import brain_mask
from scripts.postprocess import like_map
from scripts.studies import study_name

MAPS: tuple[str, ...] = ("anomaly", "zmap")
"""The maps a calibration thresholds and inference segments (``segment_map``): the anomaly map, its z-map."""
LOG_FLOOR = 1e-12
"""Maps are floored here before the log (a map is 0 only where nothing was scored)."""


def log_map(a: np.ndarray) -> np.ndarray:
    """``log(max(a, LOG_FLOOR))`` in float32, any shape."""
    return np.log(np.maximum(np.asarray(a, dtype=np.float32), LOG_FLOOR))


@dataclass
class NormativeSums:
    """The running sums S_0, S_1, S_2 of the module docstring, each (H, W, D) float64; add studies one at a time."""

    s0: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    n_studies: int = 0

    @classmethod
    def zeros(cls, shape: Iterable[int]) -> NormativeSums:
        shape = tuple(int(s) for s in shape)
        return cls(np.zeros(shape), np.zeros(shape), np.zeros(shape))

    @classmethod
    def of(cls, a: np.ndarray, healthy: np.ndarray) -> NormativeSums:
        """The sums of one study: its map ``a`` and its healthy brain voxels ``healthy`` (bool), both (H, W, D)."""
        m = np.asarray(healthy, dtype=np.float64)
        ell = log_map(a).astype(np.float64)
        return cls(m, m * ell, m * ell * ell, 1)

    def __add__(self, other: NormativeSums) -> NormativeSums:
        self._same_grid(other)
        n = self.n_studies + other.n_studies
        return NormativeSums(self.s0 + other.s0, self.s1 + other.s1, self.s2 + other.s2, n)

    def __sub__(self, other: NormativeSums) -> NormativeSums:
        self._same_grid(other)
        n = self.n_studies - other.n_studies
        return NormativeSums(self.s0 - other.s0, self.s1 - other.s1, self.s2 - other.s2, n)

    def _same_grid(self, other: NormativeSums) -> None:
        if self.s0.shape != other.s0.shape:
            raise StudyError(
                f"maps on different grids, {self.s0.shape} and {other.s0.shape}: a normative model needs every study "
                "on one atlas lattice (register: auto, one atlas)"
            )


@dataclass
class NormativeModel:
    """Per-voxel location ``mu`` and scale ``sigma`` of the log map, each (H, W, D) float32 (module docstring)."""

    location: np.ndarray
    scale: np.ndarray
    sigma_voxels: float
    n_studies: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.location.shape)

    def zmap(self, a: np.ndarray, brain: np.ndarray) -> np.ndarray:
        """z = (log a - mu) / sigma inside ``brain`` (bool), 0 outside; ``a`` and ``brain`` (H, W, D) on the model's
        grid. Returns float32 (H, W, D)."""
        if tuple(a.shape) != self.shape:
            raise StudyError(
                f"the map's grid {tuple(a.shape)} differs from the normative model's {self.shape}: the model holds for "
                "studies on the atlas lattice it was made on"
            )
        z = (log_map(a) - self.location) / self.scale
        return np.where(np.asarray(brain, dtype=bool), z, 0.0).astype(np.float32)

    def to_bytes(self) -> bytes:
        """A compressed ``.npz``: location and scale in float16 (log values: 3 significant digits are plenty)."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            location=self.location.astype(np.float16),
            scale=self.scale.astype(np.float16),
            sigma_voxels=np.float64(self.sigma_voxels),
            n_studies=np.int64(self.n_studies),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, content: bytes) -> NormativeModel:
        with np.load(io.BytesIO(content)) as z:
            return cls(
                location=z["location"].astype(np.float32),
                scale=z["scale"].astype(np.float32),
                sigma_voxels=float(z["sigma_voxels"]),
                n_studies=int(z["n_studies"]),
            )


def fit_normative(sums: NormativeSums, sigma_voxels: float = 2.0, min_scale: float = 0.25) -> NormativeModel:
    """The normative model of the summed healthy studies ``sums`` (see the module docstring).

    Args:
        sums: :class:`NormativeSums` of one or more healthy studies.
        sigma_voxels: the smoothing Gaussian's standard deviation, in voxels of the scoring grid.
        min_scale: the scale's floor, as a fraction of the pooled standard deviation of all healthy brain voxels.
    """
    if sums.n_studies < 1 or not sums.s0.any():
        raise StudyError("no healthy brain voxels to make a normative model from")
    total = sums.s0.sum()
    pooled_mu = sums.s1.sum() / total
    pooled_sd = float(np.sqrt(max(sums.s2.sum() / total - pooled_mu**2, 1e-12)))

    def smooth(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, sigma=sigma_voxels, mode="constant") if sigma_voxels > 0 else x

    weight = smooth(sums.s0)
    covered = weight > 1e-3  # at least about a thousandth of a study's voxel nearby
    safe = np.where(covered, weight, 1.0)
    mu = np.where(covered, smooth(sums.s1) / safe, pooled_mu)
    var = np.where(covered, smooth(sums.s2) / safe - mu**2, pooled_sd**2)
    sd = np.maximum(np.sqrt(np.clip(var, 0.0, None)), min_scale * pooled_sd)
    return NormativeModel(mu.astype(np.float32), sd.astype(np.float32), float(sigma_voxels), int(sums.n_studies))


class NormativeZMapd(MapTransform):
    """Add ``data[zmap_key]`` (1, H, W, D), the z-map of the map ``data[key]`` (1, H, W, D) under ``model``, 0 outside
    the brain of ``data[image_key]``; a MetaTensor with the map's metadata (it is inverted like the map). With no
    model (None) the data pass through and no z-map is made."""

    def __init__(
        self,
        keys: KeysCollection,
        model: NormativeModel | None,
        zmap_key: str = "zmap",
        image_key: str = "image",
        name_key: str = "name",
    ) -> None:
        super().__init__(keys)
        self.model, self.zmap_key, self.image_key, self.name_key = model, zmap_key, image_key, name_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.model is None:
            return d
        for key in self.key_iterator(d):
            a = d[key]
            brain = brain_mask(d[self.image_key])[0].cpu().numpy()
            try:
                z = self.model.zmap(a[0].detach().cpu().numpy(), brain)
            except StudyError as err:
                raise StudyError(f"study {study_name(d, self.name_key)}: {err}") from err
            d[self.zmap_key] = like_map(a, z[None])
        return d
