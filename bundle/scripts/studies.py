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
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib

from scripts import MODALITIES, as_bool, as_flag_or_auto
from scripts.errors import Failure, StudyError

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
    """The study key (``t1``, ..., ``label``) a file name stands for, or None.

    The name's tokens (split at ``_``, ``-`` and ``.``, case-insensitive) are matched whole, never as substrings,
    so ``t1`` and ``t1ce`` stay apart. A last token ``mask`` (or ``brain_mask``) makes a brain mask, also when the
    name says which modality it was made on (``bet_t1c_mask``); a first or last token ``seg``/``label`` a label
    (``seg_model``); otherwise the one modality whose alias is among the tokens (``flair``, ``FLAIR_2``,
    ``sub-01_T1w_brain``).

    Raises:
        StudyError: the name holds aliases of two modalities (``t1_minus_t2``), so it names none of them safely.
    """
    parts = [p for p in re.split(r"[_\-.]", _stem(path).lower()) if p]
    if not parts:
        return None
    if parts[-1] in MODALITY_ALIASES["mask"] or "_".join(parts[-2:]) in MODALITY_ALIASES["mask"]:
        return "mask"
    if parts[0] in MODALITY_ALIASES["label"] or parts[-1] in MODALITY_ALIASES["label"]:
        return "label"
    named = sorted({key for key in MODALITIES for p in parts if p in MODALITY_ALIASES[key]})
    if len(named) > 1:
        raise StudyError(f"{path}: the name holds {' and '.join(named)}, so it names no single modality; rename it")
    return named[0] if named else None


def find_study_files(folder: str | os.PathLike) -> dict[str, str]:
    """Map keys (``t1``, ``t1c``, ``t2``, ``flair``, and optionally ``mask``, ``label``) to the files of a study folder.

    Raises:
        StudyError: a modality is missing, two files claim the same key (both are named), or a file's name is
            ambiguous.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise StudyError(f"{folder}: not a folder")
    found: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or not path.name.lower().endswith(NIFTI_SUFFIXES):
            continue
        key = _key_for(path)
        if key is None:
            continue
        if key in found:
            raise StudyError(
                f"{folder}: both {Path(found[key]).name} and {path.name} look like the '{key}' image; keep one"
            )
        found[key] = str(path)
    missing = [m for m in MODALITIES if m not in found]
    if missing:
        raise StudyError(
            f"{folder}: missing modality {', '.join(missing)} (found {sorted(found) or 'no NIfTI files'}); "
            f"expected names such as {', '.join(MODALITY_ALIASES[missing[0]])}"
        )
    return found


def _holds_nifti(folder: Path) -> bool:
    return any(p.name.lower().endswith(NIFTI_SUFFIXES) for p in folder.iterdir())


def scan_studies(
    dataset_dir: str | os.PathLike, datalist_key: str = "testing"
) -> tuple[list[dict[str, str]], list[Failure]]:
    """The studies of ``dataset_dir`` (a MONAI datalist JSON, a folder of study folders, or one study folder), and the
    failures of those that cannot be studies (a folder missing a modality, a datalist item missing a key).

    Every study has a ``name`` (the study's id, used for output folders) and one path per key.

    Raises:
        StudyError: the dataset itself is unusable: no such path, an unreadable datalist, no study at all, or two
            studies of one name.
    """
    path = Path(dataset_dir)
    if not path.exists():
        raise StudyError(f"{path}: no such file or folder")
    failures: list[Failure] = []
    if path.is_file():
        studies, failures = _studies_from_datalist(path, datalist_key)
    else:
        subfolders = [p for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        folders = [path] if _holds_nifti(path) and not subfolders else [s for s in subfolders if _holds_nifti(s)]
        if not folders:
            raise StudyError(f"{path}: holds no study folder with NIfTI files")
        studies = []
        for folder in folders:
            try:
                studies.append({"name": folder.name, **find_study_files(folder)})
            except StudyError as err:
                failures.append(Failure(folder.name, str(err)))
    names = [s["name"] for s in studies] + [f.study for f in failures]
    doubles = sorted({n for n in names if names.count(n) > 1})
    if doubles:
        raise StudyError(f"{dataset_dir}: study names are not unique ({', '.join(doubles)}); outputs would collide")
    return studies, failures


def list_studies(dataset_dir: str | os.PathLike, datalist_key: str = "testing") -> list[dict[str, str]]:
    """:func:`scan_studies`, strict: the first study that cannot be one stops with its StudyError (training, dataset
    preparation and landmark building need every study)."""
    studies, failures = scan_studies(dataset_dir, datalist_key)
    if failures:
        raise StudyError(failures[0].message)
    return studies


def _studies_from_datalist(path: Path, key: str) -> tuple[list[dict[str, str]], list[Failure]]:
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
        name = str(item.get("name") or _stem(Path(str(item.get("t1", "")))).rsplit("_", 1)[0] or f"study_{i:04d}")
        missing = [m for m in MODALITIES if m not in item]
        if missing:
            failures.append(Failure(name, f"{path}: item {i} of '{key}' lacks modality {', '.join(missing)}"))
            continue
        study = {k: str((path.parent / v) if not Path(v).is_absolute() else v) for k, v in item.items() if k != "name"}
        study["name"] = name
        studies.append(study)
    return studies, failures


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
    dicom_modalities: Mapping[str, Sequence[str]] | None = None,
) -> StudySelection:
    """The studies of ``dataset_dir`` (:func:`scan_studies`), each checked with :func:`check_study` (a study that
    fails is recorded, not fatal), less those whose ``<output_dir>/<name>/<done_file>`` exists already (unless
    ``overwrite``), so a stopped run resumes. Unless ``register`` is false, the modalities of a study may lie on
    different grids (registration aligns them). With ``require_label``, a study without a label fails.

    A ``dataset_dir`` of DICOM files (and no NIfTI) is read by ``scripts.dicom_series``: each DICOM study's series are
    placed as modalities by their tags (``dicom_modalities``) and converted into ``<output_dir>/.dicom/<study>/``; a
    DICOM study is done when its DICOM SEG exists too.

    Under torchrun (``rank``/``world_size`` from the environment), process ``rank`` takes every ``world_size``-th
    study of the sorted list, before finished ones are skipped: each study belongs to exactly one process.

    Raises:
        StudyError: the dataset is unusable as a whole (see :func:`scan_studies`), or ``output_dir`` cannot be
            written.
    """
    overwrite, require_label = as_bool(overwrite), as_bool(require_label)
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
        studies, failures = scan_studies(dataset_dir, datalist_key)
    ordered = sorted([*[(s["name"], s) for s in studies], *[(f.study, f) for f in failures]], key=lambda x: x[0])
    mine = ordered[int(rank) :: int(world_size)]
    selection = StudySelection(failures=[item for _, item in mine if isinstance(item, Failure)])
    for name, study in mine:
        if isinstance(study, Failure):
            continue
        if len(study) == 1:  # a DICOM study done already (not converted again)
            selection.skipped.append(name)
            continue
        try:
            check_study(study, same_grid=same_grid)
            if require_label and "label" not in study:
                raise StudyError(
                    f"study {name}: no label to evaluate against (a seg/label NIfTI in the study folder, or a "
                    "'label' entry in the datalist)"
                )
        except StudyError as err:
            selection.failures.append(Failure(name, str(err)))
            continue
        if not overwrite and (Path(output_dir) / name / done_file).exists():
            selection.skipped.append(name)
        else:
            selection.studies.append(study)
    return selection
