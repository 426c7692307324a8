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
from scripts import KNOWN_MODALITIES, MODALITIES, as_bool, as_flag_or_auto, bids
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
