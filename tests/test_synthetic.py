"""Tests of the made (synthetic) study generator, on tiny coarse grids so that they run in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from scripts import KNOWN_MODALITIES, MODALITIES
from scripts.studies import find_study_files, list_studies
from scripts.synthetic import SyntheticStudy, make_dataset, make_study, write_study

SMALL = {"shape": (48, 48, 32), "spacing": (5.0, 5.0, 5.0)}
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def healthy() -> list[SyntheticStudy]:
    return [make_study(seed, "none", **SMALL) for seed in SEEDS]


@pytest.fixture(scope="module")
def tumours() -> list[SyntheticStudy]:
    return [make_study(seed, "tumour", **SMALL) for seed in SEEDS]


def _means(study: SyntheticStudy, modality: str) -> dict[str, float]:
    """Mean intensity of the healthy CSF, GM and WM voxels of one modality."""
    image, healthy = study.images[modality], study.label == 0
    return {
        name: float(image[(study.tissue == code) & healthy].mean())
        for code, name in enumerate(("", "csf", "gm", "wm"))
        if code
    }


def test_shapes_types_and_orientation(healthy: list[SyntheticStudy]) -> None:
    study = healthy[0]
    assert set(study.images) == set(KNOWN_MODALITIES)  # the default four and the PD made from T2
    for image in study.images.values():
        assert image.shape == SMALL["shape"] and image.dtype == np.float32
    assert study.label.shape == SMALL["shape"] and study.label.dtype == np.uint8
    assert nib.aff2axcodes(study.affine) == ("L", "P", "S")
    np.testing.assert_allclose(np.abs(np.diag(study.affine)[:3]), SMALL["spacing"])
    assert not study.label.any()


def test_same_seed_same_study_other_seed_differs() -> None:
    a, b, c = (make_study(seed, "tumour", **SMALL) for seed in (5, 5, 6))
    for m in MODALITIES:
        np.testing.assert_array_equal(a.images[m], b.images[m])
        assert not np.array_equal(a.images[m], c.images[m])
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.label, c.label)


def test_tissue_contrasts(healthy: list[SyntheticStudy]) -> None:
    for study in healthy:
        t1, t1c, t2, flair = (_means(study, m) for m in MODALITIES)
        assert t1["wm"] > t1["gm"] > t1["csf"]
        assert t1c["wm"] > t1c["gm"] > t1c["csf"]
        assert t2["csf"] > t2["gm"] > t2["wm"]
        assert flair["gm"] > flair["wm"] > flair["csf"]
        pd = _means(study, "pd")
        assert pd["csf"] > pd["gm"] > pd["wm"]  # as a proton density image
        assert 100 < t1["wm"] < 1500  # scanner-like units


def test_skull_stripped(healthy: list[SyntheticStudy]) -> None:
    for study in healthy:
        assert 0.05 < study.mask.mean() < 0.5
        for m in KNOWN_MODALITIES:
            assert not study.images[m][~study.mask].any()
            assert (study.images[m][study.mask] > 0).mean() > 0.99
    # the brain fits the field of view: the grid's outer faces are empty in x and y
    mask = healthy[0].mask
    assert not mask[[0, -1]].any() and not mask[:, [0, -1]].any()


def test_tumour_labels_and_contrast(tumours: list[SyntheticStudy]) -> None:
    for study in tumours:
        assert set(np.unique(study.label)) == {0, 1, 2, 4}
        assert not study.label[~study.mask].any()
        assert ndi.label(study.label > 0)[1] == 1
        wm = {m: _means(study, m)["wm"] for m in MODALITIES}
        inside = {v: study.label == v for v in (1, 2, 4)}
        assert study.images["flair"][inside[2]].mean() > 1.3 * wm["flair"]
        assert study.images["t2"][inside[2]].mean() > 1.3 * wm["t2"]
        assert study.images["t1"][inside[2]].mean() < wm["t1"]
        assert study.images["t1c"][inside[4]].mean() > 1.2 * wm["t1c"]
        assert study.images["t1"][inside[1]].mean() < 0.8 * wm["t1"]
        assert study.images["t2"][inside[1]].mean() > 1.3 * wm["t2"]


def test_ms_lesions() -> None:
    for seed in SEEDS:
        study = make_study(seed, "ms", **SMALL)
        assert set(np.unique(study.label)) == {0, 1}
        assert not study.label[~study.mask].any()
        assert ndi.label(study.label > 0)[1] >= 4
        lesion, wm = study.label == 1, _means(study, "flair")["wm"]
        assert study.images["flair"][lesion].mean() > 1.15 * wm


def test_unknown_lesion() -> None:
    with pytest.raises(ValueError, match="lesion"):
        make_study(0, "glioma", **SMALL)


def test_write_study(tmp_path: Path, tumours: list[SyntheticStudy]) -> None:
    study = tumours[0]
    paths = write_study(study, tmp_path, "case")
    assert paths["name"] == "case" and set(paths) == {"name", *MODALITIES, "label"}
    assert Path(paths["flair"]) == tmp_path / "case" / "case_flair.nii.gz"
    assert Path(paths["label"]).name == "case_seg.nii.gz"
    for m in MODALITIES:
        img = nib.load(paths[m])
        assert img.shape == SMALL["shape"] and img.get_data_dtype() == np.int16
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
        np.testing.assert_allclose(img.affine, study.affine)
        np.testing.assert_allclose(np.asarray(img.dataobj), np.rint(study.images[m]), atol=0)
    seg = nib.load(paths["label"])
    np.testing.assert_array_equal(np.asarray(seg.dataobj), study.label)
    # the repo's own study discovery recognises the BraTS-style names
    found = find_study_files(tmp_path / "case")
    assert {k: found[k] for k in (*MODALITIES, "label")} == {k: paths[k] for k in (*MODALITIES, "label")}


def test_make_dataset_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "data"
    datalist = make_dataset(out, n_healthy=3, n_anomalous=2, lesion="ms", seed=1, n_validation=1, **SMALL)
    assert datalist == out / "datalist.json"
    content = json.loads(datalist.read_text())
    assert [len(content[k]) for k in ("training", "validation", "testing")] == [2, 1, 2]
    assert [item["name"] for item in content["testing"]] == ["ms_000", "ms_001"]
    names = set()
    for items in content.values():
        for item in items:
            names.add(item["name"])
            for key in (*MODALITIES, "label"):
                assert not Path(item[key]).is_absolute() and (out / item[key]).is_file()
    assert len(names) == 5
    assert len(list_studies(datalist, "testing")) == 2

    files = sorted(p for p in out.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    make_dataset(out, n_healthy=3, n_anomalous=2, lesion="ms", seed=1, n_validation=1, **SMALL)
    assert sorted(p for p in out.rglob("*") if p.is_file()) == files
    assert {p: p.stat().st_mtime_ns for p in files} == stamps

    # an interrupted study is made again, identically; the others are left alone
    lost = out / "healthy_001" / "healthy_001_t2.nii.gz"
    before = np.asarray(nib.load(lost).dataobj)
    lost.unlink()
    make_dataset(out, n_healthy=3, n_anomalous=2, lesion="ms", seed=1, n_validation=1, **SMALL)
    np.testing.assert_array_equal(np.asarray(nib.load(lost).dataobj), before)
    assert (
        stamps[out / "healthy_000" / "healthy_000_t2.nii.gz"]
        == (out / "healthy_000" / "healthy_000_t2.nii.gz").stat().st_mtime_ns
    )
    assert stamps[datalist] == datalist.stat().st_mtime_ns


@pytest.mark.parametrize("label_name", ["seg.nii.gz", "BraTS-GLI-00001-000-seg.nii.gz", "seg_model.nii.gz"])
def test_study_discovery_finds_the_label_by_name(tmp_path: Path, label_name: str) -> None:
    names = {"t1": "x_t1n.nii.gz", "t1c": "x_t1c.nii.gz", "t2": "x_t2w.nii.gz", "flair": "x_t2f.nii.gz"}
    for name in [*names.values(), label_name, "notes_model.nii.gz"]:
        (tmp_path / name).write_bytes(b"")
    assert find_study_files(tmp_path) == {
        **{k: str(tmp_path / v) for k, v in names.items()},
        "label": str(tmp_path / label_name),
    }
    (tmp_path / "seg_manual.nii.gz").write_bytes(b"")  # a second label: which one is meant is not guessed
    with pytest.raises(ValueError, match="look like the 'label' image"):
        find_study_files(tmp_path)
