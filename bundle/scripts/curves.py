"""Curves of pooled voxel scores against labels: precision-recall and ROC from one sort (scikit-learn's arithmetic).

:func:`binary_curve` sorts the scores once and keeps, for each distinct score, the true and false positives of
``score >= t``; :func:`average_precision` (AUPRC), :func:`roc_auc` and :func:`best_dice` (the pooled ceil Dice) are
read from it. ``tests/test_metrics.py`` checks them against scikit-learn's ``average_precision_score`` and
``roc_auc_score``. Used by the evaluation (``scripts.metrics``), FLAIR's threshold tuning and the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Curve:
    """Cumulative counts of the sorted scores (scikit-learn's ``_binary_clf_curve``).

    For each distinct score, from the highest down: ``thresholds[k]``, and the true and false positives of the
    segmentation ``score >= thresholds[k]``: ``tps[k]``, ``fps[k]`` (int64). ``positives`` = ``tps[-1]``.
    """

    thresholds: np.ndarray
    tps: np.ndarray
    fps: np.ndarray

    @property
    def positives(self) -> int:
        return int(self.tps[-1]) if self.tps.size else 0

    @property
    def negatives(self) -> int:
        return int(self.fps[-1]) if self.fps.size else 0


def binary_curve(scores: np.ndarray, targets: np.ndarray) -> Curve:
    """The :class:`Curve` of pooled ``scores`` (N,) against boolean ``targets`` (N,)."""
    scores = np.asarray(scores).ravel()
    targets = np.asarray(targets, dtype=bool).ravel()
    if scores.shape != targets.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} differ in size")
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, targets = scores[order], targets[order]
    del order
    distinct = np.flatnonzero(np.diff(scores))
    ends = np.r_[distinct, scores.size - 1]
    tps = np.cumsum(targets, dtype=np.int64)[ends]
    fps = 1 + ends - tps
    return Curve(thresholds=scores[ends], tps=tps, fps=fps)


def precision_recall(curve: Curve) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) as scikit-learn's ``precision_recall_curve``: recall decreasing to 0, with
    the point (recall 0, precision 1) appended. NaN recall when there is no positive."""
    tps = curve.tps.astype(np.float64)
    ps = tps + curve.fps
    precision = np.zeros_like(tps)
    np.divide(tps, ps, out=precision, where=ps != 0)
    recall = tps / tps[-1] if curve.positives else np.full_like(tps, np.nan)
    return np.hstack((precision[::-1], 1.0)), np.hstack((recall[::-1], 0.0)), curve.thresholds[::-1]


def average_precision(curve: Curve) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n (scikit-learn's ``average_precision_score``); NaN without positives."""
    if not curve.positives:
        return float("nan")
    precision, recall, _ = precision_recall(curve)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def roc_auc(curve: Curve) -> float:
    """Area under the ROC curve (trapezoids, ties as one step); NaN unless both classes occur."""
    if not curve.positives or not curve.negatives:
        return float("nan")
    tpr = np.r_[0.0, curve.tps / curve.positives]
    fpr = np.r_[0.0, curve.fps / curve.negatives]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def best_dice(curve: Curve) -> tuple[float, float]:
    """(best Dice, its threshold) over every threshold ``score >= t``: Dice_k = 2 TP_k / (TP_k + FP_k + P).

    Ties go to the highest threshold; NaN and +inf without positives.
    """
    if not curve.positives:
        return float("nan"), float("inf")
    scores = 2.0 * curve.tps / (curve.tps + curve.fps + curve.positives)
    k = int(np.argmax(scores))
    return float(scores[k]), float(curve.thresholds[k])
