"""Writing a study's results: ``anomaly.nii.gz`` (float32 map), ``segmentation.nii.gz`` (uint8), ``segmentation.json``
(how it was thresholded: rule, threshold, voxel set, share of the brain, whether the guard rejected it; the study's
scores) and ``overview.png``; ``zmap.nii.gz`` when a calibration gives a normative model; optionally
``preprocessed.nii.gz`` and ``transform.tfm``.

Files go to ``<output_dir>/<study name>/`` (a BIDS study's to its derivatives names: ``scripts.bids``), each written
atomically; the segmentation is written last, so a study
whose segmentation exists is complete (see :func:`scripts.selection.select_studies`).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scripts import MODALITIES, as_bool
from scripts.dicom_objects import DICOM_FILES
from scripts.files import atomic_write_bytes, write_nifti
from scripts.modalities import channel_of, preferred
from scripts.native import matrix_transform, write_transform
from scripts.selection import study_output
from scripts.studies import study_name

logger = logging.getLogger(__name__)

ANOMALY_FILE = "anomaly.nii.gz"
ZMAP_FILE = "zmap.nii.gz"
SEGMENTATION_FILE = "segmentation.nii.gz"
SEGMENTATION_INFO_FILE = "segmentation.json"
OVERVIEW_FILE = "overview.png"
PREPROCESSED_FILE = "preprocessed.nii.gz"
TRANSFORM_FILE = "transform.tfm"
STUDY_FILES: tuple[str, ...] = (
    ANOMALY_FILE,
    ZMAP_FILE,
    SEGMENTATION_FILE,
    SEGMENTATION_INFO_FILE,
    OVERVIEW_FILE,
    PREPROCESSED_FILE,
    TRANSFORM_FILE,
    *DICOM_FILES,
)
"""Every file a study's outputs may hold (``<output_dir>/<study>/``)."""


def overview_slices(brain: np.ndarray, a: np.ndarray, seg: np.ndarray, n_slices: int = 5) -> list[tuple[int, str]]:
    """The axial slices an overview shows, each with why: one reference slice (the one with the most brain), then
    the slice where the map peaks inside each of the largest segmented components, then, to fill up, the slices
    whose map maximum inside the brain is highest, at least 3 slices apart. Inputs (H, W, D); returns
    ``[(slice, reason), ...]`` with the reference first and the rest in slice order."""
    from scipy import ndimage

    depth = a.shape[-1]
    area = brain.reshape(-1, depth).sum(axis=0)
    reference = int(np.argmax(area)) if area.any() else depth // 2
    picks: list[tuple[int, str]] = []

    def free(k: int) -> bool:
        return all(abs(k - p) >= 3 for p, _ in picks) and abs(k - reference) >= 1

    components, n = ndimage.label(seg > 0)
    if n:
        sizes = np.bincount(components.ravel())[1:]
        for rank, label in enumerate(np.argsort(sizes)[::-1][: n_slices - 1] + 1):
            inside = np.where(components == label, a, -np.inf)
            k = int(np.unravel_index(np.argmax(inside), a.shape)[-1])
            if free(k):
                picks.append((k, f"component {rank + 1} ({int(sizes[label - 1])} voxels)"))
    peaks = np.where(brain, a, -np.inf).reshape(-1, depth).max(axis=0)
    for k in np.argsort(peaks)[::-1]:
        if len(picks) >= n_slices - 1 or not np.isfinite(peaks[k]):
            break
        if free(int(k)):
            picks.append((int(k), "map peak"))
    return [(reference, "reference"), *sorted(picks)]


def overview_png(
    flair: np.ndarray,
    a: np.ndarray,
    seg: np.ndarray,
    n_slices: int = 5,
    extra_rows: dict[str, np.ndarray] | None = None,
    title: str = "",
    image_name: str = "FLAIR",
) -> bytes:
    """A PNG of the axial slices :func:`overview_slices` picks, each titled with its number and why; rows FLAIR (or
    the modality ``image_name`` names, given as ``flair``), anomaly map (with a colour bar), segmentation over that
    image, then one row per ``extra_rows`` map (e.g. a z-map). Inputs (H, W, D) on one grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    brain = flair != 0
    picks = overview_slices(brain, a, seg, n_slices)
    rows = [(image_name, None), ("anomaly map", a), ("segmentation", None), *(extra_rows or {}).items()]
    fig, axes = plt.subplots(len(rows), len(picks), figsize=(2.3 * len(picks) + 0.8, 2.3 * len(rows)), squeeze=False)
    for r, (name, values) in enumerate(rows):
        inside = values[brain] if values is not None and brain.any() else np.zeros(1)
        lo = float(np.percentile(inside, 0.5)) if values is not None and name != "anomaly map" else 0.0
        hi = float(np.percentile(inside, 99.5)) if values is not None else 1.0
        image = None
        for j, (k, reason) in enumerate(picks):
            ax = axes[r, j]
            f = np.rot90(flair[..., k])
            if r == 0:
                ax.imshow(f, cmap="gray")
                ax.set_title(f"slice {k}\n{reason}", fontsize=8)
            elif name == "segmentation":
                ax.imshow(f, cmap="gray")
                ax.imshow(np.ma.masked_equal(np.rot90(seg[..., k]), 0), cmap="autumn", alpha=0.6)
            elif name == "anomaly map":
                image = ax.imshow(np.rot90(values[..., k]), cmap="inferno", vmin=lo, vmax=max(hi, lo + 1e-12))
            else:  # a signed map such as the z-map: the background (no value) in black, not at the scale's middle
                shown = np.ma.masked_where(np.rot90(~brain[..., k]), np.rot90(values[..., k]))
                ax.set_facecolor("black")
                image = ax.imshow(shown, cmap="inferno", vmin=lo, vmax=max(hi, lo + 1e-12))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name)
        if image is not None:
            fig.colorbar(image, ax=list(axes[r]), fraction=0.02, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


class SaveOverviewd(MapTransform):
    """Write ``overview.png`` from one channel of ``image_key`` (``modality`` among ``modalities``: FLAIR by default,
    else the first configured modality), the map and the segmentation (scoring grid); a z-map row when
    ``data[zmap_key]`` exists. A ``modality`` that is not configured stops with one line."""

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        image_key: str = "image",
        seg_key: str = "seg",
        modalities: Sequence[str] = MODALITIES,
        modality: str | None = None,
        enabled: bool | str = True,
        zmap_key: str = "zmap",
    ) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.modality = preferred(modalities) if modality in (None, "", "null") else str(modality)
        self.flair_channel = channel_of(modalities, self.modality, "the overview (overview_modality)")
        self.image_key, self.seg_key = image_key, seg_key
        self.zmap_key = zmap_key
        self.enabled = as_bool(enabled)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if not self.enabled:
            return d
        for key in self.key_iterator(d):
            flair = d[self.image_key][self.flair_channel].detach().cpu().numpy()
            a = d[key][0].detach().cpu().numpy()
            seg = d[self.seg_key][0].detach().cpu().numpy()
            zmap = d.get(self.zmap_key)
            extra = None if zmap is None else {"z-map": zmap[0].detach().cpu().numpy()}
            png = overview_png(flair, a, seg, extra_rows=extra, title=study_name(d), image_name=self.modality.upper())
            atomic_write_bytes(png, study_output(self.output_dir, d, OVERVIEW_FILE))
        return d


class SaveStudyOutputsd(MapTransform):
    """Write the map (``keys``), the z-map (``zmap_key``, when present) and the segmentation (``seg_key``) of a study as
    NIfTI on their MetaTensor's grid; the segmentation last.

    Use after ``Invertd``: the tensors are then on the study's input grid and carry its affine.
    """

    def __init__(self, keys: KeysCollection, output_dir: str, seg_key: str = "seg", zmap_key: str = "zmap") -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.seg_key = seg_key
        self.zmap_key = zmap_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            a, seg = d[key], d[self.seg_key]
            affine = np.asarray(a.affine.cpu().numpy() if hasattr(a, "affine") else np.eye(4), dtype=np.float64)
            path = {f: study_output(self.output_dir, d, f) for f in STUDY_FILES}
            write_nifti(a[0].detach().cpu().numpy(), affine, path[ANOMALY_FILE], np.float32)
            if d.get(self.zmap_key) is not None:
                write_nifti(d[self.zmap_key][0].detach().cpu().numpy(), affine, path[ZMAP_FILE], np.float32)
            info = d.get(f"{self.seg_key}_info")
            if info is not None:
                text = json.dumps({"study": study_name(d), **info}, indent=2) + "\n"
                atomic_write_bytes(text.encode(), path[SEGMENTATION_INFO_FILE])
            seg_np = (seg[0].detach().cpu().numpy() > 0.5).astype(np.uint8)
            write_nifti(seg_np, affine, path[SEGMENTATION_FILE], np.uint8)
            logger.info("%s: wrote %s and %s", study_name(d), path[ANOMALY_FILE], path[SEGMENTATION_FILE])
        return d


class SavePreprocessedd(MapTransform):
    """Write the preprocessed image (C channels on the atlas grid) as ``preprocessed.nii.gz`` and, for a registered
    study, the composed transform as ``transform.tfm`` (atlas points -> native reference points, ITK convention)."""

    # what it writes, and where: never what is scored
    not_settings = ("output_dir", "enabled")

    def __init__(self, keys: KeysCollection, output_dir: str, enabled: bool | str = True) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.enabled = as_bool(enabled)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if not self.enabled:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            volume = np.moveaxis(img.detach().cpu().numpy(), 0, -1)  # (X, Y, Z, C)
            target = study_output(self.output_dir, d, PREPROCESSED_FILE)
            write_nifti(volume, np.asarray(img.affine, dtype=np.float64), target, np.float32)
        if d.get("atlas_transform") is not None:
            write_transform(matrix_transform(d["atlas_transform"]), study_output(self.output_dir, d, TRANSFORM_FILE))
        return d
