"""The calibrated rule voxel by voxel, through the post-processing steps that inference.yaml configures: the z-map's
values, the segmentation of the configured map at the calibration's threshold (masked as the voxel set says) and the
study score, on a non-constant map, a non-constant normative model and a brain that fills only part of the grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage
from skimage.morphology import ball

from benchmarks.bench.configs import config_parser
from scripts.calibration import Calibration
from scripts.normative import NormativeModel

SHAPE = (24, 20, 12)
FPRS = [1e-2, 1e-3, 1e-4]


def made_study(seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """(the data post#zmap receives, the map a (H, W, D), the brain (H, W, D) bool): a log-normal map with a bright
    lesion, on a brain that is an ellipsoid inside the grid (about a third of it)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    a = np.exp(rng.normal(-6.0, 0.7, SHAPE)).astype(np.float32)
    a[10:14, 8:12, 4:8] *= 40.0  # a lesion
    a[~brain] *= 0.3  # some signal outside the brain too: the map of voxel_set volume is not masked
    image = torch.as_tensor(np.stack([brain * rng.uniform(0.5, 1.0, SHAPE) for _ in range(4)]), dtype=torch.float32)
    data = {"pred": MetaTensor(torch.as_tensor(a)[None]), "image": MetaTensor(image), "name": "made"}
    return data, a, brain


def made_calibration(seed: int = 1) -> Calibration:
    """A calibration whose normative model varies voxel by voxel, and thresholds that differ per map and rate."""
    rng = np.random.default_rng(seed)
    location = rng.normal(-6.0, 0.3, SHAPE).astype(np.float32)
    scale = rng.uniform(0.4, 1.2, SHAPE).astype(np.float32)
    model = NormativeModel(location, scale, sigma_voxels=2.0, n_studies=5)
    thresholds = {"anomaly": [0.01, 0.02, 0.04], "zmap": [2.0, 3.0, 4.5]}
    return Calibration(Path("made.json"), FPRS, thresholds, model)


def post_steps(calibration: Calibration | None, **overrides: object) -> dict:
    """inference.yaml's post steps (``post#...``) under ``overrides``, with ``calibration`` as if read from a file."""
    parser = config_parser(["inference.yaml"], **overrides)
    parser["calibration"] = calibration
    return parser.get_parsed_content("post")


def expected_zmap(a: np.ndarray, brain: np.ndarray, model: NormativeModel) -> np.ndarray:
    return np.where(brain, (np.log(np.maximum(a, 1e-12)) - model.location) / model.scale, 0.0)


def expected_segmentation(m: np.ndarray, threshold: float, brain: np.ndarray, voxel_set: str) -> np.ndarray:
    seg = m > threshold
    if voxel_set == "brain":
        seg &= brain
    seg = ndimage.binary_dilation(seg, structure=ball(1))
    return seg & brain if voxel_set == "brain" else seg


@pytest.mark.parametrize("segment_map", ["zmap", "anomaly"])
@pytest.mark.parametrize("voxel_set", ["brain", "volume"])
def test_calibrated_segmentation_zmap_and_score_voxel_by_voxel(segment_map, voxel_set):
    """Planted bugs: "ignores the mask" (a brain segmentation not cut to the brain, or the score's quantile over
    every voxel), "thresholds the anomaly map whatever segment_map says", "forgets the scale" (z = log a - mu) and
    "a wrong quantile" (q99 for q99.9)."""
    calibration = made_calibration()
    data, a, brain = made_study()
    post = post_steps(
        calibration,
        segmentation="calibrated",
        segment_map=segment_map,
        target_fpr=1e-3,
        voxel_set=voxel_set,
        dilation_radius=1,
        max_segmented_fraction=None,
        study_score="zmap_q999",
    )
    for step in ("zmap", "segment", "score"):
        data = post[step](data)
    z = expected_zmap(a, brain, calibration.normative)
    np.testing.assert_allclose(data["zmap"][0].numpy(), z, rtol=1e-5, atol=1e-5)
    segmented = z if segment_map == "zmap" else a
    threshold = calibration.thresholds[segment_map][1]
    seg = expected_segmentation(segmented, threshold, brain, voxel_set)
    assert 0 < seg.sum() < brain.sum() / 2, "the made study is segmented in part"
    np.testing.assert_array_equal(data["seg"][0].numpy() > 0.5, seg)
    info = data["seg_info"]
    assert info["threshold"] == threshold and info["rule"] == "calibrated at FPR 0.001"
    assert info["map"] == ("z-map" if segment_map == "zmap" else "anomaly map")
    assert info["study_score_rule"] == "zmap_q999"
    assert info["study_score"] == pytest.approx(np.quantile(z[brain], 0.999), rel=1e-6)
    assert info["scores"]["anomaly_q999"] == pytest.approx(np.quantile(a[brain], 0.999), rel=1e-6)
    assert info["study_score"] != pytest.approx(np.quantile(z, 0.999), rel=1e-3), "the mask matters here"
    assert info["study_score"] != pytest.approx(np.quantile(z[brain], 0.99), rel=1e-3), "the quantile matters here"


def test_study_score_falls_back_to_the_anomaly_quantile_without_a_zmap():
    """Planted bug: "the fallback reports the z-map rule (or no score) when there is no z-map"; and "ignores the mask"
    in the anomaly quantile."""
    data, a, brain = made_study()
    post = post_steps(None, study_score="zmap_q999", voxel_set="brain")
    for step in ("zmap", "segment", "score"):
        data = post[step](data)
    assert "zmap" not in data
    info = data["seg_info"]
    assert info["study_score_rule"] == "anomaly_q999" and "zmap_q999" not in info["scores"]
    assert info["study_score"] == pytest.approx(np.quantile(a[brain], 0.999), rel=1e-6)
    assert info["study_score"] != pytest.approx(np.quantile(a, 0.999), rel=1e-3)
