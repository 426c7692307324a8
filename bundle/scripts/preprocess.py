"""The ``preprocess`` workflow: prepare a dataset once. Every study is loaded, checked, registered to the atlas (when
needed) and optionally histogram-matched by the first steps of the bundle's preprocessing, and written with a
manifest, so that training on BraTS, Shifts or a hospital's own scans is a config change.

    python -m monai.bundle run preprocess --bundle_root bundle \
        --config_file "['bundle/configs/inference.yaml','bundle/configs/preprocess.yaml']" \
        --dataset_dir RAW_STUDIES_OR_DATALIST --output_dir PREPARED

writes ``PREPARED/<name>/<name>_<modality>.nii.gz`` (each configured modality; atlas grid, float32),
``<name>_seg.nii.gz`` when the study has a label, ``transform.tfm`` for registered studies, and
``PREPARED/datalist.json`` with the same lists as the input (a folder becomes a "training" list). Studies whose files
exist are skipped, so a stopped run resumes; every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scripts import MODALITIES, as_bool, as_flag_or_auto
from scripts.batch import BatchReport, failures_file, run_studies
from scripts.errors import Failure, StudyError
from scripts.files import atomic_write_bytes, write_nifti
from scripts.modalities import checked
from scripts.native import matrix_transform, write_transform
from scripts.selection import check_study, check_writable
from scripts.studies import scan_studies

logger = logging.getLogger(__name__)


def _datalist_lists(
    dataset_dir: str | os.PathLike, modalities: Sequence[str] = MODALITIES
) -> dict[str, tuple[list[dict[str, str]], list[Failure]]]:
    """The study lists (and their failures) of a datalist JSON (every list it holds) or of a folder (one
    "training" list)."""
    path = Path(dataset_dir)
    if path.is_file():
        try:
            content = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StudyError(f"{path}: not a readable datalist JSON ({err})") from err
        keys = [k for k, v in content.items() if isinstance(v, list)] if isinstance(content, dict) else ["training"]
        return {k: scan_studies(path, k, modalities) for k in keys}
    return {"training": scan_studies(path, modalities=modalities)}


def _prepared_paths(folder: Path, name: str, with_label: bool, modalities: Sequence[str]) -> dict[str, Path]:
    paths = {m: folder / name / f"{name}_{m}.nii.gz" for m in modalities}
    if with_label:
        paths["label"] = folder / name / f"{name}_seg.nii.gz"
    return paths


@dataclass
class Prepared:
    """What :func:`prepare_dataset` did: the manifest's path and the batch report (done, skipped, failed)."""

    manifest: Path
    report: BatchReport

    def raise_if_failed(self, verb: str = "prepared") -> None:
        self.report.raise_if_failed(verb)


def prepare_dataset(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    transform: Callable[[dict], dict],
    register: bool | str = "auto",
    overwrite: bool | str = False,
    on_error: str = "continue",
    modalities: Sequence[str] = MODALITIES,
) -> Prepared:
    """Prepare every study of ``dataset_dir`` into ``output_dir`` and write the manifest ``output_dir/datalist.json``
    (the studies prepared, now or before); ``failures.json`` lists those that failed (``scripts.batch``).

    ``transform`` is the preprocessing up to the histogram matching (``configs/preprocess.yaml``:
    ``pre#load`` -> ``check`` -> ``register`` -> ``match``), giving one MetaTensor per modality of ``modalities``.
    """
    modalities = checked(modalities)
    out = Path(output_dir)
    register, overwrite = as_flag_or_auto(register), as_bool(overwrite)
    check_writable(out)
    report = BatchReport()
    manifest: dict[str, list[dict[str, str]]] = {}
    for split, (studies, failures) in _datalist_lists(dataset_dir, modalities).items():
        report.failures += failures
        manifest[split] = []

        def prepare(study: dict[str, str], entries: list = manifest[split]) -> None:
            check_study(study, modalities, same_grid=register is False)
            targets = _prepared_paths(out, study["name"], "label" in study, modalities)
            if not overwrite and all(p.exists() for p in targets.values()):
                report.skipped.append(study["name"])
            else:
                _prepare_study(study, targets, transform, modalities)
            entries.append({"name": study["name"], **{k: str(p.relative_to(out)) for k, p in targets.items()}})

        def clean_up(study: dict[str, str]) -> None:  # a study that failed half-way leaves none of its files
            prepared = _prepared_paths(out, study["name"], True, modalities).values()
            for path in [*prepared, out / study["name"] / "transform.tfm"]:
                path.unlink(missing_ok=True)
            folder = out / study["name"]
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

        done = len(report.done)
        run_studies(studies, prepare, report, on_error, clean_up, desc=f"preparing {split}")
        report.done[done:] = [n for n in report.done[done:] if n not in report.skipped]
    target = out / "datalist.json"
    atomic_write_bytes(json.dumps(manifest, indent=2).encode(), target)
    report.write(failures_file(out))
    logger.info("prepared %d studies; manifest %s", sum(len(v) for v in manifest.values()), target)
    return Prepared(target, report)


def _prepare_study(
    study: dict[str, str], targets: dict[str, Path], transform: Callable[[dict], dict], modalities: Sequence[str]
) -> None:
    data = transform(dict(study))
    if data.get("atlas_transform") is not None:
        write_transform(matrix_transform(data["atlas_transform"]), targets[modalities[0]].parent / "transform.tfm")
    if "label" in targets:
        label = data["label"]
        write_nifti((np.asarray(label[0]) > 0).astype(np.uint8), np.asarray(label.affine), targets["label"], np.uint8)
    for m in modalities:  # modalities last: a study is complete once all its files exist
        img = data[m]
        write_nifti(np.asarray(img[0], dtype=np.float32), np.asarray(img.affine), targets[m], np.float32)
