"""Writing a study's results: ``anomaly.nii.gz`` (float32 map), ``segmentation.nii.gz`` (uint8), ``segmentation.json``
(how it was thresholded: rule, threshold, voxel set, share of the brain, whether the guard rejected it) and
``overview.png``, optionally ``preprocessed.nii.gz`` and ``transform.tfm``.

Files go to ``<output_dir>/<study name>/``, each written atomically; the segmentation is written last, so a study
whose segmentation exists is complete (see :func:`scripts.studies.studies_to_score`).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from scripts import as_bool
from scripts.files import atomic_write_bytes, write_nifti
from scripts.native import matrix_transform, write_transform
from scripts.studies import study_name

logger = logging.getLogger(__name__)

ANOMALY_FILE = "anomaly.nii.gz"
SEGMENTATION_FILE = "segmentation.nii.gz"
SEGMENTATION_INFO_FILE = "segmentation.json"
OVERVIEW_FILE = "overview.png"
PREPROCESSED_FILE = "preprocessed.nii.gz"
TRANSFORM_FILE = "transform.tfm"


def overview_png(flair: np.ndarray, a: np.ndarray, seg: np.ndarray, n_slices: int = 5) -> bytes:
    """A PNG with ``n_slices`` axial slices (rows: FLAIR, anomaly map, segmentation over FLAIR). Inputs (H, W, D)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    brain = np.nonzero(flair.reshape(-1, flair.shape[-1]).any(axis=0))[0]
    lo, hi = (brain.min(), brain.max()) if brain.size else (0, flair.shape[-1] - 1)
    weights = seg.reshape(-1, seg.shape[-1]).sum(axis=0)
    centre = int(np.argmax(weights)) if weights.any() else (lo + hi) // 2
    span = max(1, (hi - lo) // 4)
    picks = np.clip(np.linspace(centre - span, centre + span, n_slices).round().astype(int), lo, hi)
    vmax = float(np.percentile(a[a > 0], 99.5)) if (a > 0).any() else 1.0
    fig, axes = plt.subplots(3, n_slices, figsize=(2.2 * n_slices, 6.6), squeeze=False)
    for j, k in enumerate(picks):
        f = np.rot90(flair[..., k])
        axes[0, j].imshow(f, cmap="gray")
        axes[0, j].set_title(f"slice {k}", fontsize=8)
        axes[1, j].imshow(np.rot90(a[..., k]), cmap="inferno", vmin=0, vmax=vmax)
        axes[2, j].imshow(f, cmap="gray")
        axes[2, j].imshow(np.ma.masked_equal(np.rot90(seg[..., k]), 0), cmap="autumn", alpha=0.6)
    for ax, label in zip(axes[:, 0], ("FLAIR", "anomaly map", "segmentation"), strict=True):
        ax.set_ylabel(label)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


class SaveOverviewd(MapTransform):
    """Write ``overview.png`` from the FLAIR channel of ``image_key``, the map and the segmentation (scoring grid)."""

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        image_key: str = "image",
        seg_key: str = "seg",
        flair_channel: int = 3,
        enabled: bool | str = True,
    ) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.image_key, self.seg_key, self.flair_channel = image_key, seg_key, flair_channel
        self.enabled = as_bool(enabled)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if not self.enabled:
            return d
        for key in self.key_iterator(d):
            flair = d[self.image_key][self.flair_channel].detach().cpu().numpy()
            a = d[key][0].detach().cpu().numpy()
            seg = d[self.seg_key][0].detach().cpu().numpy()
            atomic_write_bytes(overview_png(flair, a, seg), self.output_dir / study_name(d) / OVERVIEW_FILE)
        return d


class SaveStudyOutputsd(MapTransform):
    """Write the map (``keys``) and the segmentation (``seg_key``) of a study as NIfTI on their MetaTensor's grid.

    Use after ``Invertd``: the tensors are then on the study's input grid and carry its affine.
    """

    def __init__(self, keys: KeysCollection, output_dir: str, seg_key: str = "seg") -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.seg_key = seg_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        folder = self.output_dir / study_name(d)
        for key in self.key_iterator(d):
            a, seg = d[key], d[self.seg_key]
            affine = np.asarray(a.affine.cpu().numpy() if hasattr(a, "affine") else np.eye(4), dtype=np.float64)
            write_nifti(a[0].detach().cpu().numpy(), affine, folder / ANOMALY_FILE, np.float32)
            info = d.get(f"{self.seg_key}_info")
            if info is not None:
                text = json.dumps({"study": study_name(d), **info}, indent=2) + "\n"
                atomic_write_bytes(text.encode(), folder / SEGMENTATION_INFO_FILE)
            seg_np = (seg[0].detach().cpu().numpy() > 0.5).astype(np.uint8)
            write_nifti(seg_np, affine, folder / SEGMENTATION_FILE, np.uint8)
            logger.info("%s: wrote %s and %s", study_name(d), folder / ANOMALY_FILE, folder / SEGMENTATION_FILE)
        return d


class SavePreprocessedd(MapTransform):
    """Write the preprocessed image (C channels on the atlas grid) as ``preprocessed.nii.gz`` and, for a registered
    study, the composed transform as ``transform.tfm`` (atlas points -> native reference points, ITK convention)."""

    def __init__(self, keys: KeysCollection, output_dir: str, enabled: bool | str = True) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.enabled = as_bool(enabled)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if not self.enabled:
            return d
        folder = self.output_dir / study_name(d)
        for key in self.key_iterator(d):
            img = d[key]
            volume = np.moveaxis(img.detach().cpu().numpy(), 0, -1)  # (X, Y, Z, C)
            write_nifti(volume, np.asarray(img.affine, dtype=np.float64), folder / PREPROCESSED_FILE, np.float32)
        if d.get("atlas_transform") is not None:
            write_transform(matrix_transform(d["atlas_transform"]), folder / TRANSFORM_FILE)
        return d
