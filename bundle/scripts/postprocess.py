"""From per-channel maps to an anomaly map and a segmentation (paper Sec. 4.5, Algorithm 1 lines 13-14).

    a = max_m a_m                      (mean as an option)
    a = median3d(a, size)              (size 3 or 5, or off)
    s = dilate(a > yen(a[brain]))      (per-subject Yen threshold, then one 3D dilation)

Array transforms take channel-first volumes (C, H, W, D); the dictionary versions follow MONAI's pattern.
The map is set to 0 outside the brain (voxels where every input channel is 0), where it has no meaning: on the
scoring grid before thresholding, and again on the study's own grid after the map is brought back to it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, MedianSmooth, Transform
from scipy import ndimage
from skimage.filters import threshold_yen
from skimage.morphology import ball

from scripts.preprocess import brain_mask

CHANNEL_REDUCTIONS = ("max", "mean")


class ReduceChannels(Transform):
    """Reduce a per-channel map (C, H, W, D) to one channel (1, H, W, D) by ``"max"`` (paper) or ``"mean"``."""

    def __init__(self, mode: str = "max") -> None:
        if mode not in CHANNEL_REDUCTIONS:
            raise ValueError(f"channel reduction must be one of {CHANNEL_REDUCTIONS}, got {mode!r}")
        self.mode = mode

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return img.amax(dim=0, keepdim=True) if self.mode == "max" else img.mean(dim=0, keepdim=True)


class MedianFilter(Transform):
    """3D median filter of cubic ``size`` (3 or 5) on a (C, H, W, D) map; ``size`` 0, 1 or None leaves it as is."""

    def __init__(self, size: int | None = 5) -> None:
        if size not in (None, 0, 1) and (int(size) < 1 or int(size) % 2 == 0):
            raise ValueError(f"median filter size must be odd (3, 5, ...) or 0/None for off, got {size}")
        self.size = int(size or 0)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.size <= 1:
            return img
        return MedianSmooth(radius=self.size // 2)(img)


def yen_threshold(a: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Yen's threshold of the map values ``a`` inside ``mask`` (all voxels when None)."""
    values = np.asarray(a)[mask] if mask is not None else np.asarray(a).ravel()
    if values.size == 0 or np.ptp(values) == 0:
        return float(values.max()) if values.size else 0.0
    return float(threshold_yen(values))


def yen_segmentation(
    a: np.ndarray, mask: np.ndarray | None = None, dilation_radius: int = 1, threshold: float | None = None
) -> tuple[np.ndarray, float]:
    """Binary segmentation of map ``a`` (H, W, D): Yen threshold inside ``mask``, then a 3D dilation.

    Args:
        a: the (post-processed) anomaly map.
        mask: brain mask (bool, same shape); the threshold is computed on these voxels and the result is kept
            inside it. None uses every voxel.
        dilation_radius: radius of the ball used for the dilation (1: the 6-neighbourhood); 0 for none.
        threshold: a fixed threshold to use instead of Yen's (e.g. one tuned on labelled data: semi-supervised).

    Returns:
        (segmentation as uint8 (H, W, D), the threshold).
    """
    a = np.asarray(a, dtype=np.float32)
    thr = yen_threshold(a, mask) if threshold is None else float(threshold)
    seg = a > thr
    if mask is not None:
        seg &= mask
    if dilation_radius > 0 and seg.any():
        seg = ndimage.binary_dilation(seg, structure=ball(dilation_radius))
        if mask is not None:
            seg &= mask
    return seg.astype(np.uint8), thr


class ReduceChannelsd(MapTransform):
    """Dictionary version of :class:`ReduceChannels`."""

    def __init__(self, keys: KeysCollection, mode: str = "max", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = ReduceChannels(mode)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


class MedianFilterd(MapTransform):
    """Dictionary version of :class:`MedianFilter`."""

    def __init__(self, keys: KeysCollection, size: int | None = 5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = MedianFilter(size)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


class MaskOutsideBraind(MapTransform):
    """Set ``data[key]`` to 0 outside the brain: where every channel of ``data[mask_key]`` is 0.

    ``data[mask_key]`` is a brain mask or an image (C, H, W, D) on the same grid as ``data[key]``.
    """

    def __init__(self, keys: KeysCollection, mask_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        mask = brain_mask(d[self.mask_key])
        for key in self.key_iterator(d):
            d[key] = d[key] * mask.to(d[key].device)
        return d


class YenSegmentd(MapTransform):
    """Threshold ``data[key]`` (1, H, W, D) per subject with Yen (or a fixed ``threshold``) plus dilation; writes
    ``data[seg_key]``.

    The threshold is also stored as ``data[seg_key + "_threshold"]``. The segmentation is a MetaTensor carrying
    the map's metadata, so that it can be inverted onto the input grid like the map.
    """

    def __init__(
        self,
        keys: KeysCollection,
        seg_key: str = "seg",
        image_key: str = "image",
        dilation_radius: int = 1,
        threshold: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.seg_key = seg_key
        self.image_key = image_key
        self.dilation_radius = dilation_radius
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            a = d[key]
            mask = brain_mask(d[self.image_key])[0].cpu().numpy() if self.image_key in d else None
            seg, thr = yen_segmentation(a[0].detach().cpu().numpy(), mask, self.dilation_radius, self.threshold)
            d[self.seg_key] = _like(a, seg[None])
            d[f"{self.seg_key}_threshold"] = thr
        return d


def _like(ref: torch.Tensor, array: np.ndarray) -> torch.Tensor:
    """``array`` as a float tensor on ``ref``'s device, carrying ``ref``'s metadata when it is a MetaTensor."""
    values = torch.as_tensor(array, dtype=torch.float32, device=ref.device)
    if isinstance(ref, MetaTensor):
        return MetaTensor(values, meta=dict(ref.meta), applied_operations=list(ref.applied_operations))
    return values
