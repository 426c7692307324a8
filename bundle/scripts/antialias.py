"""The 240 -> 128 slice resize and its anti-aliasing, done a slab of slices at a time.

Two anti-aliasings (``resize_antialias`` in the configs):

* ``torch`` (the default, the authors'): :class:`SliceResized`, a bilinear resize of each axial slice with
  ``torch.nn.functional.interpolate(..., mode="bilinear", antialias=True)``, which is what torchvision's
  ``Resize(128, antialias=True)`` in the authors' ``MRIDataVolume`` computes (a triangle filter widened by the scale
  factor). It stays MONAI's invertible ``Resize`` (the same trace), so ``Invertd`` brings maps back as before.
* ``gaussian`` (the bundle's earlier resize, which the shipped demo weights were trained with): MONAI's own
  ``Resize(anti_aliasing=True)``, a Gaussian smoothing (skimage's rule) followed by a bilinear resize, with
  :class:`AntiAlias` doing the smoothing in pieces:

MONAI's ``Resize`` smooths the whole channel-first volume at once with a Gaussian of sigma = max(0, (in / out - 1)
/ 2) per axis (skimage's rule) before it interpolates. On a BraTS-sized study (4 x 240 x 240 x 155) its convolutions
hold about 1.4 GB at the peak, more than the network's scoring. Channels are smoothed independently, and an axis
that keeps its size (the axial one: slices are resized in-plane only) is not smoothed, so :class:`AntiAlias` smooths
one slab of slices at a time (or, when every axis shrinks, one channel at a time) and gives the same result, in less
time too (on 4 x 240 x 240 x 155 here: 0.6 s against 0.7 s at 8 slices a slab); ``Resized`` then runs with
``anti_aliasing=False``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import GaussianSmooth, MapTransform, Resize, Resized, Transform
from monai.transforms.inverse import TraceableTransform
from monai.transforms.utils import scale_affine
from monai.utils import TraceKeys, fall_back_tuple

ANTIALIAS_MODES = ("torch", "gaussian", "none")
"""``torch``: :class:`SliceResized`'s (the authors'); ``gaussian``: :class:`AntiAlias` then a bilinear resize (the
bundle's earlier one); ``none``: a plain bilinear resize."""


class AntiAlias(Transform):
    """Smooth a channel-first image (C, *spatial) as ``Resize(spatial_size, anti_aliasing=True)`` would before it
    interpolates: ``slab`` slices at a time when the last axis keeps its size, else one channel at a time.

    Args:
        spatial_size: the size the image will be resized to (-1 keeps an axis, as for ``Resize``).
        slab: slices along the last axis smoothed together when that axis is not smoothed.
    """

    not_settings = ("slab",)  # memory: the same smoothing

    def __init__(self, spatial_size: Sequence[int] | int, slab: int = 8) -> None:
        self.spatial_size = spatial_size
        self.slab = int(slab)

    def sigma(self, in_size: Sequence[int]) -> list[float]:
        """The Gaussian's sigma per spatial axis (0: not smoothed); all 0 when no axis shrinks."""
        out_size = fall_back_tuple(self.spatial_size, tuple(in_size))
        if not any(o < i for o, i in zip(out_size, in_size, strict=True)):
            return [0.0] * len(in_size)
        return [max(0.0, (i / o - 1.0) / 2.0) for i, o in zip(in_size, out_size, strict=True)]

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        sigma = self.sigma(img.shape[1:])
        if not any(sigma):
            return img
        smooth = GaussianSmooth(sigma=sigma)
        out = img.clone()
        if sigma[-1] == 0:  # the last axis is not smoothed: slabs of slices, all channels together (also faster)
            for start in range(0, img.shape[-1], self.slab):
                out[..., start : start + self.slab] = torch.as_tensor(smooth(img[..., start : start + self.slab]))
        else:  # every axis smoothed: one channel at a time
            for c in range(img.shape[0]):
                out[c : c + 1] = torch.as_tensor(smooth(img[c : c + 1]))
        return out


def check_antialias(antialias: str) -> str:
    """``antialias`` if it is one of :data:`ANTIALIAS_MODES`, else a ValueError."""
    if antialias not in ANTIALIAS_MODES:
        raise ValueError(f"resize_antialias must be one of {ANTIALIAS_MODES}, got {antialias!r}")
    return antialias


class AntiAliasd(MapTransform):
    """Dictionary version of :class:`AntiAlias`, for ``antialias`` ``"gaussian"``; the data pass through unchanged
    under ``"torch"`` (the resize's own, :class:`SliceResized`) and ``"none"``."""

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int] | int,
        slab: int = 8,
        antialias: str = "gaussian",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = AntiAlias(spatial_size, slab)
        self.enabled = check_antialias(antialias) == "gaussian"

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if not self.enabled:
            return d
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


class SliceResize(Resize):
    """MONAI's ``Resize`` whose bilinear in-plane resize of a channel-first volume (C, H, W, D) -> (C, h, w, D) is
    torch's anti-aliased one, ``F.interpolate(slices, (h, w), mode="bilinear", antialias=True, align_corners=False)``
    on ``slab`` axial slices (N, C, H, W) at a time, in float32 (the authors' torchvision ``Resize(antialias=True)``).

    The output carries the trace ``Resize`` itself records (same mode, sizes and affine), so ``inverse`` /
    ``Invertd`` are MONAI's (a plain bilinear resize back). Every other call (another mode, e.g. the labels'
    ``nearest-exact``; a last axis that changes size; nothing shrinking; lazy) is ``Resize``'s own.

    Args:
        spatial_size: the output size, -1 keeps an axis (as ``Resize``).
        antialias: use torch's anti-aliasing for bilinear shrinking (False: ``Resize`` as configured).
        slab: axial slices resized per call (memory: about ``slab`` input slices at a time).
    """

    not_settings = ("slab",)  # memory: the same slices

    def __init__(self, spatial_size: Sequence[int] | int, antialias: bool = True, slab: int = 8, **kwargs) -> None:
        super().__init__(spatial_size, **kwargs)
        self.antialias = bool(antialias)
        self.slab = int(slab)

    def __call__(self, img: torch.Tensor, mode: str | None = None, align_corners: bool | None = None, **kwargs):
        mode_ = self.mode if mode is None else mode
        lazy = self.lazy if kwargs.get("lazy") is None else kwargs["lazy"]
        in_size = tuple(img.shape[1:])
        out_size = tuple(int(s) for s in fall_back_tuple(self.spatial_size, in_size)) if img.ndim == 4 else None
        if (
            not self.antialias
            or lazy
            or str(mode_) not in ("bilinear", "InterpolateMode.BILINEAR")
            or out_size is None
            or out_size[-1] != in_size[-1]
            or not any(o < i for o, i in zip(out_size[:2], in_size[:2], strict=True))
        ):
            return super().__call__(img, mode=mode, align_corners=align_corners, **kwargs)
        meta_info = TraceableTransform.track_transform_meta(
            img,
            sp_size=out_size,
            affine=scale_affine(in_size, out_size, align_corners=False),
            extra_info={"mode": "bilinear", "align_corners": TraceKeys.NONE, "dtype": "float32", "new_dim": 0},
            orig_size=in_size,
            transform_info=self.get_transform_info(),
            lazy=False,
        )
        src = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        out = torch.empty((src.shape[0], *out_size), dtype=torch.float32, device=src.device)
        for start in range(0, in_size[-1], self.slab):
            slices = src[..., start : start + self.slab].permute(3, 0, 1, 2).float()  # (N, C, H, W)
            resized = F.interpolate(slices, size=out_size[:2], mode="bilinear", align_corners=False, antialias=True)
            out[..., start : start + self.slab] = resized.permute(1, 2, 3, 0)
        if isinstance(img, MetaTensor):
            out = MetaTensor(out, meta=img.meta, applied_operations=list(img.applied_operations))
            return out.copy_meta_from(meta_info)
        return out


class SliceResized(Resized):
    """``Resized`` (with ``anti_aliasing=False``) whose resizer is :class:`SliceResize`: under ``antialias``
    ``"torch"`` the images are resized bilinearly with torch's anti-aliasing, labels with their own mode; under
    ``"gaussian"`` (smoothed before, by :class:`AntiAliasd`) and ``"none"`` every key is ``Resize``'s plain resize.
    Inverted by ``Invertd`` as MONAI's ``Resized``."""

    def __init__(
        self, keys: KeysCollection, spatial_size: Sequence[int] | int, antialias: str = "torch", slab: int = 8, **kwargs
    ) -> None:
        kwargs.setdefault("mode", "bilinear")  # MONAI's Resized defaults to "area"
        super().__init__(keys, spatial_size, anti_aliasing=False, **kwargs)
        torch_aa = check_antialias(antialias) == "torch"
        self.resizer = SliceResize(spatial_size, antialias=torch_aa, slab=slab, lazy=self.resizer.lazy)
