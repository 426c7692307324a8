"""``run calibrate`` for ANDi: thresholds at target false-positive rates and the normative model, from healthy studies.

The healthy validation studies are scored with the trained weights and post-processed as inference does (channel
reduction, brain mask, median filter). :class:`scripts.collect.MapCollector` (with ``healthy``) keeps each map and
its healthy brain voxels (a study's labelled voxels, dilated by :data:`scripts.collect.LABEL_MARGIN`, are left out, so
labelled validation studies such as BraTS' can serve). Then :func:`calibrate`:

* fits the normative model of ``scripts.normative`` on every study;
* for the anomaly map and for the z-map, finds at each target false-positive rate (default 1e-2, 1e-3, 1e-4) the
  threshold whose segmentation, made as inference makes it (threshold, then the 3D dilation), marks that share of
  the healthy brain voxels of the studies pooled (:func:`threshold_at_fpr`). The z-maps used for this are
  leave-one-out ones (each study's z-map under the model of the others), so that a z-map threshold holds for studies
  the model has not seen.

It writes ``normative.npz`` and then ``calibration.json`` (a value file of ``scripts.values``: the thresholds, the
settings they were made under, the weights' sha256, and the npz's sha256), each atomically. Inference reads the
calibration by path (:func:`load_calibration`) and refuses one made under other settings or other weights.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scripts import as_bool, is_unset
from scripts.collect import MapCollector
from scripts.errors import StudyError
from scripts.files import atomic_write_bytes
from scripts.metrics import CalibratedRule, Subject
from scripts.normative import MAPS, NormativeModel, NormativeSums, fit_normative
from scripts.postprocess import yen_segmentation
from scripts.triage import study_scores
from scripts.values import file_sha256, read_value_file, write_value_file

logger = logging.getLogger(__name__)

TARGET_FPRS: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
NORMATIVE_FILE = "normative.npz"


def segmentation_fpr(
    studies: Sequence[Subject], maps: Sequence[np.ndarray], threshold: float, dilation_radius: int, voxel_set: str
) -> float:
    """The share of the pooled healthy voxels (``study.healthy``) that inference's segmentation at ``threshold`` marks
    (threshold, then the dilation; cut to the brain with voxel set "brain"). ``maps[i]`` is study i's map (H, W, D)."""
    marked = total = 0
    for study, a in zip(studies, maps, strict=True):
        seg, _ = yen_segmentation(a, study.mask, dilation_radius, threshold, voxel_set)
        marked += int(np.count_nonzero(seg.astype(bool) & study.healthy))
        total += int(np.count_nonzero(study.healthy))
    return marked / max(1, total)


def threshold_at_fpr(
    studies: Sequence[Subject],
    maps: Sequence[np.ndarray],
    target_fpr: float,
    dilation_radius: int = 1,
    voxel_set: str = "volume",
    steps: int = 16,
) -> tuple[float, float]:
    """(threshold, realised rate): the lowest threshold found whose segmentation marks at most ``target_fpr`` of the
    pooled healthy voxels (see :func:`segmentation_fpr`).

    Without dilation that is the (1 - target) quantile of the healthy values. The dilation only adds voxels, so the
    threshold lies between that quantile and the (1 - target / 100) one: a bisection over the quantile level (in
    log) finds it in ``steps`` steps.
    """
    values = np.sort(np.concatenate([a[s.healthy] for s, a in zip(studies, maps, strict=True)]))
    if values.size == 0:
        raise StudyError("no healthy brain voxels to calibrate a threshold on")

    def at_level(level: float) -> float:
        index = min(values.size - 1, max(0, int(np.ceil((1.0 - level) * values.size)) - 1))
        return float(values[index])

    if dilation_radius <= 0:
        thr = at_level(target_fpr)
        return thr, segmentation_fpr(studies, maps, thr, 0, voxel_set)
    lo, hi = np.log(target_fpr / 100.0), np.log(target_fpr)
    best = at_level(np.exp(lo))
    best_rate = segmentation_fpr(studies, maps, best, dilation_radius, voxel_set)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        thr = at_level(np.exp(mid))
        rate = segmentation_fpr(studies, maps, thr, dilation_radius, voxel_set)
        if rate > target_fpr:
            hi = mid
        else:
            lo, best, best_rate = mid, thr, rate
    return best, best_rate


def leave_one_out_zmaps(
    studies: Sequence[Subject], sigma_voxels: float, min_scale: float
) -> tuple[NormativeModel, list[np.ndarray]]:
    """(the model of every study, each study's z-map under the model of the others)."""
    parts = [NormativeSums.of(s.a, s.healthy) for s in studies]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    model = fit_normative(total, sigma_voxels, min_scale)
    if len(studies) == 1:
        return model, [model.zmap(studies[0].a, studies[0].mask)]
    zmaps = []
    for study, part in zip(studies, parts, strict=True):
        zmaps.append(fit_normative(total - part, sigma_voxels, min_scale).zmap(study.a, study.mask))
    return model, zmaps


@dataclass
class Calibration:
    """A calibration read back: thresholds per map (:data:`MAPS`) at each target false-positive rate, the model."""

    path: Path
    target_fprs: list[float]
    thresholds: dict[str, list[float]]
    normative: NormativeModel

    def threshold(self, map_name: str, target_fpr: float | str) -> float:
        """The threshold of ``map_name`` ("anomaly" or "zmap") at ``target_fpr`` (one of those calibrated)."""
        if map_name not in MAPS:
            raise StudyError(f"segment_map must be one of {MAPS}, got {map_name!r}")
        fpr = float(target_fpr)
        for i, calibrated in enumerate(self.target_fprs):
            if np.isclose(fpr, calibrated, rtol=1e-6, atol=0.0):
                return float(self.thresholds[map_name][i])
        raise StudyError(f"{self.path}: no threshold at target_fpr {fpr:g}; it was calibrated at {self.target_fprs}")


def calibrate(
    collector: MapCollector,
    path: str | os.PathLike,
    settings: Mapping[str, object],
    weights: str | os.PathLike | None,
    target_fprs: Sequence[float] = TARGET_FPRS,
    dilation_radius: int = 1,
    voxel_set: str = "volume",
    sigma_voxels: float = 2.0,
    min_scale: float = 0.25,
    record: Mapping[str, object] | None = None,
    made_by: str = "ANDi run calibrate",
) -> dict:
    """Fit the model and the thresholds on the collected healthy studies (``collector.subjects``, each with its
    ``healthy`` voxels: a collector made with ``healthy``); write ``normative.npz`` (beside ``path``) and then the
    calibration file ``path``. Returns the calibration's value (what ``calibration.json`` holds)."""
    studies = collector.subjects
    if not studies:
        raise StudyError("no healthy study could be scored: nothing to calibrate on")
    if any(s.healthy is None for s in studies):
        raise ValueError("calibration needs each study's healthy voxels: collect them with MapCollector(healthy=True)")
    fprs = [float(f) for f in (target_fprs if isinstance(target_fprs, Sequence) else [target_fprs])]
    if not all(0.0 < f < 1.0 for f in fprs):
        raise StudyError(f"target_fprs must lie in (0, 1), got {fprs}")
    model, zmaps = leave_one_out_zmaps(studies, float(sigma_voxels), float(min_scale))
    maps = {"anomaly": [s.a for s in studies], "zmap": zmaps}
    thresholds: dict[str, list[float]] = {m: [] for m in MAPS}
    realised: dict[str, list[float]] = {m: [] for m in MAPS}
    for name in MAPS:
        for fpr in fprs:
            thr, rate = threshold_at_fpr(studies, maps[name], fpr, int(dilation_radius), voxel_set)
            thresholds[name].append(thr)
            realised[name].append(rate)
            logger.info("%s at FPR %g: threshold %.6g (marks %.3g of the healthy voxels)", name, fpr, thr, rate)
    npz = Path(path).parent / NORMATIVE_FILE
    atomic_write_bytes(model.to_bytes(), npz)
    healthy_scores = [study_scores(s.a, s.mask, z, None, s.voxel_ml) for s, z in zip(studies, zmaps, strict=True)]
    value = {
        "target_fprs": fprs,
        "thresholds": thresholds,
        "realised_fpr_calibration_studies": realised,
        "normative_file": npz.name,
        "normative_sha256": file_sha256(npz),
        "normative_estimator": {
            "location": "mean of log map, Gaussian-smoothed (normalised convolution)",
            "scale": "standard deviation of log map, same smoothing, floored",
            "sigma_voxels": float(sigma_voxels),
            "min_scale_of_pooled_sd": float(min_scale),
            "zmap_thresholds_from": "leave-one-out z-maps",
        },
        "grid": list(model.shape),
        "studies": [s.name for s in studies],
        "healthy_voxels": int(sum(np.count_nonzero(s.healthy) for s in studies)),
        "healthy_study_scores": {s.name: sc for s, sc in zip(studies, healthy_scores, strict=True)},
    }
    write_value_file(path, value, dict(settings, **(record or {})), weights, made_by=made_by)
    return value


def load_calibration(
    path: str | os.PathLike | None,
    expected_settings: Mapping[str, object],
    weights: str | os.PathLike | None,
    required: bool | str = False,
) -> Calibration | None:
    """The calibration file ``path`` checked against this configuration, with its normative model; or None.

    ``required`` (a calibrated segmentation or a z-map was asked for): a missing file, or one made under other
    settings or weights, stops with a StudyError. Otherwise such a file gives None (no z-map, Yen segmentation), and
    the log says why.
    """
    required = as_bool(required)
    if is_unset(path) or not Path(path).is_file():
        if required:
            raise StudyError(
                f"{path}: no calibration file; make one with `run calibrate` (configs/calibrate.yaml) on healthy "
                "validation studies, or segment with Yen (--segmentation yen)"
            )
        return None
    try:
        value = read_value_file(path, expected_settings, weights)
        npz = Path(path).parent / str(value.get("normative_file", NORMATIVE_FILE))
        if not npz.is_file():
            raise StudyError(f"{path}: its normative model {npz.name} is missing beside it")
        if file_sha256(npz) != value.get("normative_sha256"):
            raise StudyError(f"{npz}: not the normative model that {Path(path).name} was made with (sha256 differs)")
        model = NormativeModel.from_bytes(npz.read_bytes())
    except StudyError as err:
        if required:
            raise
        logger.info("calibration not used (no z-map, no calibrated threshold): %s", err)
        return None
    return Calibration(
        Path(path), [float(f) for f in value["target_fprs"]], {m: value["thresholds"][m] for m in MAPS}, model
    )


SEGMENTATIONS: tuple[str, ...] = ("yen", "calibrated", "auto")
"""Inference's segmentation rules: Yen's threshold per study (the paper's); the calibration's threshold at a target
false-positive rate (a calibration that fits the weights and settings is required); ``auto``: the calibration's
where one fits, else Yen's, saying so in the log and in each study's ``segmentation.json``."""
AUTO_FALLBACK = "yen (segmentation auto: no calibration fits these weights and settings)"
"""The rule recorded in ``segmentation.json`` when ``auto`` falls back to Yen."""


def segmentation_threshold(
    calibration: Calibration | None, segmentation: str = "yen", segment_map: str = "anomaly", target_fpr: float = 1e-3
) -> float | None:
    """The fixed threshold of inference's segmentation: None for Yen's per-study threshold, else the calibration's
    threshold of ``segment_map`` at ``target_fpr`` (``auto``: where there is a calibration; the log says when not)."""
    if segmentation not in SEGMENTATIONS:
        raise StudyError(f"segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}")
    if segment_map not in MAPS:
        raise StudyError(f"segment_map must be one of {MAPS}, got {segment_map!r}")
    if segmentation == "yen":
        return None
    if calibration is None:
        if segmentation == "auto":
            logger.info("segmentation auto: no calibration fits these weights and settings, so Yen's per study")
            return None
        raise StudyError("segmentation calibrated needs a calibration file (run calibrate)")
    return calibration.threshold(segment_map, target_fpr)


def segmentation_rule(threshold: float | None, segmentation: str, target_fpr: float | str) -> str | None:
    """How inference's threshold was chosen, for ``segmentation.json``: ``"calibrated at FPR 0.001"`` with a
    calibrated ``threshold``, :data:`AUTO_FALLBACK` when ``auto`` found no calibration, None (Yen) otherwise."""
    if threshold is not None:
        return "calibrated at FPR " + format(float(target_fpr), "g")
    return AUTO_FALLBACK if segmentation == "auto" else None


def calibrated_rule(
    calibration: Calibration | None,
    target_fpr: float | str,
    voxel_set: str,
    median_filter: int,
    segment_map: str = "anomaly",
) -> CalibratedRule | None:
    """Inference's ``segmentation: calibrated`` on ``segment_map`` (the anomaly map, or its z-map under the
    calibration's normative model), for evaluation beside Yen: the calibration's threshold at ``target_fpr``, valid
    at the ``voxel_set`` and ``median_filter`` it was made under; None without a calibration that fits
    (:func:`load_calibration`)."""
    if calibration is None:
        return None
    threshold = calibration.threshold(segment_map, target_fpr)
    return CalibratedRule(
        threshold, float(target_fpr), str(voxel_set), int(median_filter), segment_map, calibration.normative
    )
