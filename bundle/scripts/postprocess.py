"""From per-channel maps to an anomaly map and a segmentation (paper Sec. 4.5, Algorithm 1 lines 13-14).

    a = max_m a_m                      (mean, or a weighted fusion, as options)
    a = median3d(a, size)              (size 3 or 5, or off; scipy takes even sizes too)
    s = dilate(a > yen(a[V]))          (per-subject Yen threshold on the voxel set V, then one 3D dilation)

Array transforms take channel-first volumes (C, H, W, D); the dictionary versions follow MONAI's pattern.

The voxel set V (``VOXEL_SETS``) is a choice: ``"volume"``, every voxel of the scoring grid, background included,
as the authors' code thresholds (their map is not masked, and every slice is scored); or ``"brain"``, the brain
voxels (any input channel non-zero), with the map set to 0 outside the brain before the median filter. Either way
the written outputs are 0 outside the brain on the study's own grid.

A segmentation that marks more than ``max_segmented_fraction`` of the brain is not presented as a finding
(:func:`guard_segmentation`): Yen's threshold then fell inside the healthy values, because the map has no separate
tail of anomalous ones (small or no lesions). Such a segmentation is written empty and the log says why.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor
from scipy import ndimage
from scripts import as_bool, as_optional_float
from scripts.errors import StudyError
from scripts.intensity import brain_mask
from scripts.modalities import channel_of
from scripts.studies import study_name
from skimage.filters import threshold_yen
from skimage.morphology import ball

logger = logging.getLogger(__name__)

CHANNEL_REDUCTIONS = ("max", "mean", "weighted", "epdiff")
EPDIFF_WEIGHTS: dict[str, float] = {"max": 0.2, "mean": 0.5, "flair": 0.3}
"""EPDiff's fusion of the per-modality maps: 0.2 max + 0.5 mean + 0.3 FLAIR channel (``channel_reduction: epdiff``)."""
VOXEL_SETS = ("volume", "brain")


class ReduceChannels(Transform):
    """Reduce a per-channel map (C, H, W, D) to one channel (1, H, W, D).

    ``"max"`` (paper), ``"mean"``, or ``"weighted"``: ``sum_k w_k term_k`` over the terms named in ``weights``,
    each ``"max"``, ``"mean"`` or a channel's name from ``channels`` (e.g. ``{"max": 0.5, "flair": 0.5}``);
    ``"epdiff"`` is ``"weighted"`` with :data:`EPDIFF_WEIGHTS`.

    Args:
        mode: one of :data:`CHANNEL_REDUCTIONS`.
        weights: the terms and their weights of ``"weighted"`` (ignored by the other modes).
        channels: the channels' names in order (the configs' ``modalities``), for terms naming a channel.
    """

    def __init__(
        self,
        mode: str = "max",
        weights: Mapping[str, float] | None = None,
        channels: Sequence[str] = ("t1", "t1c", "t2", "flair"),
    ) -> None:
        if mode not in CHANNEL_REDUCTIONS:
            raise ValueError(f"channel reduction must be one of {CHANNEL_REDUCTIONS}, got {mode!r}")
        self.mode = mode
        self.channels = [str(c) for c in channels]
        # the terms of a weighted mode only: the others use none, so they record none (scripts.settings)
        weighted = mode in ("weighted", "epdiff")
        self.weights = dict(EPDIFF_WEIGHTS if mode == "epdiff" else (weights or {})) if weighted else {}
        if weighted:
            if not self.weights:
                raise ValueError("channel_reduction weighted needs channel_weights, e.g. {max: 0.5, flair: 0.5}")
            if mode == "epdiff":  # its FLAIR term: one line when FLAIR is not configured
                channel_of(self.channels, "flair", "channel_reduction epdiff (its 0.3 FLAIR term)")
            unknown = [k for k in self.weights if k not in ("max", "mean", *self.channels)]
            if unknown:
                raise StudyError(f"channel_weights: {unknown} name no term; use max, mean or one of {self.channels}")

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = convert_to_tensor(img, track_meta=get_track_meta())  # a MetaTensor, so that Invertd can invert it
        if self.mode == "max":
            return img.amax(dim=0, keepdim=True)
        if self.mode == "mean":
            return img.mean(dim=0, keepdim=True)
        if img.shape[0] != len(self.channels):
            raise ValueError(f"a weighted fusion of {self.channels} got a map of {img.shape[0]} channels")
        out = 0
        for term, w in self.weights.items():
            if term == "max":
                out = out + float(w) * img.amax(dim=0, keepdim=True)
            elif term == "mean":
                out = out + float(w) * img.mean(dim=0, keepdim=True)
            else:
                k = self.channels.index(term)
                out = out + float(w) * img[k : k + 1]
        return out


class MedianFilter(Transform):
    """3D median filter of cubic ``size`` (3 or 5; an even size such as the authors' later 4 is scipy's: its window
    is offset by half a voxel) on a (C, H, W, D) map; ``size`` 0, 1 or None leaves it as is.

    ``scipy.ndimage.median_filter`` per channel, with the authors' border rule (``mode="reflect"``, scipy's default,
    which their ``median_filter_3D`` uses). It holds one output volume, where MONAI's ``MedianSmooth`` unfolds
    ``size**3`` copies of the volume (about 1.3 GB at 128 x 128 x 155 for size 5), and runs about twice as fast on a
    CPU. A map on a GPU is filtered on the CPU and given back on its device.
    """

    def __init__(self, size: int | None = 5, mode: str = "reflect") -> None:
        if size not in (None, 0, 1) and int(size) < 2:
            raise ValueError(f"median filter size must be 2 or more (3, 5, ...), or 0/None for off, got {size}")
        self.size = int(size or 0)
        self.mode = mode

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.size <= 1:
            return img
        values = torch.as_tensor(img).detach().cpu().numpy().astype(np.float32, copy=False)
        filtered = np.stack([ndimage.median_filter(c, size=self.size, mode=self.mode) for c in values])
        out = torch.as_tensor(filtered, device=torch.as_tensor(img).device)
        if isinstance(img, MetaTensor):
            return MetaTensor(out, meta=dict(img.meta), applied_operations=list(img.applied_operations))
        return convert_to_tensor(out, track_meta=get_track_meta())


def yen_threshold(a: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Yen's threshold of the map values ``a`` inside ``mask`` (all voxels when None)."""
    values = np.asarray(a)[mask] if mask is not None else np.asarray(a).ravel()
    if values.size == 0 or np.ptp(values) == 0:
        return float(values.max()) if values.size else 0.0
    # skimage's criterion meets log(0) at empty end bins and warns; silencing that leaves its threshold as it is
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(threshold_yen(values))


def yen_segmentation(
    a: np.ndarray,
    mask: np.ndarray | None = None,
    dilation_radius: int = 1,
    threshold: float | None = None,
    voxel_set: str = "brain",
) -> tuple[np.ndarray, float]:
    """Binary segmentation of map ``a`` (H, W, D): Yen threshold on a voxel set, then a 3D dilation.

    Args:
        a: the (post-processed) anomaly map.
        mask: brain mask (bool, same shape). With ``voxel_set`` "brain" the threshold is computed on these voxels and
            the segmentation kept inside them; with "volume" (the authors') every voxel counts and nothing is cut.
            None uses every voxel.
        dilation_radius: radius of the ball used for the dilation (1: the 6-neighbourhood); 0 for none.
        threshold: a fixed threshold to use instead of Yen's (e.g. one tuned on labelled data: semi-supervised).
        voxel_set: ``"brain"`` or ``"volume"`` (``VOXEL_SETS``).

    Returns:
        (segmentation as uint8 (H, W, D), the threshold).
    """
    if voxel_set not in VOXEL_SETS:
        raise ValueError(f"voxel_set must be one of {VOXEL_SETS}, got {voxel_set!r}")
    a = np.asarray(a, dtype=np.float32)
    inside = mask if voxel_set == "brain" else None
    thr = yen_threshold(a, inside) if threshold is None else float(threshold)
    seg = a > thr
    if inside is not None:
        seg &= inside
    if dilation_radius > 0 and seg.any():
        seg = ndimage.binary_dilation(seg, structure=ball(dilation_radius))
        if inside is not None:
            seg &= inside
    return seg.astype(np.uint8), thr


def guard_segmentation(
    seg: np.ndarray, brain: np.ndarray, max_fraction: float | None
) -> tuple[np.ndarray, float, bool]:
    """(the segmentation or an empty one, the share of the brain ``seg`` marks, whether it was rejected).

    A segmentation marking more than ``max_fraction`` of the ``brain`` voxels is rejected: it is then no finding but
    a threshold inside the healthy values. None (or a value >= 1) turns the guard off.
    """
    brain = np.asarray(brain, dtype=bool)
    fraction = float(np.count_nonzero(np.asarray(seg, dtype=bool) & brain) / max(1, np.count_nonzero(brain)))
    rejected = max_fraction is not None and fraction > float(max_fraction)
    return (np.zeros_like(seg) if rejected else seg), fraction, bool(rejected)


class ReduceChannelsd(MapTransform):
    """Dictionary version of :class:`ReduceChannels`.

    Args:
        release: once a map is reduced, free the memory of the per-channel map it came from (its storage is emptied,
            so every tensor that shares it becomes empty), unless the reduced map or another item of the dictionary
            shares it (an inferer whose map is a view of the image). In a MONAI engine the
            inferer's output stays referenced (``engine.state.output``) until the whole post-processing has run,
            so without this the per-channel maps (C x 10 MB for a BraTS-sized study on the 128 x 128 grid) are held
            beside every later step's work. Only for a pipeline where nothing reads the per-channel map after this
            step (inference's, evaluation's and calibration's post-processing).
        Other arguments: as :class:`ReduceChannels`.
    """

    not_settings = ("release",)  # memory: the same map

    def __init__(
        self,
        keys: KeysCollection,
        mode: str = "max",
        weights: Mapping[str, float] | None = None,
        channels: Sequence[str] = ("t1", "t1c", "t2", "flair"),
        allow_missing_keys: bool = False,
        release: bool | str = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = ReduceChannels(mode, weights, channels)
        self.release = as_bool(release)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            reduced = self.op(d[key])
            if self.release and isinstance(d[key], torch.Tensor):
                storage = d[key].untyped_storage()
                others = [v for k, v in d.items() if k != key and isinstance(v, torch.Tensor)] + [reduced]
                if all(v.untyped_storage().data_ptr() != storage.data_ptr() for v in others):
                    storage.resize_(0)
            d[key] = reduced
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

    ``data[mask_key]`` is a brain mask or an image (C, H, W, D) on the same grid as ``data[key]``. With ``enabled``
    false the data pass through (the authors' unmasked maps, ``voxel_set: volume``). With ``inplace`` a floating-point
    map of the mask's shape is multiplied in place (the same values, one map less at the peak: ``post#mask_native``,
    where the maps are ``post#invert``'s own, three of 34 MB for a BraTS-sized study); otherwise a masked copy.
    """

    not_settings = ("inplace",)  # memory: the same map

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "image",
        enabled: bool | str = True,
        inplace: bool | str = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.enabled = as_bool(enabled)
        self.inplace = as_bool(inplace)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if not self.enabled:
            return d
        mask = brain_mask(d[self.mask_key])
        for key in self.key_iterator(d):
            a, m = d[key], mask.to(d[key].device)
            if self.inplace and a.is_floating_point() and a.shape == m.shape:
                d[key] = a.mul_(m)
            else:
                d[key] = a * m
        return d


def map_label(name: str) -> str:
    """How ``segmentation.json`` and the reports name a thresholded map: ``"z-map"`` for ``"zmap"``, else (the map
    key ``"pred"`` or ``segment_map`` ``"anomaly"``) ``"anomaly map"``."""
    return "z-map" if name == "zmap" else "anomaly map"


class ThresholdSegmentd(MapTransform):
    """Threshold ``data[key]`` (1, H, W, D) per subject with Yen, or a given ``threshold`` (calibrated, tuned or
    fixed), plus dilation; writes
    ``data[seg_key]``.

    Also stores ``data[seg_key + "_info"]``: the threshold, the voxel set, the share of the brain marked and whether
    the guard rejected the segmentation (:func:`guard_segmentation`; a rejected one is stored empty and logged). The
    segmentation is a MetaTensor carrying the map's metadata, so that it can be inverted onto the input grid like the
    map.

    Args:
        keys: the map.
        seg_key: where the segmentation goes.
        image_key: the image whose non-zero voxels are the brain.
        dilation_radius: radius of the 3D dilation after the threshold.
        threshold: a fixed threshold instead of Yen's (None: Yen).
        voxel_set: ``"volume"`` or ``"brain"`` (see the module docstring).
        max_segmented_fraction: the guard's limit on the share of the brain marked (None: no guard).
        name_key: the study's name, for the log.
        rule: how the threshold was chosen, for the record (default: "yen", or "fixed" with ``threshold``; e.g.
            "calibrated at FPR 0.001").
        log_rejected: log a segmentation that the guard rejects (inference, which writes it empty); false where the
            rejections are counted instead (the evaluation's metrics, :func:`scripts.metrics.post_transforms`).
    """

    def __init__(
        self,
        keys: KeysCollection,
        seg_key: str = "seg",
        image_key: str = "image",
        dilation_radius: int = 1,
        threshold: float | None = None,
        voxel_set: str = "brain",
        max_segmented_fraction: float | None = None,
        name_key: str = "name",
        rule: str | None = None,
        log_rejected: bool | str = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if voxel_set not in VOXEL_SETS:
            raise ValueError(f"voxel_set must be one of {VOXEL_SETS}, got {voxel_set!r}")
        self.seg_key = seg_key
        self.image_key = image_key
        self.dilation_radius = dilation_radius
        self.threshold = threshold
        self.voxel_set = voxel_set
        self.max_segmented_fraction = as_optional_float(max_segmented_fraction)
        self.name_key = name_key
        self.rule = rule or ("fixed" if threshold is not None else "yen")
        self.log_rejected = as_bool(log_rejected)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            a = d[key]
            brain = brain_mask(d[self.image_key])[0].cpu().numpy()
            seg, thr = yen_segmentation(
                a[0].detach().cpu().numpy(), brain, self.dilation_radius, self.threshold, self.voxel_set
            )
            seg, fraction, rejected = guard_segmentation(seg, brain, self.max_segmented_fraction)
            if rejected and self.log_rejected:
                logger.warning(
                    "%s: the segmentation would mark %.0f%% of the brain (limit %.0f%%): the map has no separate tail "
                    "of anomalous values, so the threshold fell among healthy ones. It is not a finding and is "
                    "written empty; read the anomaly map instead.",
                    study_name(d, self.name_key),
                    100 * fraction,
                    100 * self.max_segmented_fraction,
                )
            d[self.seg_key] = like_map(a, seg[None])
            d[f"{self.seg_key}_info"] = {
                "rule": self.rule,
                "map": map_label(key),
                "threshold": thr,
                "voxel_set": self.voxel_set,
                "brain_fraction": fraction,
                "max_segmented_fraction": self.max_segmented_fraction,
                "rejected": rejected,
            }
        return d


def like_map(ref: torch.Tensor, array: np.ndarray) -> torch.Tensor:
    """``array`` as a float tensor on ``ref``'s device, carrying ``ref``'s metadata when it is a MetaTensor."""
    values = torch.as_tensor(array, dtype=torch.float32, device=ref.device)
    if isinstance(ref, MetaTensor):
        return MetaTensor(values, meta=dict(ref.meta), applied_operations=list(ref.applied_operations))
    return values


def step_names(
    order: Sequence[str], add: Sequence[str] = (), after: str | None = None, rest: bool | str = True
) -> list:
    """The names of the post-processing steps a workflow runs: inference's ``order`` (the configs' ``post_order``)
    up to and including the step ``after``, then the workflow's own steps ``add``, then, with ``rest``, the remaining
    steps of ``order``. Without ``after`` the steps ``add`` go at the end. Evaluation and calibration insert their
    collection this way, by name, so that inference's order is stated once.

    Raises ValueError when ``after`` is not a step of ``order``."""
    order = list(order)
    if after is not None and after not in order:
        raise ValueError(f"post step {after!r} is not one of {order}")
    cut = order.index(after) + 1 if after is not None else len(order)
    return order[:cut] + list(add) + (order[cut:] if as_bool(rest) else [])
