"""Studies on disk: finding the modality files of a study, and checking their headers before any voxel is read.

A *study* is one subject's set of co-registered volumes. On disk it is either an entry of a MONAI datalist JSON
(keys ``t1``, ``t1c``, ``t2``, ``flair`` and optionally ``mask`` and ``label``) or a folder holding one NIfTI per
modality, recognised case-insensitively by the usual names (``t1``/``t1n``, ``t1c``/``t1ce``/``t1gd``,
``t2``/``t2w``, ``flair``/``t2f``/``fla``, BraTS-style prefixes such as ``BraTS2021_00000_flair.nii.gz`` allowed).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib

from scripts import MODALITIES, as_bool, as_flag_or_auto
from scripts.errors import StudyError

NIFTI_SUFFIXES = (".nii.gz", ".nii")

# Aliases per key, matched against the last "_"/"-"/"."-separated token of the file name (case-insensitive).
MODALITY_ALIASES: dict[str, tuple[str, ...]] = {
    "t1": ("t1", "t1n", "t1w", "t1native"),
    "t1c": ("t1c", "t1ce", "t1gd", "t1post", "t1contrast"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2f", "fla"),
    "mask": ("mask", "brainmask", "brain_mask"),
    "label": ("seg", "label", "labels", "segmentation"),
}
OPTIONAL_KEYS: tuple[str, ...] = ("mask", "label")


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
    """The study key (``t1``, ..., ``label``) a file name stands for, or None."""
    stem = _stem(path).lower()
    candidates = [stem, *re.split(r"[_\-.]", stem)[-1:]]
    # also allow a two-token suffix such as "brain_mask"
    parts = re.split(r"[_\-.]", stem)
    if len(parts) >= 2:
        candidates.append("_".join(parts[-2:]))
    for key, aliases in MODALITY_ALIASES.items():
        if any(c in aliases for c in candidates):
            return key
    # names like "bet_t1c_mask" (a mask made on one modality) count as a mask
    if parts and parts[-1] == "mask":
        return "mask"
    # names like "seg_model" or "seg_manual" (a segmentation and where it came from) count as a label
    if parts and parts[0] in MODALITY_ALIASES["label"]:
        return "label"
    return None


def find_study_files(folder: str | os.PathLike) -> dict[str, str]:
    """Map keys (``t1``, ``t1c``, ``t2``, ``flair``, and optionally ``mask``, ``label``) to the files of a study folder.

    Raises:
        StudyError: a modality is missing, or two files claim the same key.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise StudyError(f"{folder}: not a folder")
    found: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not path.name.lower().endswith(NIFTI_SUFFIXES):
            continue
        key = _key_for(path)
        if key is None:
            continue
        if key in found:
            raise StudyError(f"{folder}: both {Path(found[key]).name} and {path.name} look like the '{key}' image")
        found[key] = str(path)
    missing = [m for m in MODALITIES if m not in found]
    if missing:
        raise StudyError(
            f"{folder}: missing modality {', '.join(missing)} (found {sorted(found) or 'no NIfTI files'}); "
            f"expected names such as {', '.join(MODALITY_ALIASES[missing[0]])}"
        )
    return found


def list_studies(dataset_dir: str | os.PathLike, datalist_key: str = "testing") -> list[dict[str, str]]:
    """The studies of ``dataset_dir``: a MONAI datalist JSON, a folder of study folders, or one study folder.

    Every returned item has a ``name`` (the study's id, used for output folders) and one path per key.
    """
    path = Path(dataset_dir)
    if not path.exists():
        raise StudyError(f"{path}: no such file or folder")
    if path.is_file():
        return _studies_from_datalist(path, datalist_key)
    subfolders = [p for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    has_nifti = any(p.name.lower().endswith(NIFTI_SUFFIXES) for p in path.iterdir())
    if has_nifti and not subfolders:
        return [{"name": path.name, **find_study_files(path)}]
    studies = []
    for sub in subfolders:
        if any(p.name.lower().endswith(NIFTI_SUFFIXES) for p in sub.iterdir()):
            studies.append({"name": sub.name, **find_study_files(sub)})
    if not studies:
        raise StudyError(f"{path}: holds no study folder with NIfTI files")
    return studies


def _studies_from_datalist(path: Path, key: str) -> list[dict[str, str]]:
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise StudyError(f"{path}: not a readable datalist JSON ({err})") from err
    if isinstance(content, dict):
        if key not in content:
            raise StudyError(f"{path}: datalist has no '{key}' list (keys: {sorted(content)})")
        items = content[key]
    else:
        items = content
    studies = []
    for i, item in enumerate(items):
        missing = [m for m in MODALITIES if m not in item]
        if missing:
            raise StudyError(f"{path}: item {i} of '{key}' lacks modality {', '.join(missing)}")
        study = {k: str((path.parent / v) if not Path(v).is_absolute() else v) for k, v in item.items() if k != "name"}
        study["name"] = str(item.get("name") or _stem(Path(item["t1"])).rsplit("_", 1)[0] or f"study_{i:04d}")
        studies.append(study)
    return studies


def check_study(study: dict[str, str], keys: Sequence[str] = MODALITIES, same_grid: bool = True) -> None:
    """Check a study's headers before any voxel is used: readable, 3D (or 4D with a singleton), and (with
    ``same_grid``) all on one grid. Studies that will be registered may have their modalities on different grids.

    Raises:
        StudyError: naming the file and what is wrong with it.
    """
    from scripts.grid import Grid
    from scripts.grid import same_grid as grids_equal

    reference: tuple[str, Grid] | None = None
    for key in [*keys, *[k for k in OPTIONAL_KEYS if k in study]]:
        if key not in study:
            raise StudyError(f"study {study.get('name', '?')}: missing modality '{key}'")
        fname = study[key]
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


def studies_to_score(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    overwrite: bool | str = False,
    datalist_key: str = "testing",
    done_file: str = "segmentation.nii.gz",
    register: bool | str = False,
    rank: int = 0,
    world_size: int = 1,
) -> list[dict[str, str]]:
    """The studies of ``dataset_dir`` (see :func:`list_studies`), each checked with :func:`check_study`, less those
    whose ``<output_dir>/<name>/<done_file>`` exists already (unless ``overwrite``), so a stopped run resumes.
    Unless ``register`` is false, the modalities of a study may lie on different grids (registration aligns them).

    Under torchrun (``rank``/``world_size`` from the environment), process ``rank`` takes every ``world_size``-th
    study of the sorted list, before finished ones are skipped: each study belongs to exactly one process.
    """
    overwrite = as_bool(overwrite)
    same_grid = as_flag_or_auto(register) is False
    studies = list_studies(dataset_dir, datalist_key)
    names = [s["name"] for s in studies]
    if len(set(names)) != len(names):
        raise StudyError(f"{dataset_dir}: study names are not unique ({names}); outputs would overwrite each other")
    if not 0 <= int(rank) < int(world_size):
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    studies = studies[int(rank) :: int(world_size)]
    for study in studies:
        check_study(study, same_grid=same_grid)
    if overwrite:
        return studies
    return [s for s in studies if not (Path(output_dir) / s["name"] / done_file).exists()]
