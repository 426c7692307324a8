"""The ``preprocess`` workflow: prepare a dataset once. Every study is loaded, checked, registered to the atlas (when
needed) and optionally histogram-matched by the first steps of the bundle's preprocessing, and written with a
manifest, so that training on BraTS, Shifts or a hospital's own scans is a config change.

    python -m monai.bundle run preprocess --bundle_root bundle \
        --config_file "['bundle/configs/common.yaml','bundle/configs/preprocess.yaml']" \
        --dataset_dir RAW_STUDIES_OR_DATALIST --output_dir PREPARED

writes ``PREPARED/<name>/<name>_{t1,t1c,t2,flair}.nii.gz`` (atlas grid, float32), ``<name>_seg.nii.gz`` when the
study has a label, ``transform.tfm`` for registered studies, and ``PREPARED/datalist.json`` with the same lists
as the input (a folder becomes a "training" list). Studies whose files exist are skipped, so a stopped run
resumes; every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scripts import MODALITIES, as_bool, as_flag_or_auto
from scripts.files import atomic_write_bytes, write_nifti
from scripts.native import matrix_transform, write_transform
from scripts.progress import progress
from scripts.studies import check_study, list_studies

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


def prepare_dataset(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    transform: Callable[[dict], dict],
    register: bool | str = "auto",
    overwrite: bool | str = False,
) -> Path:
    """Prepare every study of ``dataset_dir`` into ``output_dir``; returns the manifest ``output_dir/datalist.json``.

    ``transform`` is the preprocessing up to the histogram matching (``configs/preprocess.yaml``:
    ``pre#load`` -> ``check`` -> ``register`` -> ``match``), giving one MetaTensor per modality.
    """
    out = Path(output_dir)
    register, overwrite = as_flag_or_auto(register), as_bool(overwrite)
    manifest: dict[str, list[dict[str, str]]] = {}
    for split, studies in _datalist_lists(dataset_dir).items():
        manifest[split] = []
        for study in progress(studies, desc=f"preparing {split}", unit="study"):
            check_study(study, same_grid=register is False)
            targets = _prepared_paths(out, study["name"], "label" in study)
            if overwrite or not all(p.exists() for p in targets.values()):
                _prepare_study(study, targets, transform)
            manifest[split].append({"name": study["name"], **{k: str(p.relative_to(out)) for k, p in targets.items()}})
    target = out / "datalist.json"
    atomic_write_bytes(json.dumps(manifest, indent=2).encode(), target)
    logger.info("prepared %d studies; manifest %s", sum(len(v) for v in manifest.values()), target)
    return target


def _prepare_study(study: dict[str, str], targets: dict[str, Path], transform: Callable[[dict], dict]) -> None:
    data = transform(dict(study))
    if data.get("atlas_transform") is not None:
        write_transform(matrix_transform(data["atlas_transform"]), targets[MODALITIES[0]].parent / "transform.tfm")
    if "label" in targets:
        label = data["label"]
        write_nifti((np.asarray(label[0]) > 0).astype(np.uint8), np.asarray(label.affine), targets["label"], np.uint8)
    for m in MODALITIES:  # modalities last: a study is complete once all its files exist
        img = data[m]
        write_nifti(np.asarray(img[0], dtype=np.float32), np.asarray(img.affine), targets[m], np.float32)
