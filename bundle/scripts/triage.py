"""One number per study, to sort a worklist (beyond the paper), and the ranked ``scores.csv`` of a run.

:func:`study_scores` gives the candidate scores of a study from its post-processed map ``a``, its z-map and its
segmentation, on the scoring grid:

* ``zmap_q999``: the 99.9th percentile of the z-map in the brain (needs a calibration: ``scripts.normative``);
* ``anomaly_q999``: the same percentile of the anomaly map itself (needs nothing);
* ``lesion_volume_ml``: the volume the segmentation marks, in ml.

``study_score`` (inference.yaml) names the one reported as the study's score; the model card gives the
measurement it was chosen by (study-level AUROC, healthy against anomalous made studies). A rule that needs the
z-map falls back to ``anomaly_q999`` when there is none, and the record says so. Each study's scores go into its
``segmentation.json``; :class:`ScoresTable` collects those of an output folder into ``scores.csv``, highest first.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scripts.bids import OUTPUT_NAMES
from scripts.files import atomic_write_bytes
from scripts.grid import voxel_ml
from scripts.intensity import brain_mask
from scripts.ranks import meet

logger = logging.getLogger(__name__)

STUDY_SCORES: tuple[str, ...] = ("zmap_q999", "anomaly_q999", "lesion_volume_ml")
SCORES_FILE = "scores.csv"
QUANTILE = 0.999


def study_scores(
    a: np.ndarray, brain: np.ndarray, zmap: np.ndarray | None, seg: np.ndarray | None, voxel_ml: float
) -> dict[str, float]:
    """The candidate scores of one study (module docstring); inputs (H, W, D) on one grid, ``brain`` bool.
    ``zmap`` or ``seg`` None leaves their scores out."""
    brain = np.asarray(brain, dtype=bool)
    if not brain.any():
        brain = np.ones_like(brain)
    scores = {"anomaly_q999": float(np.quantile(np.asarray(a)[brain], QUANTILE))}
    if zmap is not None:
        scores["zmap_q999"] = float(np.quantile(np.asarray(zmap)[brain], QUANTILE))
    if seg is not None:  # the written segmentation is 0 outside the brain
        scores["lesion_volume_ml"] = float(np.count_nonzero((np.asarray(seg) > 0.5) & brain) * voxel_ml)
    return scores


class ScoreStudyd(MapTransform):
    """Add a study's scores (:func:`study_scores`) to ``data[seg_key + "_info"]`` (what ``segmentation.json``
    holds): every candidate, ``study_score`` by ``rule`` and ``study_score_rule``. Inputs on the scoring grid."""

    def __init__(
        self,
        keys: KeysCollection,
        rule: str = "zmap_q999",
        seg_key: str = "seg",
        zmap_key: str = "zmap",
        image_key: str = "image",
    ) -> None:
        super().__init__(keys)
        if rule not in STUDY_SCORES:
            raise ValueError(f"study_score must be one of {STUDY_SCORES}, got {rule!r}")
        self.rule, self.seg_key, self.zmap_key, self.image_key = rule, seg_key, zmap_key, image_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            a = d[key]
            zmap = d.get(self.zmap_key)
            seg = d.get(self.seg_key)
            scores = study_scores(
                a[0].detach().cpu().numpy(),
                brain_mask(d[self.image_key])[0].cpu().numpy(),
                None if zmap is None else zmap[0].detach().cpu().numpy(),
                None if seg is None else seg[0].detach().cpu().numpy(),
                voxel_ml(d[self.image_key]),  # the map's own metadata need not carry the grid
            )
            rule = self.rule if self.rule in scores else "anomaly_q999"
            info = dict(d.get(f"{self.seg_key}_info") or {})
            info.update({"study_score": scores[rule], "study_score_rule": rule, "scores": scores})
            if "lesion_volume_ml" in scores:
                info["lesion_volume_ml"] = scores["lesion_volume_ml"]
            d[f"{self.seg_key}_info"] = info
        return d


class ScoresTable:
    """``scores.csv`` of an output folder: one row per study with a ``segmentation.json`` holding a study score,
    ranked by score (highest first): rank, study, score, score rule, lesion volume (ml), segmentation rule,
    rejected. Studies of earlier runs into the same folder are included, so a resumed run ranks them all.

    Under torchrun (``world_size`` > 1) every process calls :meth:`write`; they meet first
    (:func:`scripts.ranks.meet`) and only ``rank`` 0 writes, once every rank's studies are on disk."""

    def __init__(self, output_dir: str | os.PathLike, rank: int | str = 0, world_size: int | str = 1) -> None:
        self.output_dir = Path(output_dir)
        self.rank, self.world_size = int(rank), int(world_size)

    def rows(self) -> list[dict[str, object]]:
        rows = []
        bids_info = f"sub-*/**/*_{OUTPUT_NAMES['segmentation.json']}"  # a BIDS input's derivatives
        for info_file in sorted([*self.output_dir.glob("*/segmentation.json"), *self.output_dir.glob(bids_info)]):
            try:
                info = json.loads(info_file.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if "study_score" not in info:
                continue
            rows.append(
                {
                    "study": info.get("study", info_file.parent.name),
                    "score": float(info["study_score"]),
                    "score_rule": info.get("study_score_rule", ""),
                    "lesion_volume_ml": info.get("lesion_volume_ml", ""),
                    "segmentation_rule": info.get("rule", ""),
                    "rejected": bool(info.get("rejected", False)),
                }
            )
        rows.sort(key=lambda r: (-r["score"], r["study"]))
        return [{"rank": i + 1, **r} for i, r in enumerate(rows)]

    def write(self) -> Path | None:
        """Write ``scores.csv`` atomically (nothing when no study has a score), on rank 0 after every rank has met;
        returns its path, or None (no score, or a rank other than 0)."""
        meet(self.world_size)
        if self.rank != 0:
            return None
        rows = self.rows()
        if not rows:
            return None
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        path = atomic_write_bytes(buffer.getvalue().encode(), self.output_dir / SCORES_FILE)
        logger.info("ranked %d studies in %s", len(rows), path)
        return path
