"""DICOM studies in: a folder of DICOM files (any layout, any file names), one series per modality.

The files are grouped by their tags, never by their names: by ``StudyInstanceUID`` into studies and by
``SeriesInstanceUID`` into series. Each series is placed as a modality by its own tags (:func:`series_modality`):
the words of ``SeriesDescription``, ``ProtocolName`` and ``SequenceName`` against a configurable mapping
(``dicom_modalities``), a T1 with a contrast agent (``ContrastBolusAgent``) counting as T1Gd. A series that no
modality claims, or two series claiming one modality, fail the study with one line naming them.

Each series is read once (:func:`read_series`): a classic single-frame series with SimpleITK's series reader (GDCM)
after its geometry is checked from the headers (one orientation, evenly spaced slices, more than one slice), an
enhanced multi-frame instance with highdicom (its per-frame positions, :func:`highdicom.imread`). The volume is
handed to the pipeline as a NIfTI in a cache folder of the output folder (``OUT/.dicom/<study>/<modality>.nii.gz``),
together with ``dicom.json`` (the source files of each modality), so the study then follows the path of any native
NIfTI study (header checks, registration when needed, outputs back on the reference modality's grid). The inputs are
never modified.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813
from scripts import MODALITIES
from scripts.errors import Failure, StudyError
from scripts.files import atomic_write_bytes, write_nifti
from scripts.grid import LPS_TO_RAS, affine_ras, image_from_array

PathLike = str | os.PathLike

DICOM_MANIFEST = "dicom.json"
CACHE_FOLDER = ".dicom"


def is_dicom_file(path: PathLike) -> bool:
    """A DICOM Part 10 file: ``DICM`` after the 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def dicom_files(folder: PathLike, max_depth: int = 4) -> list[Path]:
    """Every DICOM file under ``folder`` (hidden entries left out), sorted."""
    root = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and depth < max_depth)
        found += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return [p for p in found if is_dicom_file(p)]


def holds_dicom(folder: PathLike) -> bool:
    """A folder with DICOM files below it and no NIfTI among them (a NIfTI dataset is read as before)."""
    root = Path(folder)
    if not root.is_dir():
        return False
    for _, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(f.lower().endswith((".nii", ".nii.gz")) for f in filenames):
            return False
    return bool(dicom_files(root))


def _words(text: object) -> list[str]:
    return [w for w in re.split(r"[^0-9a-z+]+", str(text or "").lower()) if w]


def series_modality(header, mapping: Mapping[str, Sequence[str]]) -> str | None:
    """The modality a series' header places it as, or None. ``mapping`` (config key ``dicom_modalities``) maps each
    modality to words; the first modality in its order with a word among the series' wins (so ``T2 FLAIR`` is FLAIR
    and ``T1 post Gd`` T1Gd when FLAIR comes before T2 and T1Gd before T1).

    The words of SeriesDescription, ProtocolName and SequenceName (split at anything but letters, digits and ``+``)
    are matched whole against each modality's words in the mapping's order; ``+c`` and ``ContrastBolusAgent`` turn a
    T1 into T1Gd."""
    words = set()
    for tag in ("SeriesDescription", "ProtocolName", "SequenceName"):
        words.update(_words(getattr(header, tag, "")))
    for modality, aliases in mapping.items():
        if words & {str(a).lower() for a in aliases}:
            contrast = "+c" in words or str(getattr(header, "ContrastBolusAgent", "") or "").strip()
            return "t1c" if modality == "t1" and contrast and "t1c" in mapping else modality
    return None


def _describe(header) -> str:
    text = str(getattr(header, "SeriesDescription", "") or getattr(header, "ProtocolName", "") or "").strip()
    return f"series {getattr(header, 'SeriesNumber', '?')} '{text}'" if text else f"series {header.SeriesInstanceUID}"


def _is_multiframe(header) -> bool:
    return int(getattr(header, "NumberOfFrames", 1) or 1) > 1


def _compressed(header) -> str | None:
    """The name of a compressed transfer syntax, or None for native (uncompressed) pixel data."""
    uid = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
    return uid.name if uid is not None and uid.is_compressed else None


def check_classic_series(folder: str, headers: Sequence) -> list[int]:
    """Check a classic single-frame series' geometry from its headers; returns the instance order along the slice
    normal.

    Raises:
        StudyError: one slice only, mixed orientations or image sizes, two slices at one position, or missing slices
            (a gap between neighbouring slices larger than the series' slice spacing).
    """
    name = _describe(headers[0])
    if len(headers) < 2:
        raise StudyError(f"{folder}: {name} has a single slice; a 3D volume of several slices is needed")
    for tag in ("ImageOrientationPatient", "ImagePositionPatient", "Rows", "Columns"):
        if any(getattr(h, tag, None) is None for h in headers):
            raise StudyError(f"{folder}: {name} is not an image volume (an instance has no {tag})")
    orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
    if np.abs(orientations - orientations[0]).max() > 1e-4:
        raise StudyError(f"{folder}: {name} mixes slice orientations (ImageOrientationPatient differs); one is needed")
    sizes = {(int(h.Rows), int(h.Columns)) for h in headers}
    if len(sizes) > 1:
        raise StudyError(f"{folder}: {name} mixes image sizes {sorted(sizes)}")
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    depth = np.array([float(np.dot([float(v) for v in h.ImagePositionPatient], normal)) for h in headers])
    order = np.argsort(depth, kind="stable")
    gaps = np.diff(depth[order])
    if gaps.min() < 1e-3:
        raise StudyError(f"{folder}: {name} has two slices at one position ({depth[order][np.argmin(gaps)]:.2f} mm)")
    step = float(np.median(gaps))
    if gaps.max() > 1.5 * step:
        k = int(np.argmax(gaps))
        missing = int(round(float(gaps.sum()) / step)) + 1 - len(headers)
        raise StudyError(
            f"{folder}: {name} is missing slices ({missing} missing: a gap of {gaps[k]:.2f} mm after slice position "
            f"{depth[order][k]:.2f} mm where the spacing is {step:.2f} mm)"
        )
    return [int(i) for i in order]


def _read_error(folder: str, header, err: Exception) -> StudyError:
    detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    syntax = _compressed(header)
    if syntax:
        return StudyError(f"{folder}: {_describe(header)} holds compressed pixel data ({syntax}) that no installed "
                          f"decoder reads ({detail})")  # fmt: skip
    return StudyError(f"{folder}: {_describe(header)} is unreadable ({detail})")


def read_classic(folder: str, files: Sequence[str], headers: Sequence) -> tuple[sitk.Image, list[str]]:
    """A classic series as a float32 SimpleITK image (LPS, slices along the normal) and its files in slice order."""
    order = check_classic_series(folder, headers)
    ordered = [str(files[i]) for i in order]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(ordered)
    try:
        image = sitk.Cast(reader.Execute(), sitk.sitkFloat32)
    except RuntimeError as err:
        raise _read_error(folder, headers[0], err) from err
    return image, ordered


def read_enhanced(folder: str, file: str, header) -> sitk.Image:
    """An enhanced multi-frame instance (one file, per-frame positions) as a float32 SimpleITK image (LPS)."""
    import highdicom as hd

    try:
        image = hd.imread(str(file))
        volume = image.get_volume()
    except Exception as err:  # highdicom and pydicom raise many types: undecodable pixels, frames off a volume
        if _compressed(header) or "decod" in str(err).lower() or "plugin" in str(err).lower():
            raise _read_error(folder, header, err) from err
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise StudyError(f"{folder}: {_describe(header)}: its frames do not make one evenly spaced volume "
                         f"(missing slices, mixed orientations?): {detail}") from err  # fmt: skip
    array = np.asarray(volume.array, dtype=np.float32)  # (slices, rows, columns)
    if array.ndim != 3 or array.shape[0] < 2:
        raise StudyError(f"{folder}: {_describe(header)} has a single slice; a 3D volume of several slices is needed")
    # highdicom's affine maps (slice, row, column) indices to LPS; ours is (column, row, slice) -> RAS
    lps = np.asarray(volume.affine, dtype=np.float64)[:, [2, 1, 0, 3]]
    return image_from_array(np.transpose(array, (2, 1, 0)), LPS_TO_RAS @ lps)


def read_headers(files: Sequence[PathLike]) -> list:
    """The headers (no pixel data) of ``files``; StudyError naming the first unreadable one."""
    import pydicom

    headers = []
    for f in files:
        try:
            headers.append(pydicom.dcmread(str(f), stop_before_pixels=True))
        except Exception as err:  # pydicom raises several types for damaged files
            raise StudyError(f"{f}: unreadable as DICOM ({type(err).__name__}: {err})") from err
    return headers


def read_series(folder: str, files: Sequence[PathLike], headers: Sequence) -> tuple[sitk.Image, list[str]]:
    """One series (classic or enhanced) as a float32 SimpleITK image and its source files (slice order for classic).

    Raises:
        StudyError: see :func:`check_classic_series`; several multi-frame instances in one series; compressed pixel
            data without a decoder.
    """
    if any(_is_multiframe(h) for h in headers):
        if len(files) != 1:
            count = len(files)
            raise StudyError(f"{folder}: {_describe(headers[0])} holds {count} multi-frame instances; one expected")
        return read_enhanced(folder, str(files[0]), headers[0]), [str(files[0])]
    return read_classic(folder, [str(f) for f in files], headers)


def group_dicom(root: PathLike) -> dict[str, dict[str, list[tuple[Path, object]]]]:
    """The DICOM files under ``root`` as {StudyInstanceUID: {SeriesInstanceUID: [(file, header), ...]}}."""
    files = dicom_files(root)
    studies: dict[str, dict[str, list]] = {}
    for f, h in zip(files, read_headers(files), strict=True):
        for tag in ("StudyInstanceUID", "SeriesInstanceUID"):
            if not getattr(h, tag, None):
                raise StudyError(f"{f}: a DICOM file without {tag}")
        studies.setdefault(str(h.StudyInstanceUID), {}).setdefault(str(h.SeriesInstanceUID), []).append((f, h))
    return studies


def _study_names(root: Path, studies: Mapping[str, Mapping[str, list]]) -> dict[str, str]:
    """A study's name: the first folder below ``root`` that holds all its files and no other study's; ``root``'s own
    name when the only study lies in ``root`` itself; else its StudyInstanceUID."""
    folders = {}
    for uid, series in studies.items():
        parents = {f.relative_to(root).parts[0] for items in series.values() for f, _ in items if f.parent != root}
        loose = any(f.parent == root for items in series.values() for f, _ in items)
        folders[uid] = parents.pop() if len(parents) == 1 and not loose else None
    taken = [f for f in folders.values() if f is not None]
    names = {}
    for uid, folder in folders.items():
        if folder is not None and taken.count(folder) == 1:
            names[uid] = folder
        else:
            names[uid] = root.name if len(studies) == 1 else uid
    return names


def place_series(folder: str, series: Mapping[str, list], mapping: Mapping[str, Sequence[str]]) -> dict[str, list]:
    """{modality: [(file, header), ...]} of a study's series.

    Raises:
        StudyError: a series no modality claims, two series claiming one modality, or a modality missing.
    """
    placed: dict[str, list] = {}
    for items in series.values():
        header = items[0][1]
        modality = series_modality(header, mapping)
        if modality is None:
            raise StudyError(
                f"{folder}: {_describe(header)} cannot be placed as {', '.join(MODALITIES)} from its description, "
                "protocol or sequence name; add its words to dicom_modalities or remove the series"
            )
        if modality in placed:
            raise StudyError(
                f"{folder}: {_describe(placed[modality][0][1])} and {_describe(header)} both look like the "
                f"'{modality}' series; keep one"
            )
        placed[modality] = items
    missing = [m for m in MODALITIES if m not in placed]
    if missing:
        raise StudyError(f"{folder}: no {', '.join(missing)} series among {sorted(placed) or 'its series'}")
    return placed


def convert_study(
    name: str, folder: str, series: Mapping[str, list], cache: PathLike, mapping: Mapping[str, Sequence[str]]
) -> dict[str, str]:
    """Place and read a study's series and write each as ``<cache>/<modality>.nii.gz`` (atomically) with
    ``dicom.json``; returns the study dict (``name``, one NIfTI per modality, ``dicom``: the manifest's path)."""
    placed = place_series(folder, series, mapping)
    cache = Path(cache)
    study: dict[str, str] = {"name": name}
    series_of: dict[str, dict[str, object]] = {}
    manifest: dict[str, object] = {"study": name, "series": series_of}
    for modality in MODALITIES:
        items = placed[modality]
        files, headers = [str(f) for f, _ in items], [h for _, h in items]
        image, ordered = read_series(folder, files, headers)
        path = cache / f"{modality}.nii.gz"
        write_nifti(sitk.GetArrayFromImage(image).transpose(2, 1, 0), affine_ras(image), path, np.float32)
        study[modality] = str(path)
        series_of[modality] = {
            "files": ordered,
            "series_instance_uid": str(headers[0].SeriesInstanceUID),
            "description": str(getattr(headers[0], "SeriesDescription", "") or ""),
        }
        manifest["study_instance_uid"] = str(headers[0].StudyInstanceUID)
    text = json.dumps(manifest, indent=2) + "\n"
    study["dicom"] = str(atomic_write_bytes(text.encode(), cache / DICOM_MANIFEST))
    return study


def scan_dicom_studies(
    dataset_dir: PathLike, cache_dir: PathLike, mapping: Mapping[str, Sequence[str]], done: Sequence[str] = ()
) -> tuple[list[dict[str, str]], list[Failure], list[str]]:
    """The DICOM studies under ``dataset_dir``, each converted into ``<cache_dir>/<name>/``: (studies, failures,
    names of those in ``done``, not converted again)."""
    root = Path(dataset_dir)
    grouped = group_dicom(root)
    names = _study_names(root, grouped)
    studies, failures, skipped = [], [], []
    for uid, series in sorted(grouped.items(), key=lambda item: names[item[0]]):
        name = names[uid]
        if name in done:
            skipped.append(name)
            continue
        folder = str(root / name) if (root / name).is_dir() else str(root)
        try:
            studies.append(convert_study(name, folder, series, Path(cache_dir) / name, mapping))
        except StudyError as err:
            failures.append(Failure(name, str(err)))
    return studies, failures, skipped


def read_manifest(path: PathLike) -> dict:
    """``dicom.json`` of a converted study."""
    return json.loads(Path(path).read_text())
