"""Intensity steps of the preprocessing (paper Sec. 5.2) and the brain mask, as MONAI array/dictionary transforms.

* :func:`brain_mask` / :class:`BrainMaskd`: the brain is where any channel is non-zero (the inputs are
  skull-stripped, the background 0);
* :class:`ScaleByPercentile` / :class:`ScaleByPercentiled`: divide every channel by the given percentile (paper: the
  99th) of its non-zero voxels.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scripts import as_bool


def brain_mask(image: torch.Tensor, threshold: float = 0.0, channel_dim: int = 0) -> torch.Tensor:
    """Voxels where any channel of ``image`` exceeds ``threshold`` in magnitude, the channel axis kept with size 1:
    a volume (C, H, W, D) gives bool (1, H, W, D); slices (K, C, H, W) with ``channel_dim=1`` give (K, 1, H, W).

    A bool ``image`` is taken as a mask already.
    """
    image = torch.as_tensor(image)
    if image.dtype == torch.bool:
        return image.any(dim=channel_dim, keepdim=True)
    # |x| > threshold, one channel at a time: bool temporaries of one channel, no float copy of the image
    inside = torch.zeros_like(image.narrow(channel_dim, 0, 1), dtype=torch.bool)
    for c in range(image.shape[channel_dim]):
        channel = image.narrow(channel_dim, c, 1)
        inside |= (channel > threshold) | (channel < -threshold)
    return inside


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


def nonzero_values(x: torch.Tensor, rows: int = 16) -> torch.Tensor:
    """The non-zero values of ``x`` (H, ...) in order, as ``x[x != 0]`` gives them, gathered ``rows`` rows of the
    first axis at a time into one buffer: ``x[x != 0]`` builds an int64 index per non-zero voxel and each dimension
    (24 bytes a voxel in 3D), several times the values' own size."""
    x = x.reshape(1) if x.ndim == 0 else x
    out = torch.empty(int(torch.count_nonzero(x)), dtype=x.dtype, device=x.device)
    start = 0
    for part in x.split(rows, dim=0):
        inside = part != 0
        n = int(torch.count_nonzero(inside))
        torch.masked_select(part, inside, out=out[start : start + n])
        start += n
    return out


class ScaleByPercentile(Transform):
    """Divide each channel of ``img`` (C, ...) by its ``percentile`` over non-zero voxels (paper: 99th).

    A channel with no non-zero voxel is left as is; so is the zero background.

    Args:
        percentile: the percentile, in (0, 100].
        inplace: divide a float32 ``img`` in place rather than a float32 copy of it: one volume less at the peak
            (136 MB for four BraTS-sized channels). The preprocessing sets it, since the image it scales is its own
            (stacked, then oriented); any other ``img`` gets a copy. The values are the same either way.
    """

    not_settings = ("inplace",)  # memory: the same values

    def __init__(self, percentile: float = 99.0, inplace: bool | str = False) -> None:
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.percentile = float(percentile)
        self.inplace = as_bool(inplace)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if isinstance(img, torch.Tensor):
            in_place = self.inplace and img.dtype == torch.float32
            out = img if in_place else img.to(torch.float32, copy=True)
        else:
            out = torch.as_tensor(np.asarray(img), dtype=torch.float32)
        for c in range(out.shape[0]):
            values = nonzero_values(out[c])  # a copy of the channel's non-zero voxels, ours to reorder
            if values.numel() == 0:
                continue
            scale = float(np.percentile(values.detach().cpu().numpy(), self.percentile, overwrite_input=True))
            del values
            if scale > 0:
                out[c].div_(scale)
        return out


class ScaleByPercentiled(MapTransform):
    """Dictionary version of :class:`ScaleByPercentile`."""

    def __init__(
        self,
        keys: KeysCollection,
        percentile: float = 99.0,
        inplace: bool | str = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = ScaleByPercentile(percentile, inplace)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d
