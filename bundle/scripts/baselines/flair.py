"""FLAIR thresholding (Meissen et al., "Challenging current semi-supervised anomaly segmentation methods for brain
MRI", MICCAI BrainLes 2021), the paper's semi-supervised reference (Table 1, excluded from its ranking).

The anomaly map is the preprocessed FLAIR intensity itself (each channel of the volume divided by its 99th
percentile, paper Sec. 5.2); no network, no training. It is returned in every channel so that the post-processing's
channel reduction (max or mean) gives the FLAIR map, then median-filtered and Yen-thresholded like every method
(the Dice_Yen column).

The method is **semi-supervised**: its segmentation threshold is tuned on a *labelled* validation set, and it relies
on choosing the modality a priori. :func:`best_dice_threshold` picks the threshold of best Dice on validation maps
and labels; :func:`tune_threshold` scores labelled studies and calls it (``run tune_threshold``, see
``configs/flair.yaml``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scripts import MODALITIES
from scripts.curves import best_dice, binary_curve
from scripts.intensity import brain_mask
from scripts.modalities import channel_of
from scripts.scoring import BrainSliceInferer


class FLAIRInferer(BrainSliceInferer):
    """The scaled FLAIR intensity as the map of every channel; ``network`` is ignored.

    Args:
        modalities: the configured modalities (the image's channels); without FLAIR the method stops with one line.
    """

    def __init__(self, modalities: Sequence[str] = MODALITIES) -> None:
        super().__init__()
        self.channel = channel_of(modalities, "flair", "the FLAIR-threshold baseline")

    def score_slices(self, x_0: torch.Tensor, network: Callable | None = None) -> torch.Tensor:
        """FLAIR of slices ``x_0`` (K, C, H, W), repeated over the C channels; returns (K, C, H, W)."""
        return x_0[:, self.channel : self.channel + 1].expand_as(x_0).clone()


def best_dice_threshold(
    maps: Sequence[np.ndarray], labels: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None = None
) -> tuple[float, float]:
    """The threshold whose segmentation ``map > threshold`` has the best Dice over all the given voxels.

    Every cut between two distinct map values is tried (exact, in O(N log N), through the same
    :func:`~scripts.curves.binary_curve` and :func:`~scripts.curves.best_dice` as the ceil Dice of ``run
    evaluate``); Dice is pooled over all studies.

    Args:
        maps: anomaly maps, any shapes.
        labels: ground truth of the same shapes (non-zero: anomalous).
        masks: voxels to use (e.g. the brain), bool of the same shapes; None uses every voxel.

    Returns:
        (threshold, Dice at that threshold). The threshold lies half-way between the lowest value kept and the next.
    """
    if masks is None:
        masks = [np.ones(np.shape(m), dtype=bool) for m in maps]
    values = np.concatenate([np.asarray(m, dtype=np.float64)[k] for m, k in zip(maps, masks, strict=True)])
    truth = np.concatenate([np.asarray(y)[k] != 0 for y, k in zip(labels, masks, strict=True)])
    if not truth.any():
        raise ValueError("no anomalous voxel in the labels: the threshold cannot be tuned")
    curve = binary_curve(values, truth)
    dice, lowest_kept = best_dice(curve)  # the segmentation values >= lowest_kept
    k = int(np.flatnonzero(curve.thresholds == lowest_kept)[0])
    lower = curve.thresholds[k + 1] if k + 1 < curve.thresholds.size else lowest_kept - max(1.0, abs(lowest_kept))
    return float((lowest_kept + lower) / 2.0), dice


@torch.inference_mode()
def tune_threshold(
    studies: Sequence[dict[str, str]],
    transform: Callable[[dict], dict],
    inferer: Callable,
    network: Callable,
    postprocessing: Callable[[dict], dict],
    label_key: str = "label",
) -> dict[str, float]:
    """Score labelled studies and pick the best-Dice threshold of their post-processed maps on the scoring grid.

    Args:
        studies: labelled validation studies (each with a ``label`` file).
        transform: the volume preprocessing (``data["image"]`` and ``data[label_key]``).
        inferer: the method's inferer (``FLAIRInferer`` here; any method's works).
        network: its network (ignored by ``FLAIRInferer``).
        postprocessing: the map post-processing up to the threshold (channel reduction, brain masking, median
            filter), on ``{"pred": (C, H, W, D), "image": (C, H, W, D)}``.

    Returns:
        ``{"threshold": t, "dice": Dice at t, "studies": n}``; the segmentation is ``map > t``.
    """
    maps, labels, masks = [], [], []
    for study in studies:
        if label_key not in study:
            raise ValueError(f"study {study.get('name', study)} has no {label_key!r}: tuning needs labelled studies")
        data = transform(dict(study))
        image = torch.as_tensor(data["image"])
        pred = postprocessing({"pred": inferer(image[None], network)[0], "image": image})["pred"]
        maps.append(torch.as_tensor(pred)[0].cpu().numpy())
        labels.append(torch.as_tensor(data[label_key])[0].cpu().numpy())
        masks.append(brain_mask(image)[0].cpu().numpy())
    threshold, dice = best_dice_threshold(maps, labels, masks)
    return {"threshold": threshold, "dice": dice, "studies": len(maps)}
