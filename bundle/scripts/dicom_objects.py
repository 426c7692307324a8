"""DICOM out (``post#write_dicom``): for a study read from DICOM, the segmentation as a DICOM Segmentation (SEG)
and the anomaly map (and the z-map, when a calibration gives one) as DICOM Parametric Maps, all with highdicom.

Each object is derived from the reference modality's source series (``reference_modality``, T1 by default): it
references that series' instances, sits on its frame of reference with one frame per source frame (same rows,
columns, positions and orientation), and belongs to the same study. The SEG holds one binary segment ("anomaly",
a morphologically abnormal structure) whose algorithm identification names the method, the bundle's version
(``configs/metadata.json``) and the weights' sha256. The Parametric Maps hold float32 values with a real-world value
mapping (identity, no units) saying what the values are. Files: ``segmentation.dcm``, ``anomaly.dcm`` and
``zmap.dcm`` in ``<output_dir>/<study>/``, each written atomically; UIDs are derived from the source study, the
object's kind and the weights, so a rerun replaces an object rather than adding another. NIfTI studies get none.

These objects are research outputs of an unsupervised anomaly detector, not a medical device's findings.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scripts.errors import StudyError
from scripts.files import atomic_write_bytes
from scripts.grid import read_grid, to_sitk
from scripts.studies import study_name
from scripts.values import file_sha256

logger = logging.getLogger(__name__)

SEG_FILE = "segmentation.dcm"
ANOMALY_DICOM_FILE = "anomaly.dcm"
ZMAP_DICOM_FILE = "zmap.dcm"
DICOM_FILES: tuple[str, ...] = (SEG_FILE, ANOMALY_DICOM_FILE, ZMAP_DICOM_FILE)
SERIES_NUMBERS = {"seg": 9001, "anomaly": 9002, "zmap": 9003}

MAP_TEXT = {  # LUT label (16 characters at most) and explanation (64 at most) of each map
    "anomaly": ("ANOMALY", "anomaly map (aggregated posterior-mean deviation; higher: odder)"),
    "zmap": ("ZMAP", "z-map of the log anomaly map against healthy brains"),
}


def _one(value: object) -> object:
    """A value that MONAI's batching turned into a list of one."""
    return value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value


def bundle_version(metadata: str | os.PathLike | None) -> str:
    """The bundle's version from ``metadata.json`` (``"unknown"`` without one)."""
    try:
        return str(json.loads(Path(metadata).read_text())["version"])
    except (OSError, TypeError, KeyError, ValueError):
        return "unknown"


def frame_positions(sources: list) -> list[tuple[float, float, float]]:
    """The LPS position of each source frame, in the order highdicom pairs frames with ``sources``."""
    if len(sources) == 1 and int(getattr(sources[0], "NumberOfFrames", 1) or 1) > 1:
        groups = sources[0].PerFrameFunctionalGroupsSequence
        return [tuple(float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient) for g in groups]
    return [tuple(float(v) for v in ds.ImagePositionPatient) for ds in sources]


def frames_on_sources(volume: sitk.Image, reference: sitk.Image, positions: list) -> np.ndarray:
    """``volume`` resampled onto the reference grid and cut into one (rows, columns) frame per source position:
    (frames, rows, columns). The reference grid is the source series' own (its converted NIfTI), so the resampling
    is a copy; a frame off that grid is a bug."""
    same = sitk.Resample(volume, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0, volume.GetPixelID())
    array = sitk.GetArrayFromImage(same)  # (z, y, x) = (slice, rows, columns)
    frames = []
    for p in positions:
        index = np.array(reference.TransformPhysicalPointToContinuousIndex(p))
        k = int(round(index[2]))
        if np.abs(index - [0, 0, k]).max() > 1e-2 or not 0 <= k < array.shape[0]:
            raise ValueError(f"source frame at {p} is not a slice of the reference grid (index {index})")
        frames.append(array[k])
    return np.stack(frames)


def _body_part(dataset, sources: list) -> None:
    """The source's body part (the brain, not a paired structure: no Laterality is due), or BRAIN."""
    dataset.BodyPartExamined = str(getattr(sources[0], "BodyPartExamined", "") or "BRAIN")


def _save(dataset, path: Path) -> Path:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return atomic_write_bytes(buffer.getvalue(), path)


class WriteDicomOutputsd(MapTransform):
    """Write a DICOM study's SEG and Parametric Maps (see the module docstring); nothing for a NIfTI study.

    Use after ``post#write``: ``keys`` (the anomaly map), ``seg_key`` and ``zmap_key`` are then MetaTensors
    (1, X, Y, Z) on the reference modality's native grid.

    Args:
        keys: the anomaly map.
        output_dir: the output folder.
        seg_key, zmap_key: the segmentation (> 0.5 is marked) and the z-map (when present).
        manifest_key: the study's ``dicom.json`` (``scripts.dicom_series``); studies without one are left alone.
        reference_key: the reference modality's converted NIfTI (its grid is the source series').
        reference_modality: the modality whose series the objects are derived from.
        method: the algorithm's name; metadata: ``configs/metadata.json`` (its version); weights: the checkpoint.
        enabled: false writes nothing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        seg_key: str = "seg",
        zmap_key: str = "zmap",
        manifest_key: str = "dicom",
        reference_key: str = "native_reference",
        reference_modality: str = "t1",
        method: str = "ANDi",
        metadata: str | os.PathLike | None = None,
        weights: str | os.PathLike | None = None,
        enabled: bool = True,
    ) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.seg_key, self.zmap_key, self.manifest_key = seg_key, zmap_key, manifest_key
        self.reference_key, self.reference_modality = reference_key, reference_modality
        self.method, self.version = method, bundle_version(metadata)
        self.weights_sha256 = file_sha256(weights) if weights and Path(weights).is_file() else "unknown"
        self.enabled = bool(enabled)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        manifest_path = _one(d.get(self.manifest_key))
        if not self.enabled or not manifest_path:
            return d
        manifest = json.loads(Path(str(manifest_path)).read_text())
        series = manifest["series"][self.reference_modality]
        sources = self.read_sources(series["files"])
        reference = read_grid(str(_one(d[self.reference_key]))).blank()
        positions = frame_positions(sources)
        folder = self.output_dir / study_name(d)
        for key in self.key_iterator(d):
            seg = frames_on_sources(to_sitk(d[self.seg_key].float()), reference, positions) > 0.5
            self.write_seg(sources, seg, folder / SEG_FILE)
            maps = {"anomaly": d[key], "zmap": d.get(self.zmap_key)}
            for kind, volume in maps.items():
                if volume is None:
                    continue
                values = frames_on_sources(to_sitk(volume.float()), reference, positions).astype(np.float32)
                path = folder / (ANOMALY_DICOM_FILE if kind == "anomaly" else ZMAP_DICOM_FILE)
                self.write_map(sources, values, kind, path)
            logger.info("%s: wrote DICOM SEG and parametric maps in %s", study_name(d), folder)
        return d

    @staticmethod
    def read_sources(files: list[str]) -> list:
        import pydicom

        try:
            return [pydicom.dcmread(f) for f in files]
        except (OSError, pydicom.errors.InvalidDicomError) as err:
            name = getattr(err, "filename", None) or files[0]
            raise StudyError(f"{name}: the source DICOM series cannot be read again ({err})") from err

    def _uid(self, sources: list, kind: str, part: str) -> str:
        from pydicom.uid import generate_uid

        return generate_uid(entropy_srcs=[str(sources[0].StudyInstanceUID), str(sources[0].SeriesInstanceUID),
                                          kind, part, self.weights_sha256, self.version])  # fmt: skip

    def _common(self, sources: list, kind: str) -> dict[str, object]:
        return {
            "series_instance_uid": self._uid(sources, kind, "series"),
            "series_number": SERIES_NUMBERS[kind],
            "sop_instance_uid": self._uid(sources, kind, "instance"),
            "instance_number": 1,
            "manufacturer": "ANDi bundle contributors",
            "manufacturer_model_name": self.method,
            "software_versions": self.version,
            "device_serial_number": self.weights_sha256[:16],
        }

    def write_seg(self, sources: list, mask: np.ndarray, path: Path) -> Path:
        """The SEG of ``mask`` (frames, rows, columns), one binary segment with the algorithm identification."""
        import highdicom as hd
        from pydicom.sr.codedict import codes

        algorithm = hd.AlgorithmIdentificationSequence(
            name=self.method,
            family=codes.cid7162.ArtificialIntelligence,
            version=self.version,
            parameters={"weights_sha256": self.weights_sha256},
        )
        segment = hd.seg.SegmentDescription(
            segment_number=1,
            segment_label="anomaly",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=mask.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_description=f"{self.method} anomaly segmentation (research)",
            content_label="ANOMALY",
            content_description=f"{self.method} unsupervised anomaly segmentation; not a medical device",
            **self._common(sources, "seg"),
        )
        _body_part(seg, sources)
        return _save(seg, path)

    def write_map(self, sources: list, values: np.ndarray, kind: str, path: Path) -> Path:
        """A Parametric Map of ``values`` (frames, rows, columns) float32."""
        import highdicom as hd
        from pydicom.sr.codedict import codes

        label, explanation = MAP_TEXT[kind]
        lo, hi = float(values.min()), float(values.max())
        mapping = hd.pm.RealWorldValueMapping(
            lut_label=label, lut_explanation=explanation, unit=codes.UCUM.NoUnits,
            value_range=(lo, hi), intercept=0.0, slope=1.0,
        )  # fmt: skip
        # the map's values may span far less than 1: a linear-exact window is valid for any width
        window = hd.VOILUTTransformation(
            window_center=(lo + hi) / 2, window_width=max(hi - lo, 1e-6), voi_lut_function="LINEAR_EXACT"
        )
        pmap = hd.pm.ParametricMap(
            source_images=sources,
            pixel_array=values,
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            voi_lut_transformations=[window],
            series_description=f"{self.method} {kind} map (research)",
            content_label=label,
            content_description=f"{self.method} {kind} map; research, not a medical device",
            **self._common(sources, kind),
        )
        _body_part(pmap, sources)
        return _save(pmap, path)
