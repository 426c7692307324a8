"""Prepare a dataset once: register every study to the SRI24 atlas (when needed), optionally match histograms, and
write the results with a manifest, so that training on BraTS, Shifts or a hospital's own scans is a config change.

    python -m monai.bundle run preprocess --config_file bundle/configs/preprocess.yaml --bundle_root bundle \
        --dataset_dir RAW_STUDIES_OR_DATALIST --output_dir PREPARED

writes ``PREPARED/<name>/<name>_{t1,t1c,t2,flair}.nii.gz`` (atlas grid, float32), ``<name>_seg.nii.gz`` when the
study has a label, ``transform.tfm`` for registered studies, and ``PREPARED/datalist.json`` with the same lists
as the input (a folder becomes a "training" list). Studies whose files exist are skipped, so a stopped run
resumes; every file is written atomically. Also builds the histogram landmarks the bundle ships
(:func:`build_histogram_landmarks`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from scripts import MODALITIES, as_bool, as_flag_or_auto
from scripts.preprocess import HistogramMatchd
from scripts.registration import (
    DEFAULT_PERCENTILES,
    RegisterToAtlasd,
    build_landmarks,
    matrix_transform,
    save_landmarks,
    write_transform,
)
from scripts.studies import atomic_write_bytes, check_study, list_studies, write_nifti

logger = logging.getLogger(__name__)


def _datalist_lists(dataset_dir: str | os.PathLike) -> dict[str, list[dict[str, str]]]:
    """The study lists of a datalist JSON (every list it holds) or of a folder (one "training" list)."""
    path = Path(dataset_dir)
    if path.is_file():
        content = json.loads(path.read_text())
        keys = [k for k, v in content.items() if isinstance(v, list)] if isinstance(content, dict) else ["training"]
        return {k: list_studies(path, k) for k in keys}
    return {"training": list_studies(path)}


def _prepared_paths(folder: Path, name: str, with_label: bool) -> dict[str, Path]:
    paths = {m: folder / name / f"{name}_{m}.nii.gz" for m in MODALITIES}
    if with_label:
        paths["label"] = folder / name / f"{name}_seg.nii.gz"
    return paths


def _iterate(items: Sequence, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are a nicety
        return items
    return tqdm(items, desc=desc, unit="study")


def prepare_dataset(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    register: bool | str = "auto",
    reference: str = "t1",
    histogram_matching: bool | str = False,
    histogram_landmarks: str | os.PathLike | None = None,
    overwrite: bool | str = False,
) -> Path:
    """Prepare every study of ``dataset_dir`` into ``output_dir``; returns the manifest ``output_dir/datalist.json``."""
    out = Path(output_dir)
    register, overwrite = as_flag_or_auto(register), as_bool(overwrite)
    loader = RegisterToAtlasd(keys=list(MODALITIES), reference=reference, register=register)
    matcher = None
    if as_bool(histogram_matching):
        matcher = HistogramMatchd(keys=list(MODALITIES), landmarks=histogram_landmarks)
    manifest: dict[str, list[dict[str, str]]] = {}
    for split, studies in _datalist_lists(dataset_dir).items():
        manifest[split] = []
        for study in _iterate(studies, f"preparing {split}"):
            check_study(study, same_grid=register is False)
            targets = _prepared_paths(out, study["name"], "label" in study)
            if overwrite or not all(p.exists() for p in targets.values()):
                _prepare_study(study, targets, loader, matcher)
            manifest[split].append({"name": study["name"], **{k: str(p.relative_to(out)) for k, p in targets.items()}})
    target = out / "datalist.json"
    atomic_write_bytes(json.dumps(manifest, indent=2).encode(), target)
    logger.info("prepared %d studies; manifest %s", sum(len(v) for v in manifest.values()), target)
    return target


def _prepare_study(study: dict[str, str], targets: dict[str, Path], loader, matcher) -> None:
    data = loader(dict(study))
    if matcher is not None:
        data = matcher(data)
    if "atlas_transform" in data:
        write_transform(matrix_transform(data["atlas_transform"]), targets[MODALITIES[0]].parent / "transform.tfm")
    if "label" in targets:
        label = data["label"]
        write_nifti((np.asarray(label[0]) > 0).astype(np.uint8), np.asarray(label.affine), targets["label"], np.uint8)
    for m in MODALITIES:  # modalities last: a study is complete once all its files exist
        img = data[m]
        write_nifti(np.asarray(img[0], dtype=np.float32), np.asarray(img.affine), targets[m], np.float32)


def build_histogram_landmarks(
    dataset_dir: str | os.PathLike,
    output: str | os.PathLike,
    datalist_key: str = "training",
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    max_studies: int = 50,
) -> Path:
    """Build Nyul landmarks per modality from (at most ``max_studies``) studies already on one grid each, e.g. a
    prepared dataset, and save them to ``output`` (JSON). Voxels that are 0 (outside the brain) are ignored."""
    path = Path(dataset_dir)
    studies = list_studies(path, datalist_key) if path.is_file() else list_studies(path)
    studies = studies[:max_studies]
    loader = RegisterToAtlasd(keys=list(MODALITIES), register=False, label_key=None)
    volumes: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
    for study in _iterate(studies, "reading"):
        data = loader({m: study[m] for m in MODALITIES})
        for m in MODALITIES:
            volumes[m].append(torch.as_tensor(data[m])[0].numpy())
    landmarks = {m: build_landmarks(volumes[m], None, percentiles) for m in MODALITIES}
    return save_landmarks(output, landmarks, percentiles)
