"""The test studies of the frontier: made (synthetic) studies, preprocessed once by inference's configured
preprocessing and kept in the work folder."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench.configs import parsed
from benchmarks.faithful import FAMILIES  # its test set
from scripts.files import atomic_write_bytes
from scripts.intensity import brain_mask
from scripts.slices import brain_slices
from scripts.synthetic import make_dataset


@dataclass
class Study:
    """One preprocessed test study: image (C, H, W, D) on the scoring grid, its label and brain (H, W, D)."""

    name: str
    image: torch.Tensor
    label: np.ndarray
    brain: np.ndarray

    @cached_property
    def keep(self) -> torch.Tensor:
        """Indices of the axial slices that hold brain (those the cache scores)."""
        return brain_slices(self.image)

    def slices(self) -> torch.Tensor:
        """The brain slices x_0 (K, C, H, W) float32, on the preprocessed image's scale."""
        return self.image[..., self.keep].permute(3, 0, 1, 2).contiguous().float()


def prepare(work: Path, datalist: Path | None, start: int, count: int, n_made: int) -> list[Study]:
    """Studies ``start .. start + count - 1`` of each family of the made test set ``datalist`` (made with ``n_made``
    per family when not given), preprocessed once by inference's configured preprocessing."""
    if datalist is None:
        datalist = work / "data" / "test" / "datalist.json"
        if not datalist.is_file():
            make_dataset(datalist.parent, n_healthy=0, n_anomalous=n_made, lesion=list(FAMILIES), seed=7)
    items = json.loads(datalist.read_text())["testing"]
    items = [i for f in FAMILIES for i in [j for j in items if j["name"].startswith(f + "_")][start : start + count]]
    preprocessing = None
    studies = []
    for item in items:
        path = work / "prepared" / f"{item['name']}.npz"
        if not path.is_file():
            preprocessing = preprocessing or parsed("preprocessing", ["inference.yaml"])
            study = {k: (v if k == "name" else str(datalist.parent / v)) for k, v in item.items()}
            data = preprocessing(study)
            image = data["image"].float()
            buf = npz_bytes(
                image=image.numpy(),
                label=data["label"][0].numpy() > 0.5,
                brain=brain_mask(image)[0].numpy(),
            )
            atomic_write_bytes(buf, path)
        with np.load(path) as z:
            image = torch.from_numpy(z["image"])
            studies.append(Study(item["name"], image, z["label"], z["brain"]))
    return studies


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """``arrays`` as the bytes of an ``.npz`` file."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
