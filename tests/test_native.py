"""Native-space studies: the preprocess workflow, registration inside inference, outputs on the native grid."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from runner import TINY_NET, run_bundle, tiny_dataset, tiny_weights

from scripts.histogram import DEFAULT_PERCENTILES, HistogramMatchd, build_histogram_landmarks
from scripts.native import matrix_transform, transform_matrix


def test_transform_matrix_round_trip():
    rigid = sitk.Euler3DTransform((10.0, -5.0, 3.0), 0.1, -0.05, 0.2, (4.0, 2.0, -7.0))
    affine = sitk.AffineTransform([1.05, 0.02, 0, -0.01, 0.97, 0.03, 0, 0.01, 1.1], [1.0, 2.0, 3.0], (5.0, 0, 0))
    composite = sitk.CompositeTransform([affine, rigid])
    again = matrix_transform(torch.as_tensor(transform_matrix(composite)))
    for point in [(0.0, 0.0, 0.0), (50.0, -20.0, 80.0), (-100.0, 30.0, 5.0)]:
        np.testing.assert_allclose(again.TransformPoint(point), composite.TransformPoint(point), atol=1e-6)


def test_histogram_landmarks_built_and_matched(tmp_path):
    datalist = tiny_dataset(tmp_path / "data", n_healthy=3, seed=3)
    path = build_histogram_landmarks(datalist, tmp_path / "landmarks.json")
    content = json.loads(path.read_text())
    assert content["percentiles"] == list(DEFAULT_PERCENTILES)
    assert set(content["landmarks"]) == {"t1", "t1c", "t2", "flair"}
    study = json.loads(datalist.read_text())["training"][0]
    flair = nib.load(datalist.parent / study["flair"]).get_fdata().astype(np.float32)
    matched = HistogramMatchd(keys="flair", landmarks=path)({"flair": torch.as_tensor(2.5 * flair)})["flair"]
    matched = matched.numpy()
    assert np.all(matched[flair == 0] == 0)
    got = np.percentile(matched[flair != 0], DEFAULT_PERCENTILES)
    np.testing.assert_allclose(got, content["landmarks"]["flair"], rtol=0.05)


@pytest.mark.slow
def test_preprocess_workflow_passes_a_registered_study_through_and_resumes(shared_data, tmp_path):
    src = tmp_path / "in" / "glioma"
    shutil.copytree(shared_data / "cases" / "glioma_sri24", src)
    (src / "seg_model.nii.gz").rename(src / "seg.nii.gz")
    out = tmp_path / "prepared"
    run_bundle("preprocess", "preprocess.yaml", "--dataset_dir", str(tmp_path / "in"), "--output_dir", str(out))
    manifest = json.loads((out / "datalist.json").read_text())
    item = manifest["training"][0]
    assert item["name"] == "glioma" and set(item) == {"name", "t1", "t1c", "t2", "flair", "label"}
    original, prepared = nib.load(src / "t1n.nii.gz"), nib.load(out / item["t1"])
    np.testing.assert_array_equal(prepared.get_fdata(), original.get_fdata())
    np.testing.assert_allclose(prepared.affine, original.affine, atol=1e-4)
    assert not (out / "glioma" / "transform.tfm").exists(), "a study on the atlas lattice must not be registered"
    label = nib.load(out / item["label"]).get_fdata()
    assert set(np.unique(label)) == {0.0, 1.0}
    mtime = (out / item["t1"]).stat().st_mtime_ns
    run_bundle("preprocess", "preprocess.yaml", "--dataset_dir", str(tmp_path / "in"), "--output_dir", str(out))
    assert (out / item["t1"]).stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_inference_registers_a_native_study_and_answers_on_its_grid(shared_data, tmp_path):
    studies = tmp_path / "studies"
    shutil.copytree(shared_data / "cases" / "lgg_native", studies / "lgg")
    tiny_weights(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    run_bundle(
        "inference",
        "inference.yaml",
        "--dataset_dir",
        str(studies),
        "--output_dir",
        str(out),
        "--weights",
        str(tmp_path / "tiny.pt"),
        "--network_preset",
        TINY_NET,
        "--image_size",
        "32",
        "--t_stride",
        "125",
        "--save_preprocessed",
        "true",
    )
    reference = nib.load(studies / "lgg" / "t1.nii.gz")
    for name, dtype in (("anomaly.nii.gz", np.float32), ("segmentation.nii.gz", np.uint8)):
        img = nib.load(out / "lgg" / name)
        assert img.shape == reference.shape
        np.testing.assert_allclose(img.affine, reference.affine, atol=1e-3)
        assert img.get_data_dtype() == dtype
    amap = nib.load(out / "lgg" / "anomaly.nii.gz").get_fdata()
    brain = nib.load(studies / "lgg" / "bet_t1c_mask.nii.gz")
    assert amap.max() > 0 and 0.05 < (amap > 0).mean() < 0.6, "the map should cover the brain, not the whole head"
    assert brain.shape[2] == reference.shape[2]
    pre = nib.load(out / "lgg" / "preprocessed.nii.gz")
    assert pre.shape == (240, 240, 155, 4)
    tfm = sitk.ReadTransform(str(out / "lgg" / "transform.tfm"))
    assert np.isfinite(tfm.TransformPoint((0.0, 0.0, 0.0))).all()
