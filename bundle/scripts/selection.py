"""The studies a workflow will do: each study's headers checked before any voxel is read, those done already
skipped (a stopped run resumes), one share of them per torchrun process, and where each study's outputs go.

:func:`select_studies` is the ``studies`` item of the configs; the studies themselves are found on disk by
``scripts.studies`` (a datalist, a folder, a BIDS dataset) or, for DICOM, by ``scripts.dicom_series``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
from scripts import KNOWN_MODALITIES, MODALITIES, as_bool, as_flag_or_auto, bids
from scripts.errors import Failure, StudyError
from scripts.studies import OPTIONAL_KEYS, scan_studies, study_name


def check_study(study: dict[str, str], keys: Sequence[str] | None = None, same_grid: bool = True) -> None:
    """Check a study's headers before any voxel is used: readable, 3D (or 4D with a singleton), and (with
    ``same_grid``) all on one grid. Studies that will be registered may have their modalities on different grids.
    ``keys``: the modalities to check (None: those the study holds).

    Raises:
        StudyError: naming the file and what is wrong with it.
    """
    from scripts.grid import Grid
    from scripts.grid import same_grid as grids_equal

    reference: tuple[str, Grid] | None = None
    keys = [k for k in KNOWN_MODALITIES if k in study] if keys is None else list(keys)
    for key in [*keys, *[k for k in OPTIONAL_KEYS if k in study]]:
        if key not in study:
            raise StudyError(f"study {study.get('name', '?')}: missing modality '{key}'")
        fname = study[key]
        if not Path(fname).is_file():
            raise StudyError(f"{fname}: no such file")
        try:
            img = nib.load(fname)
        except Exception as err:  # nibabel raises several types for unreadable files
            raise StudyError(f"{fname}: unreadable as NIfTI ({err})") from err
        shape = img.shape
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) != 3:
            raise StudyError(f"{fname}: expected a 3D volume, got shape {img.shape}")
        grid = Grid.from_affine(shape, img.affine)
        if reference is None or not same_grid:
            reference = reference or (fname, grid)
            continue
        ref_name, ref = reference
        if not grids_equal(grid, ref, tol_mm=1e-3, tol_direction=1e-3):
            raise StudyError(
                f"{fname}: grid {tuple(shape)} differs from {ref_name} {tuple(ref.size)} "
                "(shape or affine); the modalities must be co-registered on one grid"
            )


@dataclass
class StudySelection:
    """The studies a workflow will do: ``studies`` to score, ``skipped`` (names of those done already) and
    ``failures`` (those whose headers or files refused them before any voxel was read)."""

    studies: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.studies)


def study_output(output_dir: str | os.PathLike, study: Mapping, filename: str) -> Path:
    """Where a study's output ``filename`` (``anomaly.nii.gz``, ...) goes: ``<output_dir>/<name>/<filename>``, or for
    a study of a BIDS dataset its derivatives name (``scripts.bids.OUTPUT_NAMES``) under ``<output_dir>``. ``study``
    is a study dict or a (batched) data dict."""
    prefix = study.get(bids.PREFIX_KEY)
    if isinstance(prefix, (list, tuple)):
        prefix = prefix[0] if prefix else None
    if prefix:
        return Path(output_dir) / bids.output_name(str(prefix), filename)
    return Path(output_dir) / study_name(study) / filename


def study_folder(output_dir: str | os.PathLike, study: Mapping) -> Path:
    """The folder a study's outputs go to (:func:`study_output`)."""
    return study_output(output_dir, study, OUTPUT_PLACEHOLDER).parent


OUTPUT_PLACEHOLDER = "anomaly.nii.gz"


def check_writable(folder: str | os.PathLike) -> None:
    """StudyError unless files can be written in ``folder`` (made when missing), found before any scoring starts."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise StudyError(f"{folder}: the output folder cannot be written ({err.strerror or err})") from err


def select_studies(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    overwrite: bool | str = False,
    datalist_key: str = "testing",
    done_file: str = "segmentation.nii.gz",
    register: bool | str = False,
    rank: int = 0,
    world_size: int = 1,
    require_label: bool | str = False,
    modalities: Sequence[str] = MODALITIES,
    dicom_modalities: Mapping[str, Sequence[str]] | None = None,
    labels: bool | str = True,
) -> StudySelection:
    """The studies of ``dataset_dir`` (:func:`scan_studies`), each checked with :func:`check_study` (a study that
    fails is recorded, not fatal), less those whose ``<output_dir>/<name>/<done_file>`` exists already (unless
    ``overwrite``), so a stopped run resumes. Unless ``register`` is false, the modalities of a study may lie on
    different grids (registration aligns them). With ``require_label``, a study without a label fails; without
    ``labels``, a study's label is left out (not read, not checked): for ``run inference``, which does not use it (a
    BraTS-sized label is 34 MB as the preprocessing reads it). A BIDS
    dataset's outputs make a derivatives dataset: ``output_dir`` gets its ``dataset_description.json``.

    A ``dataset_dir`` of DICOM files (and no NIfTI) is read by ``scripts.dicom_series``: each DICOM study's series are
    placed as modalities by their tags (``dicom_modalities``) and converted into ``<output_dir>/.dicom/<study>/``; a
    DICOM study is done when its DICOM SEG exists too.

    Under torchrun (``rank``/``world_size`` from the environment), process ``rank`` takes every ``world_size``-th
    study of the sorted list, before finished ones are skipped: each study belongs to exactly one process.

    Raises:
        StudyError: the dataset is unusable as a whole (see :func:`scan_studies`), or ``output_dir`` cannot be
            written.
    """
    overwrite, require_label, labels = as_bool(overwrite), as_bool(require_label), as_bool(labels)
    if require_label and not labels:
        raise ValueError("require_label needs labels: a label cannot be required and left out")
    same_grid = as_flag_or_auto(register) is False
    if not 0 <= int(rank) < int(world_size):
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    check_writable(output_dir)
    from scripts.dicom_series import holds_dicom

    if holds_dicom(dataset_dir):
        from scripts.dicom_objects import SEG_FILE
        from scripts.dicom_series import CACHE_FOLDER, scan_dicom_studies

        if dicom_modalities is None:
            raise StudyError(f"{dataset_dir}: DICOM studies are read by run inference (no dicom_modalities here)")
        done_file = SEG_FILE  # written after segmentation.nii.gz (post#write_dicom after post#write)
        done = [] if overwrite else [p.parent.name for p in Path(output_dir).glob(f"*/{done_file}")]
        studies, failures, _ = scan_dicom_studies(dataset_dir, Path(output_dir) / CACHE_FOLDER, dicom_modalities, done)
        studies += [{"name": name} for name in done]  # skipped below
    else:
        studies, failures = scan_studies(dataset_dir, datalist_key, modalities)
        if any(bids.PREFIX_KEY in s for s in studies) and int(rank) == 0:
            bids.write_description(output_dir, dataset_dir)
    ordered = sorted([*[(s["name"], s) for s in studies], *[(f.study, f) for f in failures]], key=lambda x: x[0])
    mine = ordered[int(rank) :: int(world_size)]
    selection = StudySelection(failures=[item for _, item in mine if isinstance(item, Failure)])
    for name, study in mine:
        if isinstance(study, Failure):
            continue
        if len(study) == 1:  # a DICOM study done already (not converted again)
            selection.skipped.append(name)
            continue
        if not labels:
            study = {key: value for key, value in study.items() if key != "label"}
        try:
            check_study(study, modalities, same_grid=same_grid)
            if require_label and "label" not in study:
                raise StudyError(
                    f"study {name}: no label to evaluate against (a seg/label NIfTI in the study folder, or a "
                    "'label' entry in the datalist)"
                )
        except StudyError as err:
            selection.failures.append(Failure(name, str(err)))
            continue
        if not overwrite and study_output(output_dir, study, done_file).exists():
            selection.skipped.append(name)
        else:
            selection.studies.append(study)
    return selection
