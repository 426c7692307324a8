"""BIDS datasets in, BIDS derivatives out.

A folder is read as a BIDS dataset when it holds ``dataset_description.json`` or ``sub-*`` folders. Its anatomical
images (``sub-<label>/[ses-<label>/]anat/*.nii[.gz]``) are found and their names parsed by ``ancpbids`` (a BIDS library
with no dependency of its own; ``pybids`` would bring pandas, SQLAlchemy, formulaic and more for the same query). Every
subject, or every session of a subject that has sessions, is one study named ``sub-<label>[_ses-<label>]``; the suffixes
map to the bundle's modalities (:data:`SUFFIXES`: ``T1w``, with a ``ce-`` entity T1Gd, ``T2w``, ``FLAIR``, ``PDw``);
one ``*_mask.nii.gz`` in the ``anat`` folder (e.g. ``sub-01_desc-brain_mask.nii.gz``) is the study's brain mask.
``dataset_description.json`` is read when present (it must be valid JSON and not describe a derivatives dataset), and
its ``Name`` is recorded as the derivatives' source.

Outputs of a BIDS input go to a derivatives dataset (the output folder, e.g. ``BIDS/derivatives/andi``):
``sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>]_desc-anomaly_<what>`` (:data:`OUTPUT_NAMES`) and the
folder's own ``dataset_description.json`` (:func:`write_description`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from scripts.errors import Failure, StudyError
from scripts.files import atomic_write_bytes

SUFFIXES: dict[str, str] = {"T1w": "t1", "T2w": "t2", "FLAIR": "flair", "PDw": "pd"}
"""BIDS anatomical suffix -> modality; a ``T1w`` image with a ``ce-`` entity (contrast agent) is ``t1c``."""

OUTPUT_NAMES: dict[str, str] = {
    "anomaly.nii.gz": "desc-anomaly_map.nii.gz",
    "zmap.nii.gz": "desc-anomaly_zmap.nii.gz",
    "segmentation.nii.gz": "desc-anomaly_mask.nii.gz",
    "segmentation.json": "desc-anomaly_mask.json",
    "overview.png": "desc-anomaly_overview.png",
    "preprocessed.nii.gz": "desc-anomaly_preproc.nii.gz",
    "transform.tfm": "desc-anomaly_xfm.tfm",
}
"""The bundle's output file -> its BIDS derivatives name, after ``sub-<label>[_ses-<label>]_``."""

PREFIX_KEY = "bids_prefix"
"""The study key holding ``sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>]`` (where its outputs go)."""

DESCRIPTION = "dataset_description.json"
NIFTI = (".nii.gz", ".nii")


def is_bids(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a BIDS dataset: it holds ``dataset_description.json`` or a ``sub-*`` folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    return (folder / DESCRIPTION).is_file() or any(p.is_dir() and p.name.startswith("sub-") for p in folder.iterdir())


def read_description(folder: str | os.PathLike) -> dict:
    """The dataset's ``dataset_description.json`` ({} when there is none).

    Raises:
        StudyError: the file is not a JSON object, or it describes a derivatives dataset (give the raw dataset).
    """
    path = Path(folder) / DESCRIPTION
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StudyError(f"{path}: not a readable dataset description ({err})") from err
    if not isinstance(content, dict):
        raise StudyError(f"{path}: a dataset description must be a JSON object")
    if str(content.get("DatasetType", "raw")).lower() == "derivative":
        raise StudyError(f"{path}: describes a derivatives dataset; give the raw BIDS dataset")
    return content


def modality_of(name: str) -> str | None:
    """The modality of a BIDS file name (``sub-01_ce-gd_T1w.nii.gz`` -> ``t1c``), or None for another suffix or a
    name that is not BIDS."""
    from ancpbids.utils import parse_bids_name

    parsed = parse_bids_name(name)
    if not parsed or "sub" not in parsed["entities"] or parsed["suffix"] not in SUFFIXES:
        return None
    modality = SUFFIXES[parsed["suffix"]]
    return "t1c" if modality == "t1" and "ce" in parsed["entities"] else modality


def study_id(name: str) -> str | None:
    """``sub-<label>[_ses-<label>]`` of a BIDS file name, or None when the name is not BIDS."""
    from ancpbids.utils import parse_bids_name

    parsed = parse_bids_name(name)
    if not parsed or "sub" not in parsed["entities"]:
        return None
    entities = parsed["entities"]
    return f"sub-{entities['sub']}" + (f"_ses-{entities['ses']}" if "ses" in entities else "")


def bids_studies(folder: str | os.PathLike, modalities: Sequence[str]) -> tuple[list[dict[str, str]], list[Failure]]:
    """The studies of a BIDS dataset (see the module docstring) with the ``modalities`` asked for, and the failures
    of those that lack one or hold two images of one (e.g. two runs).

    Raises:
        StudyError: the description is unusable, or no anatomical image of a known suffix is found.
    """
    import ancpbids

    folder = Path(folder)
    read_description(folder)
    dataset = ancpbids.load_dataset(str(folder))
    found: dict[str, dict[str, list[str]]] = {}
    prefixes: dict[str, str] = {}
    for artifact in dataset.query(scope="raw", suffix=[*SUFFIXES, "mask"], return_type="object"):
        path = Path(artifact.get_absolute_path())
        if path.parent.name != "anat" or not path.name.endswith(NIFTI):
            continue
        name = study_id(path.name)
        modality = "mask" if artifact.suffix == "mask" else modality_of(path.name)
        if name is None or modality is None:
            continue
        found.setdefault(name, {}).setdefault(modality, []).append(str(path))
        prefixes[name] = str((path.parent / name).relative_to(folder))
    if not found:
        raise StudyError(
            f"{folder}: a BIDS dataset with no anatomical image (sub-*/[ses-*/]anat/*_{{T1w,T2w,FLAIR,PDw}}.nii.gz)"
        )
    studies, failures = [], []
    for name in sorted(found):
        files = found[name]
        doubles = [m for m in modalities if len(files.get(m, [])) > 1]
        missing = [m for m in modalities if m not in files]
        if doubles:
            both = " and ".join(Path(p).name for p in files[doubles[0]])
            failures.append(Failure(name, f"{folder / prefixes[name]}: {both} are all '{doubles[0]}'; keep one"))
        elif missing:
            failures.append(
                Failure(
                    name,
                    f"{(folder / prefixes[name]).parent}: missing modality {', '.join(missing)} "
                    f"(found {', '.join(sorted(files))}); expected BIDS suffixes "
                    f"{', '.join(s for s, m in SUFFIXES.items() if m in missing) or 'T1w with ce-<agent>'}",
                )
            )
        else:
            mask = {"mask": files["mask"][0]} if len(files.get("mask", [])) == 1 else {}
            studies.append({"name": name, **{m: files[m][0] for m in modalities}, **mask, PREFIX_KEY: prefixes[name]})
    return studies, failures


def output_name(prefix: str, filename: str) -> str:
    """Where a study's ``filename`` (e.g. ``anomaly.nii.gz``) goes in the derivatives dataset, relative to it."""
    return f"{prefix}_{OUTPUT_NAMES.get(filename, filename)}"


def write_description(output_dir: str | os.PathLike, source: str | os.PathLike) -> Path:
    """The derivatives dataset's ``dataset_description.json`` (written once, atomically; the bundle's version from
    ``configs/metadata.json``); returns its path."""
    target = Path(output_dir) / DESCRIPTION
    if target.is_file():
        return target
    source_description = read_description(source)
    metadata = Path(__file__).resolve().parents[1] / "configs" / "metadata.json"
    version = str(json.loads(metadata.read_text()).get("version", "")) if metadata.is_file() else ""
    content = {
        "Name": f"ANDi anomaly maps of {source_description.get('Name', Path(source).name)}",
        "BIDSVersion": str(source_description.get("BIDSVersion", "1.9.0")),
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "ANDi", "Version": version, "Description": "Aggregated Normative Diffusion"}],
        "SourceDatasets": [{"URL": Path(source).resolve().as_uri()}],
    }
    return atomic_write_bytes((json.dumps(content, indent=2) + "\n").encode(), target)
