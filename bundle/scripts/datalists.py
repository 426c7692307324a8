"""BraTS 2021 datalist: the paper's subject splits turned into one MONAI datalist JSON.

The paper (Sec. 5.2) trains on the healthy slices of 938 BraTS 2021 subjects, validates on 62 and tests on 251, with
the splits of Kascenas et al. A copy of those splits ships in ``bundle/data/brats21_splits/`` as three CSV files
(``train.csv``, ``val.csv``, ``test.csv``), each a ``BraTS21ID`` header then one subject id per line.

:func:`make_brats21_datalist` reads an unpacked BraTS 2021 training folder (one folder per subject,
``BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz``) and writes one JSON with the lists
``training``, ``validation`` and ``testing``; every item has the keys ``name``, ``t1``, ``t1c``, ``t2``, ``flair``
and ``label``, the keys the bundle's configs read (``scripts.studies``). Paths are written relative to the JSON's
folder by default (the bundle, like MONAI's ``load_decathlon_datalist``, resolves them against that folder), so the
JSON and the data can be moved together; ``absolute=True`` writes absolute paths instead.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

from scripts.files import atomic_write_bytes

SPLITS_DIR = Path(__file__).resolve().parents[1] / "data" / "brats21_splits"
"""The paper's BraTS 2021 splits that ship with the bundle."""

SPLIT_FILES: dict[str, str] = {"training": "train.csv", "validation": "val.csv", "testing": "test.csv"}
"""Datalist key -> CSV file name in the splits folder."""

BRATS21_FILES: dict[str, str] = {"t1": "t1", "t1c": "t1ce", "t2": "t2", "flair": "flair", "label": "seg"}
"""Datalist key -> BraTS 2021 file suffix (``BraTS2021_XXXXX_<suffix>.nii.gz``)."""

SUBJECT_PATTERN = re.compile(r"^BraTS2021_\d{5}$")
CSV_HEADER = "BraTS21ID"
MAX_NAMED = 10


class DatalistError(ValueError):
    """The BraTS folder or a split file is unusable; the message names the file or folder and the problem."""


def read_split_csv(path: str | os.PathLike) -> list[str]:
    """The subject ids of one split CSV (a ``BraTS21ID`` header, then one ``BraTS2021_XXXXX`` id per line).

    Raises:
        DatalistError: the file is missing or unreadable, has no ``BraTS21ID`` column, holds an id that is not of
            the form ``BraTS2021_XXXXX``, repeats an id, or lists no subject.
    """
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as err:
        raise DatalistError(f"{path}: cannot read the split file ({err})") from err
    if not rows or CSV_HEADER not in [cell.strip() for cell in rows[0]]:
        raise DatalistError(f"{path}: expected a '{CSV_HEADER}' header in the first line")
    column = [cell.strip() for cell in rows[0]].index(CSV_HEADER)
    ids: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        subject = row[column].strip() if column < len(row) else ""
        if not SUBJECT_PATTERN.match(subject):
            raise DatalistError(f"{path}, line {line}: {subject!r} is not a BraTS 2021 subject id (BraTS2021_XXXXX)")
        ids.append(subject)
    if not ids:
        raise DatalistError(f"{path}: lists no subject")
    repeated = sorted({s for s in ids if ids.count(s) > 1})
    if repeated:
        raise DatalistError(f"{path}: subjects listed twice: {', '.join(repeated[:MAX_NAMED])}")
    return ids


def read_splits(splits_dir: str | os.PathLike = SPLITS_DIR) -> dict[str, list[str]]:
    """The three splits of ``splits_dir`` as ``{"training": [...], "validation": [...], "testing": [...]}``.

    Raises:
        DatalistError: a split file is unusable (see :func:`read_split_csv`), or a subject is in two splits.
    """
    splits_dir = Path(splits_dir)
    if not splits_dir.is_dir():
        raise DatalistError(f"{splits_dir}: no such splits folder (expected {', '.join(SPLIT_FILES.values())})")
    splits = {key: read_split_csv(splits_dir / name) for key, name in SPLIT_FILES.items()}
    seen: dict[str, str] = {}
    for key, ids in splits.items():
        for subject in ids:
            if subject in seen:
                raise DatalistError(f"{splits_dir}: {subject} is in both the {seen[subject]} and the {key} split")
            seen[subject] = key
    return splits


def _find_file(folder: Path, subject: str, suffix: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        candidate = folder / f"{subject}_{suffix}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _named(items: list[str]) -> str:
    """The first ``MAX_NAMED`` items, one per line, and how many more there are."""
    lines = [f"  - {item}" for item in items[:MAX_NAMED]]
    if len(items) > MAX_NAMED:
        lines.append(f"  ... and {len(items) - MAX_NAMED} more")
    return "\n".join(lines)


def make_brats21_datalist(
    brats_dir: str | os.PathLike,
    output: str | os.PathLike,
    splits_dir: str | os.PathLike = SPLITS_DIR,
    absolute: bool = False,
) -> dict[str, object]:
    """Write the datalist JSON of an unpacked BraTS 2021 folder for the paper's splits.

    Args:
        brats_dir: the folder holding the ``BraTS2021_XXXXX`` subject folders (e.g. ``BraTS2021_Training_Data``).
        output: the JSON file to write (atomically); its folder is created if needed.
        splits_dir: folder with ``train.csv``, ``val.csv`` and ``test.csv`` (default: the bundle's copy of the
            paper's splits).
        absolute: write absolute paths; by default paths are relative to the JSON's folder.

    Returns:
        A summary: ``path`` (the JSON written), ``counts`` (subjects per list) and ``unused`` (subject folders of
        ``brats_dir`` that are in no split; they are left out of the datalist).

    Raises:
        DatalistError: ``brats_dir`` is not a folder or holds no subject folder; a split's subject has no folder or
            lacks a file (every problem is named, the first ten of them, with the total count).
    """
    brats_dir = Path(brats_dir).expanduser()
    output = Path(output).expanduser()
    if not brats_dir.is_dir():
        raise DatalistError(f"{brats_dir}: no such folder (expected the unpacked BraTS 2021 training data)")
    splits = read_splits(splits_dir)
    present = {p.name for p in brats_dir.iterdir() if p.is_dir() and SUBJECT_PATTERN.match(p.name)}
    if not present:
        raise DatalistError(
            f"{brats_dir}: holds no BraTS2021_XXXXX subject folder; give the folder that holds them "
            "(e.g. .../BraTS2021_Training_Data)"
        )
    base = os.path.abspath(output.parent)
    datalist: dict[str, list[dict[str, str]]] = {}
    problems: list[str] = []
    for key, ids in splits.items():
        items = []
        for subject in ids:
            folder = brats_dir / subject
            if subject not in present:
                problems.append(f"{folder}: subject folder missing ({key} split)")
                continue
            item = {"name": subject}
            for datalist_key, suffix in BRATS21_FILES.items():
                found = _find_file(folder, subject, suffix)
                if found is None:
                    problems.append(f"{folder / f'{subject}_{suffix}.nii.gz'}: file missing")
                    continue
                path = os.path.abspath(found)
                item[datalist_key] = path if absolute else os.path.relpath(path, base)
            items.append(item)
        datalist[key] = items
    if problems:
        raise DatalistError(
            f"{brats_dir}: {len(problems)} problem(s) with the subjects of the splits in {splits_dir}:\n"
            f"{_named(problems)}"
        )
    in_splits = {s for ids in splits.values() for s in ids}
    unused = sorted(present - in_splits)
    atomic_write_bytes((json.dumps(datalist, indent=2) + "\n").encode(), output)
    return {"path": str(output), "counts": {k: len(v) for k, v in datalist.items()}, "unused": unused}
