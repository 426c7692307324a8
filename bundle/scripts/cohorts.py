"""A healthy cohort's datalist: studies whose files carry the study id in their names, gathered from one or more
folders (IXI keeps each contrast in its own download: ``IXI-T1/IXI002-Guys-0828-T1.nii.gz``,
``IXI-T2/IXI002-Guys-0828-T2.nii.gz``, ``IXI-PD/IXI002-Guys-0828-PD.nii.gz``), split into ``training`` and
``validation`` for ``run training`` and ``run calibrate``. Recipe: ``docs/ixi.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from scripts.errors import StudyError
from scripts.files import atomic_write_bytes
from scripts.modalities import checked
from scripts.studies import NIFTI_SUFFIXES, group_by_study, study_files


def cohort_files(folders: Sequence[str | os.PathLike]) -> list[Path]:
    """Every NIfTI file under ``folders`` (searched recursively, hidden files left out), sorted.

    Raises:
        StudyError: a folder does not exist, or none holds a NIfTI file.
    """
    files: list[Path] = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise StudyError(f"{folder}: no such folder")
        files += [
            p
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(NIFTI_SUFFIXES)
        ]
    if not files:
        raise StudyError(f"{', '.join(map(str, folders))}: no NIfTI file found")
    return sorted(files)


def make_cohort_datalist(
    folders: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    modalities: Sequence[str] = ("t1", "t2", "pd"),
    validation_fraction: float = 0.1,
    absolute: bool = False,
) -> dict[str, object]:
    """Write the datalist JSON of a cohort: one item per study id (:func:`scripts.studies.file_study_id`) with its
    ``modalities`` (and a ``mask`` when one is named after the study), sorted by name; the last
    ``validation_fraction`` of them (at least one, when there are two or more) is ``validation``. Studies lacking a
    modality or holding two files of one are left out and named in the summary.

    Returns:
        ``path`` (the JSON), ``counts`` (studies per list) and ``left_out`` (``<id>: <why>`` lines).

    Raises:
        StudyError: no folder or file; no study has every modality.
    """
    modalities = checked(modalities)
    output = Path(output).expanduser()
    base = os.path.abspath(output.parent)
    items, left_out = [], []
    for name, files in sorted(group_by_study(cohort_files(folders)).items()):
        if not name:
            left_out += [f"{p}: the file name carries no study id" for p in files]
            continue
        try:
            found = study_files(files, name, modalities)
        except StudyError as err:
            left_out.append(str(err))
            continue
        paths = {k: os.path.abspath(v) for k, v in found.items()}
        items.append({"name": name, **{k: v if absolute else os.path.relpath(v, base) for k, v in paths.items()}})
    if not items:
        raise StudyError(
            f"{', '.join(map(str, folders))}: no study has all of {', '.join(modalities)}"
            + (f" (e.g. {left_out[0]})" if left_out else "")
        )
    n_val = max(1, round(len(items) * float(validation_fraction))) if len(items) > 1 else 0
    datalist = {"training": items[: len(items) - n_val], "validation": items[len(items) - n_val :]}
    atomic_write_bytes((json.dumps(datalist, indent=2) + "\n").encode(), output)
    return {"path": str(output), "counts": {k: len(v) for k, v in datalist.items()}, "left_out": left_out}
