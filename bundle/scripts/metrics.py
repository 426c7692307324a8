"""The paper's evaluation metrics (Sec. 5.4) on anomaly maps a (H, W, D), with labels and brain masks.

Over a test set of subjects, for each median filter setting (off, 3, 5; the map of each subject is median-filtered
in 3D first, as in Sec. 4.5), on a *voxel set* per subject: ``"volume"`` (every voxel of the scoring grid,
background included, as the authors' ``eval.py``) or ``"brain"`` (the brain voxels; the map is set to 0 outside the
brain before the median filter, as the bundle's inference does):

* **AUPRC**: average precision of the voxel scores pooled over the voxel sets of the test set, the maps
  normalised to [0, 1] by min-max over those voxels (paper Sec. 5.4). Computed exactly as scikit-learn's
  ``average_precision_score`` (same curve, same sum).
* **AUROC**: area under the ROC curve of the same pooled, normalised scores.
* **ceil Dice** (the paper's ⌈Dice⌉): the mean over subjects of each subject's Dice at one threshold on the
  normalised scores (segmentation = score > threshold), the threshold that maximises that mean, searched on a grid
  (the authors: 0.01, 0.011, ..., 0.299; ``AUTHORS_CEIL_GRID``). Every subject weighs the same.
* **pooled ceil Dice**: the best Dice of all voxels pooled at one threshold (score >= threshold), found exactly from
  the cumulative counts of the sorted scores, where Dice = 2 TP / (2 TP + FP + FN) at every distinct score. Big
  lesions weigh more; this is not the paper's definition and is reported under its own name.
* **Dice_Yen**: each subject thresholded with its own Yen threshold on its voxel set plus one 3D dilation, after
  the guard (a segmentation that marks more than ``max_segmented_fraction`` of the brain is not a finding and counts
  as empty); Dice per subject, mean over subjects. The share of the brain that the raw Yen segmentation marks is kept
  per subject.
* **per-subject Dice** at the ceil threshold.
* **Dice_calibrated** (with a calibration that fits the weights and settings: :class:`CalibratedRule`): each
  subject's anomaly map, or its z-map under the calibration's normative model (``segment_map``), thresholded at the
  calibration's threshold for one target false-positive rate, plus the dilation and the guard, as inference's
  ``segmentation: calibrated`` (and ``auto`` where a calibration fits); Dice per subject, mean over subjects; and
  the false-positive rate that threshold reaches on these studies' healthy brain voxels (``fpr_calibrated``, pooled:
  the brain less the label dilated as calibration counts it), beside the target. Only at the voxel set and median
  filter the calibration was made under: its threshold is on that map.

Labels: a voxel is anomalous when its label is above 0.5, so any positive integer label (BraTS 1, 2, 4) counts and
a soft label counts above 0.5. Under ``"volume"`` the whole label counts, as in the authors' ``eval.py`` (a label
voxel outside the brain mask is a target that the map must find); under ``"brain"`` labelled voxels outside the
brain are not anomalous, since no voxel outside the brain is scored. Dice of a subject with no anomalous voxel is
undefined (NaN) and left out of the means.

The brain mask, the median filter and the segmentation are inference's own post-processing transforms
(:func:`post_transforms`: ``MaskOutsideBraind``, ``MedianFilterd`` and ``ThresholdSegmentd`` of
:mod:`scripts.postprocess`), run at each median filter setting on each stored map.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.transforms import Compose
from scripts.curves import average_precision, best_dice, binary_curve, precision_recall, roc_auc
from scripts.normative import MAPS, NormativeModel, NormativeZMapd
from scripts.postprocess import VOXEL_SETS, MaskOutsideBraind, MedianFilter, MedianFilterd, ThresholdSegmentd

MEDIAN_FILTER_SIZES: tuple[int, ...] = (0, 3, 5)
CURVE_POINTS = 2000  # points kept of each precision-recall curve for plotting
AUTHORS_CEIL_GRID: tuple[float, float, float] = (0.01, 0.3, 0.001)
"""The authors' threshold grid for the ceil Dice: ``start, stop, step`` on the normalised scores (stop excluded)."""
CEIL_GRID = AUTHORS_CEIL_GRID
"""The name of :data:`AUTHORS_CEIL_GRID` before 0.6.0 (``evaluate.yaml``'s ``ceil_grid`` is the bundle's own grid).
Unlike the other names of before 0.6.0 it stays: the authors-equivalence check (``../shared/tools/authors_equiv/
compare.py``) imports it, and ``tests/test_authors_equiv.py`` checks that it is there."""


def threshold_grid(grid: Sequence[float] = AUTHORS_CEIL_GRID) -> np.ndarray:
    """The thresholds ``start, start + step, ...`` below ``stop`` of ``grid`` = (start, stop, step), rounded to the
    step's decimals as the authors' ``round(x, 3)``."""
    start, stop, step = (float(v) for v in grid)
    if not (step > 0 and stop > start):
        raise ValueError(f"ceil Dice grid needs start < stop and step > 0, got {list(grid)}")
    decimals = max(0, -int(np.floor(np.log10(step))))
    return np.unique(np.round(np.arange(start, stop, step), decimals))


@dataclass
class Subject:
    """One study on the scoring grid, as :class:`scripts.collect.MapCollector` keeps it for evaluation and
    calibration.

    Attributes:
        name: the study's name.
        a: anomaly map (H, W, D), float32: evaluation's before any median filter, calibration's after inference's.
        label: reference segmentation (H, W, D), see :func:`binarize_label`; None for a study without one (the
            metrics need one).
        mask: brain mask (H, W, D), bool.
        healthy: the voxels counted as healthy (H, W, D), bool: the brain less the label dilated by
            :data:`scripts.collect.LABEL_MARGIN` (calibration); None where not kept.
        voxel_ml: the volume of one voxel in ml (1 mm^3 unless given).
    """

    name: str
    a: np.ndarray
    label: np.ndarray | None
    mask: np.ndarray
    healthy: np.ndarray | None = None
    voxel_ml: float = 1e-3


@dataclass
class SubjectMetrics:
    """The metrics of one subject at one median filter setting."""

    name: str
    median_filter: int
    brain_voxels: int
    label_voxels: int
    dice_ceil: float
    dice_yen: float
    yen_threshold: float
    segmented_fraction: float = float("nan")
    rejected: bool = False
    dice_calibrated: float = float("nan")
    fpr_calibrated: float = float("nan")


@dataclass
class Metrics:
    """The test-set metrics at one median filter setting, on one voxel set.

    ``ceil_threshold`` and ``ceil_threshold_pooled`` are on the normalised scale ([0, 1] over the test set's voxel
    sets), ``ceil_threshold_raw`` the first on the maps' own scale. ``segmented_fraction_median`` is the median over
    subjects of the share of the brain that the raw Yen segmentation marks; ``rejected`` counts the segmentations
    that the guard rejected. ``precision``/``recall`` are a subsample (at most :data:`CURVE_POINTS`) of the
    precision-recall curve, for plotting.
    """

    median_filter: int
    n_subjects: int
    auprc: float
    auroc: float
    ceil_dice: float
    ceil_threshold: float
    ceil_threshold_raw: float
    ceil_dice_pooled: float
    ceil_threshold_pooled: float
    dice_yen: float
    dice_yen_std: float
    prevalence: float
    segmented_fraction_median: float = float("nan")
    rejected: int = 0
    voxel_set: str = "brain"
    calibrated_threshold: float = float("nan")
    calibrated_map: str = ""
    target_fpr: float = float("nan")
    dice_calibrated: float = float("nan")
    dice_calibrated_std: float = float("nan")
    fpr_calibrated: float = float("nan")
    subjects: list[SubjectMetrics] = field(default_factory=list)
    precision: np.ndarray = field(default_factory=lambda: np.zeros(0))
    recall: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def summary(self) -> dict[str, float | int]:
        """The scalar figures, for JSON."""
        keys = ("voxel_set", "median_filter", "n_subjects", "auprc", "auroc", "ceil_dice", "ceil_threshold")
        keys += ("ceil_threshold_raw", "ceil_dice_pooled", "ceil_threshold_pooled", "dice_yen", "dice_yen_std")
        keys += ("prevalence", "segmented_fraction_median", "rejected")
        keys += ("calibrated_threshold", "calibrated_map", "target_fpr", "dice_calibrated", "dice_calibrated_std")
        keys += ("fpr_calibrated",)
        return {k: getattr(self, k) for k in keys}


@dataclass(frozen=True)
class CalibratedRule:
    """Inference's ``segmentation: calibrated``, evaluated beside Yen: a fixed ``threshold`` (a calibration's, for
    ``target_fpr``) on the anomaly map or, with ``segment_map`` ``"zmap"``, on its z-map under the calibration's
    ``normative`` model; valid at the ``voxel_set`` and ``median_filter`` it was calibrated under."""

    threshold: float
    target_fpr: float
    voxel_set: str
    median_filter: int
    segment_map: str = "anomaly"
    normative: NormativeModel | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.segment_map not in MAPS:
            raise ValueError(f"segment_map must be one of {MAPS}, got {self.segment_map!r}")
        if self.segment_map == "zmap" and self.normative is None:
            raise ValueError("a calibrated rule on the z-map needs the calibration's normative model")

    @property
    def zmap_model(self) -> NormativeModel | None:
        """The normative model whose z-map the threshold applies to; None when it applies to the anomaly map."""
        return self.normative if self.segment_map == "zmap" else None

    def applies(self, voxel_set: str, median_filter: int) -> bool:
        """Whether the threshold is on the map of this voxel set and median filter setting."""
        return voxel_set == self.voxel_set and int(median_filter) == int(self.median_filter)


def binarize_label(label: np.ndarray) -> np.ndarray:
    """Anomalous voxels of a label (any shape): values above 0.5 (integer labels 1, 2, 4 -> True; soft > 0.5)."""
    return np.asarray(label) > 0.5


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice of two boolean arrays of one shape; NaN when ``target`` is empty (undefined)."""
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    n_target = int(target.sum())
    if n_target == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(pred & target)) / (int(pred.sum()) + n_target)


def median_filtered(a: np.ndarray, size: int) -> np.ndarray:
    """``a`` (H, W, D) median-filtered in 3D with a cube of ``size`` (0: off) by :class:`MedianFilter`."""
    if not size or size <= 1:
        return np.asarray(a, dtype=np.float32)
    t = torch.as_tensor(np.asarray(a, dtype=np.float32))[None]
    return MedianFilter(size)(t)[0].numpy()


def minmax_normalise(scores: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``scores`` (N,) mapped to [0, 1] by their min and max; returns (normalised float32, min, max).

    Constant scores map to 0.
    """
    scores = np.asarray(scores, dtype=np.float32)
    if scores.size == 0:
        return scores, 0.0, 0.0
    lo, hi = float(scores.min()), float(scores.max())
    if hi <= lo:
        return np.zeros_like(scores), lo, hi
    return ((scores - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32), lo, hi


def dice_at_thresholds(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Dice of ``scores > t`` against ``targets`` (N,) for every t of ``thresholds`` (M,); (M,), NaN without target.

    The thresholds are cast to the scores' float type first (float32 for the normalised maps): the authors compare
    a float32 map with a Python float in torch, i.e. in float32, and a threshold such as 0.012 then rounds to the
    nearest float32; compared in float64, voxels lying on it would flip.
    """
    scores = np.asarray(scores).ravel()
    targets = np.asarray(targets, dtype=bool).ravel()
    n_target = int(targets.sum())
    if n_target == 0:
        return np.full(len(thresholds), np.nan)
    everything = np.sort(scores)
    lesion = np.sort(scores[targets])
    if np.issubdtype(scores.dtype, np.floating):  # compared in the scores' precision, as the authors' torch does
        thresholds = np.asarray(thresholds).astype(scores.dtype)
    predicted = everything.size - np.searchsorted(everything, thresholds, side="right")
    hits = lesion.size - np.searchsorted(lesion, thresholds, side="right")
    return 2.0 * hits / (predicted + n_target)


def mean_dice_ceil(
    scores: Sequence[np.ndarray], targets: Sequence[np.ndarray], thresholds: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """The paper's ceil Dice: (best mean over subjects of per-subject Dice, its threshold, per-subject Dice there).

    ``scores``/``targets`` hold each subject's normalised scores and boolean labels (N_i,); subjects without a
    target are left out of the mean (their Dice is NaN). Ties go to the lowest threshold, as a scan of the grid from
    its start that keeps the first best does.
    """
    per_subject = np.stack([dice_at_thresholds(s, t, thresholds) for s, t in zip(scores, targets, strict=True)])
    defined = np.isfinite(per_subject).all(axis=1)
    if not defined.any() or thresholds.size == 0:
        return float("nan"), float("nan"), np.full(len(scores), np.nan)
    means = per_subject[defined].mean(axis=0)
    k = int(np.argmax(means))
    return float(means[k]), float(thresholds[k]), per_subject[:, k]


def _subsample(precision: np.ndarray, recall: np.ndarray, n: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``n`` points of a precision-recall curve, evenly spread in recall and in curve index."""
    if precision.size <= n:
        return precision, recall
    steps = np.linspace(0, precision.size - 1, n // 2).round().astype(np.int64)
    order = np.arange(recall.size)[::-1]  # recall increases along the reversed curve
    by_recall = order[np.searchsorted(recall[::-1], np.linspace(0, 1, n // 2)).clip(0, recall.size - 1)]
    keep = np.unique(np.r_[steps, by_recall])
    return precision[keep], recall[keep]


def post_transforms(
    median_filter: int = 0,
    dilation_radius: int = 1,
    voxel_set: str = "brain",
    max_segmented_fraction: float | None = None,
    calibrated_threshold: float | None = None,
    zmap_model: NormativeModel | None = None,
) -> Compose:
    """Inference's steps ``mask_brain``, ``median_filter`` and ``segment`` (``configs/inference.yaml``), the same
    transforms at one median filter setting, on a dict of ``"pred"`` (the map, (1, H, W, D) float32) and ``"brain"``
    (the brain mask, (1, H, W, D) bool); they write ``"seg"`` (1, H, W, D) and ``"seg_info"``, and with
    ``calibrated_threshold`` also ``"seg_calibrated"`` and ``"seg_calibrated_info"`` (the segment step at that fixed
    threshold; with ``zmap_model``, on the median-filtered map's z-map ``"zmap"`` (1, H, W, D), as inference's
    ``zmap`` step makes it). The map is 0 outside the brain before the median filter with voxel set ``"brain"``; a
    segmentation that the guard rejects is counted (``seg_info["rejected"]``), not logged as inference does for the
    study it writes."""
    thresholds: dict[str, tuple[str, float | None]] = {"seg": ("pred", None)}
    if calibrated_threshold is not None:
        thresholds["seg_calibrated"] = ("pred" if zmap_model is None else "zmap", calibrated_threshold)
    return Compose(
        [
            MaskOutsideBraind("pred", mask_key="brain", enabled=voxel_set == "brain"),
            MedianFilterd("pred", size=int(median_filter)),
            NormativeZMapd("pred", zmap_model, zmap_key="zmap", image_key="brain"),  # no model: nothing
            *(
                ThresholdSegmentd(
                    map_key,
                    seg_key=key,
                    image_key="brain",
                    dilation_radius=dilation_radius,
                    threshold=threshold,
                    voxel_set=voxel_set,
                    max_segmented_fraction=max_segmented_fraction,
                    log_rejected=False,
                )
                for key, (map_key, threshold) in thresholds.items()
            ),
        ]
    )


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) SD of the finite ``values``; NaN for none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return (float(v.mean()), float(v.std())) if v.size else (float("nan"), float("nan"))


def evaluate_subjects(
    subjects: Iterable[Subject],
    median_filter: int = 0,
    dilation_radius: int = 1,
    voxel_set: str = "brain",
    ceil_grid: Sequence[float] = AUTHORS_CEIL_GRID,
    max_segmented_fraction: float | None = None,
    calibrated: CalibratedRule | None = None,
) -> Metrics:
    """All metrics of a test set at one median filter setting (see the module docstring).

    Args:
        subjects: each with map ``a`` (H, W, D), ``label`` and brain ``mask`` on one grid (the scoring grid).
        median_filter: size of the cubic 3D median filter applied to each map first (0: off).
        dilation_radius: radius of the dilation after the Yen threshold (paper: one dilation).
        voxel_set: ``"volume"`` (every voxel, the authors') or ``"brain"`` (map 0 outside the brain before the median
            filter, every figure on brain voxels).
        ceil_grid: (start, stop, step) of the thresholds searched for the ceil Dice (:func:`threshold_grid`).
        max_segmented_fraction: the guard of inference (None: off): a Yen segmentation marking more of the brain
            counts as empty.
        calibrated: the calibrated rule, evaluated too where it applies (this voxel set and median filter); its
            false-positive rate needs each subject's ``healthy`` voxels.
    """
    if voxel_set not in VOXEL_SETS:
        raise ValueError(f"voxel_set must be one of {VOXEL_SETS}, got {voxel_set!r}")
    rule = calibrated if calibrated is not None and calibrated.applies(voxel_set, median_filter) else None
    post = post_transforms(
        median_filter,
        dilation_radius,
        voxel_set,
        max_segmented_fraction,
        None if rule is None else rule.threshold,
        None if rule is None else rule.zmap_model,
    )
    scores, targets, per_subject = [], [], []
    false_positives, healthy_voxels = 0, 0
    for s in subjects:
        mask = np.asarray(s.mask, dtype=bool)
        target = binarize_label(s.label)
        if voxel_set == "brain":
            target = target & mask
        if s.a.shape != mask.shape or target.shape != mask.shape:
            raise ValueError(f"{s.name}: map {s.a.shape}, label {np.shape(s.label)}, mask {mask.shape} differ")
        a = torch.as_tensor(np.asarray(s.a, dtype=np.float32))[None]
        d = post({"name": s.name, "pred": a, "brain": torch.as_tensor(mask)[None]})
        a = torch.as_tensor(d["pred"])[0].numpy()
        info = d["seg_info"]
        per_subject.append(
            SubjectMetrics(
                name=s.name,
                median_filter=int(median_filter),
                brain_voxels=int(mask.sum()),
                label_voxels=int(target.sum()),
                dice_ceil=float("nan"),
                dice_yen=dice(torch.as_tensor(d["seg"])[0].numpy() > 0.5, target),
                yen_threshold=info["threshold"],
                segmented_fraction=info["brain_fraction"],
                rejected=info["rejected"],
            )
        )
        if rule is not None:
            marked = torch.as_tensor(d["seg_calibrated"])[0].numpy() > 0.5
            per_subject[-1].dice_calibrated = dice(marked, target)
            if s.healthy is not None:
                healthy = np.asarray(s.healthy, dtype=bool)
                fp, n = int(np.count_nonzero(marked & healthy)), int(np.count_nonzero(healthy))
                false_positives, healthy_voxels = false_positives + fp, healthy_voxels + n
                per_subject[-1].fpr_calibrated = fp / max(n, 1)
        scores.append(a[mask] if voxel_set == "brain" else a.ravel())
        targets.append(target[mask] if voxel_set == "brain" else target.ravel())
    if not per_subject:
        raise ValueError("no subject to evaluate")
    bounds = np.cumsum([0, *[x.size for x in scores]])
    pooled, lo, hi = minmax_normalise(np.concatenate(scores))
    del scores
    pooled_targets = np.concatenate(targets)
    curve = binary_curve(pooled, pooled_targets)
    pooled_ceil, pooled_thr = best_dice(curve)
    split = [(pooled[a:b], pooled_targets[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    ceil, thr, dice_at_ceil = mean_dice_ceil([x for x, _ in split], [t for _, t in split], threshold_grid(ceil_grid))
    for m, value in zip(per_subject, dice_at_ceil, strict=True):
        m.dice_ceil = float(value)
    precision, recall, _ = precision_recall(curve)
    precision, recall = _subsample(precision, recall)
    dice_yen, dice_yen_std = _mean_sd([m.dice_yen for m in per_subject])
    calibrated_figures = {}
    if rule is not None:
        mean, sd = _mean_sd([m.dice_calibrated for m in per_subject])
        calibrated_figures = {
            "calibrated_threshold": float(rule.threshold),
            "calibrated_map": rule.segment_map,
            "target_fpr": float(rule.target_fpr),
            "dice_calibrated": mean,
            "dice_calibrated_std": sd,
            "fpr_calibrated": false_positives / healthy_voxels if healthy_voxels else float("nan"),
        }
    return Metrics(
        median_filter=int(median_filter),
        n_subjects=len(per_subject),
        auprc=average_precision(curve),
        auroc=roc_auc(curve),
        ceil_dice=ceil,
        ceil_threshold=thr,
        ceil_threshold_raw=lo + thr * (hi - lo) if np.isfinite(thr) else thr,
        ceil_dice_pooled=pooled_ceil,
        ceil_threshold_pooled=pooled_thr,
        dice_yen=dice_yen,
        dice_yen_std=dice_yen_std,
        prevalence=float(pooled_targets.mean()) if pooled_targets.size else float("nan"),
        segmented_fraction_median=float(np.median([m.segmented_fraction for m in per_subject])),
        rejected=sum(m.rejected for m in per_subject),
        voxel_set=voxel_set,
        subjects=per_subject,
        precision=precision,
        recall=recall,
        **calibrated_figures,
    )


def evaluate_all(
    subjects: Sequence[Subject],
    median_filters: Sequence[int] = MEDIAN_FILTER_SIZES,
    dilation_radius: int = 1,
    voxel_sets: Sequence[str] = ("brain",),
    ceil_grid: Sequence[float] = AUTHORS_CEIL_GRID,
    max_segmented_fraction: float | None = None,
    calibrated: CalibratedRule | None = None,
) -> list[Metrics]:
    """:func:`evaluate_subjects` for each voxel set and median filter setting (paper: off, 3, 5)."""
    return [
        evaluate_subjects(
            subjects, int(size), dilation_radius, voxel_set, ceil_grid, max_segmented_fraction, calibrated=calibrated
        )
        for voxel_set in voxel_sets
        for size in median_filters
    ]
