"""Made (synthetic) DICOM studies for the tests: a made NIfTI study written as MR series, classic single-frame or
enhanced multi-frame (highdicom's legacy conversion), with the geometry of the NIfTI files."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

DESCRIPTIONS = {"t1": "T1 MPRAGE", "t1c": "T1 MPRAGE post Gd", "t2": "T2 TSE axial", "flair": "T2 FLAIR axial"}


def _base(study_uid: str, frame_uid: str, name: str):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientName = f"Made^{name}"
    ds.PatientID = f"MADE-{name}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = datetime.date(2026, 1, 1).strftime("%Y%m%d")
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = "A1"
    ds.ReferringPhysicianName = ""
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Modality = "MR"
    ds.Manufacturer = "made data"
    return ds


def classic_datasets(
    image: sitk.Image, description: str, series_number: int, study_uid: str, frame_uid: str, name: str = "study"
) -> list:
    """One MR Image Storage dataset per axial slice of ``image`` (its voxels scaled to 0..4095, unsigned 16 bit)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    array = sitk.GetArrayFromImage(image).astype(np.float64)  # (z, y, x)
    top = float(array.max()) or 1.0
    pixels = np.clip(np.round(array / top * 4095.0), 0, 4095).astype(np.uint16)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    series_uid = generate_uid()
    out = []
    for k in range(pixels.shape[0]):
        ds = _base(study_uid, frame_uid, name)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = description
        ds.ProtocolName = description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.EchoTime = 10.0
        ds.RepetitionTime = 500.0
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = 3.0
        ds.ImageOrientationPatient = [float(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.ImagePositionPatient = [float(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[2])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels[k].tobytes()
        ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
        pydicom.dataset.validate_file_meta(ds.file_meta)
        out.append(ds)
    return out


def write_dicom_study(
    nifti: dict[str, Path], folder: Path, enhanced: bool = False, name: str = "study", study_uid: str | None = None
) -> Path:
    """Write the modalities of a made NIfTI study (``{modality: path}``) as one DICOM study under ``folder``, a
    sub-folder per series; classic single-frame files or (``enhanced``) one multi-frame file per series."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    for number, (modality, path) in enumerate(sorted(nifti.items()), start=1):
        if modality not in DESCRIPTIONS:
            continue
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
        datasets = classic_datasets(image, DESCRIPTIONS[modality], number, study_uid, frame_uid, name)
        series_dir = folder / f"series_{number:02d}"
        series_dir.mkdir(parents=True, exist_ok=True)
        if enhanced:  # made sources have no window: highdicom's converter says so for every frame
            logging.getLogger("highdicom.legacy.sop").setLevel(logging.ERROR)
            multi = hd.legacy.LegacyConvertedEnhancedMRImage(datasets, generate_uid(), number, generate_uid(), 1)
            multi.save_as(series_dir / "image.dcm", enforce_file_format=True)
        else:
            for ds in datasets:
                ds.save_as(series_dir / f"{int(ds.InstanceNumber):04d}.dcm", enforce_file_format=True)
    return folder
