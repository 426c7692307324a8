"""Studies on disk: finding the modality files of a study, and checking their headers before any voxel is read.

A *study* is one subject's set of co-registered volumes: one file per configured modality (``modalities``, any of
``t1``, ``t1c``, ``t2``, ``flair``, ``pd``) and optionally ``mask`` and ``label``. On disk it is an entry of a MONAI
datalist JSON, a folder holding one NIfTI per modality, recognised case-insensitively by the usual names
(``t1``/``t1n``, ``t1c``/``t1ce``/``t1gd``, ``t2``/``t2w``, ``flair``/``t2f``/``fla``, ``pd``/``pdw``; prefixes such
as ``BraTS2021_00000_flair.nii.gz`` or ``IXI002-Guys-0828-T1.nii.gz`` allowed), a folder of such files of several
studies (grouped by the study id in their names), or a BIDS dataset (``scripts.bids``).

A study's name (its output folder) comes from the data: the datalist's ``name``; else the study id in its file names
(what precedes the modality: ``BraTS2021_00000``, ``IXI002-Guys-0828``, ``sub-01_ses-a``); else, when the names carry
none (``<study>/t1.nii.gz``), the folder holding its files. Names must be unique where a workflow writes per study.
Which studies a workflow then does, and where their outputs go: ``scripts.selection``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from scripts import KNOWN_MODALITIES, MODALITIES, as_bool, bids
from scripts.errors import Failure, StudyError
from scripts.modalities import checked

NIFTI_SUFFIXES = (".nii.gz", ".nii")

# Aliases per key, matched against the last "_"/"-"/"."-separated token of the file name (case-insensitive).
MODALITY_ALIASES: dict[str, tuple[str, ...]] = {
    "t1": ("t1", "t1n", "t1w", "t1native"),
    "t1c": ("t1c", "t1ce", "t1gd", "t1post", "t1contrast"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2f", "fla"),
    "pd": ("pd", "pdw"),
    "mask": ("mask", "brainmask", "brain_mask"),
    "label": ("seg", "label", "labels", "segmentation"),
}
OPTIONAL_KEYS: tuple[str, ...] = ("mask", "label")
FILE_KEYS: tuple[str, ...] = (*KNOWN_MODALITIES, *OPTIONAL_KEYS)
"""The keys of a study that name files (the others, ``name`` and ``bids_prefix``, do not)."""


def study_name(data: Mapping, key: str = "name") -> str:
    """The study's name in a data dict, batched (a list of one) or not; ``"study"`` when it has none."""
    name = data.get(key, "study")
    return str(name[0] if isinstance(name, (list, tuple)) and name else name)


def source_name(image: object) -> str:
    """The file an image was read from (a MetaTensor's ``filename_or_obj``), or ``"<array>"``."""
    meta = getattr(image, "meta", None) or {}
    name = meta.get("filename_or_obj", "<array>")
    return str(name[0] if isinstance(name, (list, tuple)) and name else name)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _key_for(path: Path) -> str | None:
    """The study key (``t1``, ..., ``label``) a file name stands for, or None.

    The name's tokens (split at ``_``, ``-`` and ``.``, case-insensitive) are matched whole, never as substrings,
    so ``t1`` and ``t1ce`` stay apart. A last token ``mask`` (or ``brain_mask``) makes a brain mask, also when the
    name says which modality it was made on (``bet_t1c_mask``); a first or last token ``seg``/``label`` a label
    (``seg_model``); otherwise the one modality whose alias is among the tokens (``flair``, ``FLAIR_2``,
    ``sub-01_T1w_brain``).

    Raises:
        StudyError: the name holds aliases of two modalities (``t1_minus_t2``), so it names none of them safely.
    """
    from_bids = bids.modality_of(path.name)
    if from_bids is not None:
        return from_bids
    parts = [p for p in re.split(r"[_\-.]", _stem(path).lower()) if p]
    if not parts:
        return None
    if parts[-1] in MODALITY_ALIASES["mask"] or "_".join(parts[-2:]) in MODALITY_ALIASES["mask"]:
        return "mask"
    if parts[0] in MODALITY_ALIASES["label"] or parts[-1] in MODALITY_ALIASES["label"]:
        return "label"
    named = sorted({key for key in KNOWN_MODALITIES for p in parts if p in MODALITY_ALIASES[key]})
    if len(named) > 1:
        raise StudyError(f"{path}: the name holds {' and '.join(named)}, so it names no single modality; rename it")
    return named[0] if named else None


def file_study_id(path: str | os.PathLike) -> str | None:
    """The study id a file's name carries: what precedes its modality (or mask/label) token, separators trimmed
    (``BraTS2021_00000_t1ce.nii.gz`` -> ``BraTS2021_00000``, ``IXI002-Guys-0828-T1.nii.gz`` -> ``IXI002-Guys-0828``,
    BIDS ``sub-01_ses-a_T1w.nii.gz`` -> ``sub-01_ses-a``); None when nothing precedes it (``t1.nii.gz``)."""
    path = Path(path)
    from_bids = bids.study_id(path.name)
    if from_bids is not None:
        return from_bids
    stem = _stem(path)
    aliases = {a for names in MODALITY_ALIASES.values() for a in names}
    for match in re.finditer(r"[^_\-.]+", stem):
        if match.group().lower() in aliases:
            prefix = stem[: match.start()].rstrip("_-.")
            return prefix or None
    return None


def _nifti_files(folder: Path) -> list[Path]:
    return [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(NIFTI_SUFFIXES)
    ]


def study_files(
    paths: Sequence[Path], where: str | os.PathLike, modalities: Sequence[str] = MODALITIES
) -> dict[str, str]:
    """Map the configured ``modalities`` (and ``mask``, ``label`` when present) to the files among ``paths``, which
    are one study's; files of other modalities are left out.

    Raises:
        StudyError (naming ``where``): a modality is missing, two files claim the same key (both are named), or a
            file's name is ambiguous.
    """
    wanted = [*checked(modalities), *OPTIONAL_KEYS]
    found: dict[str, str] = {}
    for path in paths:
        key = _key_for(path)
        if key is None or key not in wanted:
            continue
        if key in found:
            raise StudyError(
                f"{where}: both {Path(found[key]).name} and {path.name} look like the '{key}' image; keep one"
            )
        found[key] = str(path)
    missing = [m for m in wanted[: len(wanted) - len(OPTIONAL_KEYS)] if m not in found]
    if missing:
        raise StudyError(
            f"{where}: missing modality {', '.join(missing)} (found {sorted(found) or 'no NIfTI files'}); "
            f"expected names such as {', '.join(MODALITY_ALIASES[missing[0]])}"
        )
    return found


def find_study_files(folder: str | os.PathLike, modalities: Sequence[str] = MODALITIES) -> dict[str, str]:
    """Map the configured ``modalities`` (and optionally ``mask``, ``label``) to the files of a study folder
    (:func:`study_files`).

    Raises:
        StudyError: not a folder, a modality is missing, two files claim the same key, or a name is ambiguous.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise StudyError(f"{folder}: not a folder")
    return study_files(_nifti_files(folder), folder, modalities)


def group_by_study(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """Files of several studies grouped by the study id of their names (:func:`file_study_id`). The studies are the
    ids of the modality files (those whose names carry none are grouped under ``""``); a mask or label joins the
    study of its id, and is left out when its id is no study's. Files that name nothing are left out."""
    keyed = []
    for path in paths:
        try:
            key = _key_for(path)
        except StudyError:
            key = "ambiguous"  # study_files names it
        if key is not None:
            keyed.append((key, file_study_id(path) or "", path))
    groups: dict[str, list[Path]] = {}
    for key, name, path in keyed:
        if key not in OPTIONAL_KEYS:
            groups.setdefault(name, []).append(path)
    for key, name, path in keyed:
        if key in OPTIONAL_KEYS and name in groups:
            groups[name].append(path)
    return groups


def _holds_nifti(folder: Path) -> bool:
    return any(p.name.lower().endswith(NIFTI_SUFFIXES) for p in folder.iterdir())


def _studies_from_folder(path: Path, modalities: Sequence[str]) -> tuple[list[dict[str, str]], list[Failure]]:
    """A folder of study folders, one study folder, or a folder of several studies' files (grouped by the study id
    of their names)."""
    subfolders = [p for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if _holds_nifti(path) and not subfolders:
        groups = group_by_study(_nifti_files(path))
        if len(groups) > 1 and "" not in groups:  # several studies' files side by side (e.g. IXI's)
            studies, failures = [], []
            for name, files in sorted(groups.items()):
                try:
                    studies.append({"name": name, **study_files(files, path / f"{name}*", modalities)})
                except StudyError as err:
                    failures.append(Failure(name, str(err)))
            return studies, failures
        folders = [path]
    else:
        folders = [s for s in subfolders if _holds_nifti(s)]
    if not folders:
        raise StudyError(f"{path}: holds no study folder with NIfTI files")
    studies, failures = [], []
    for folder in folders:
        try:
            studies.append({"name": folder.name, **find_study_files(folder, modalities)})
        except StudyError as err:
            failures.append(Failure(folder.name, str(err)))
    return studies, failures


def scan_studies(
    dataset_dir: str | os.PathLike,
    datalist_key: str = "testing",
    modalities: Sequence[str] = MODALITIES,
    unique_names: bool | str = True,
) -> tuple[list[dict[str, str]], list[Failure]]:
    """The studies of ``dataset_dir`` (a MONAI datalist JSON, a BIDS dataset, a folder of study folders, one study
    folder or a folder of several studies' files), and the failures of those that cannot be studies (a folder
    missing a modality, a datalist item missing a key).

    Every study has a ``name`` (from the data: see the module docstring), one path per configured modality (in
    ``modalities``; files of other modalities are left out) and ``mask``/``label`` when given; a BIDS study also its
    ``bids_prefix`` (``scripts.bids``).

    Raises:
        StudyError: the dataset itself is unusable: no such path, an unreadable datalist, no study at all, or (with
            ``unique_names``, for the workflows that write per study) two studies of one name.
    """
    path = Path(dataset_dir)
    modalities = checked(modalities)
    if not path.exists():
        raise StudyError(f"{path}: no such file or folder")
    if path.is_file():
        studies, failures = _studies_from_datalist(path, datalist_key, modalities)
    elif bids.is_bids(path):
        studies, failures = bids.bids_studies(path, modalities)
    else:
        studies, failures = _studies_from_folder(path, modalities)
    names = [s["name"] for s in studies] + [f.study for f in failures]
    doubles = sorted({n for n in names if names.count(n) > 1})
    if doubles and as_bool(unique_names):
        raise StudyError(
            f"{dataset_dir}: study names are not unique ({', '.join(doubles)}); outputs would collide "
            "(give each datalist item a unique 'name')"
        )
    return studies, failures


def list_studies(
    dataset_dir: str | os.PathLike,
    datalist_key: str = "testing",
    modalities: Sequence[str] = MODALITIES,
    unique_names: bool | str = True,
) -> list[dict[str, str]]:
    """:func:`scan_studies`, strict: the first study that cannot be one stops with its StudyError (training, dataset
    preparation and landmark building need every study)."""
    studies, failures = scan_studies(dataset_dir, datalist_key, modalities, unique_names)
    if failures:
        raise StudyError(failures[0].message)
    return studies


def item_name(item: Mapping, index: int, modalities: Sequence[str]) -> str:
    """A datalist item's study name: its ``name``; else the study id in its files' names (:func:`file_study_id`);
    else the folder holding its files; else ``study_<index>``."""
    if item.get("name"):
        return str(item["name"])
    files = [str(item[k]) for k in [*modalities, *FILE_KEYS] if isinstance(item.get(k), str) and item[k]]
    for file in files:
        found = file_study_id(Path(file))
        if found:
            return found
    folder = Path(files[0]).parent.name if files else ""
    return folder or f"study_{index:04d}"


def _studies_from_datalist(
    path: Path, key: str, modalities: Sequence[str] = MODALITIES
) -> tuple[list[dict[str, str]], list[Failure]]:
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StudyError(f"{path}: not a readable datalist JSON ({err})") from err
    if isinstance(content, dict):
        if key not in content:
            raise StudyError(f"{path}: datalist has no '{key}' list (keys: {sorted(content)})")
        items = content[key]
    else:
        items = content
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise StudyError(f"{path}: the '{key}' list of the datalist must hold one object per study")
    studies, failures = [], []
    for i, item in enumerate(items):
        name = item_name(item, i, modalities)
        missing = [m for m in modalities if m not in item]
        if missing:
            failures.append(Failure(name, f"{path}: item {i} of '{key}' lacks modality {', '.join(missing)}"))
            continue
        kept = [k for k in [*modalities, *OPTIONAL_KEYS] if item.get(k)]
        study = {k: str((path.parent / item[k]) if not Path(item[k]).is_absolute() else item[k]) for k in kept}
        study["name"] = name
        studies.append(study)
    return studies, failures
