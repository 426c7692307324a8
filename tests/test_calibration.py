"""Beyond the paper: thresholds at false-positive rates, the normative z-map, the study score and channel fusion."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from runner import TINY_ARGS, run_bundle, tiny_dataset, tiny_weights

from scripts.calibration import (
    Calibration,
    calibrate,
    load_calibration,
    segmentation_fpr,
    segmentation_threshold,
    threshold_at_fpr,
)
from scripts.collect import MapCollector
from scripts.errors import StudyError
from scripts.metrics import Subject
from scripts.normative import NormativeModel, NormativeSums, fit_normative
from scripts.postprocess import EPDIFF_WEIGHTS, ReduceChannels
from scripts.triage import ScoresTable, study_scores

SHAPE = (24, 24, 12)


def healthy_study(seed: int, name: str | None = None, edge_gain: float = 1.0) -> Subject:
    """A made healthy map: log-normal noise, median-filter-like smooth, with a band ``edge_gain`` times higher (the
    systematically high healthy places, like the ventricles)."""
    rng = np.random.default_rng(seed)
    a = np.exp(rng.normal(-6.0, 0.5, SHAPE)).astype(np.float32)
    a[8:12] *= edge_gain
    brain = np.zeros(SHAPE, dtype=bool)
    brain[2:-2, 2:-2, 1:-1] = True
    return Subject(name or f"h{seed}", a * brain, None, brain, healthy=brain.copy(), voxel_ml=1e-3)


def test_thresholds_at_fpr_hold_on_held_out_healthy_studies():
    calibration = [healthy_study(s) for s in range(6)]
    held_out = [healthy_study(100 + s) for s in range(6)]
    for radius in (0, 1):
        for fpr in (1e-2, 1e-3):
            thr, rate = threshold_at_fpr(calibration, [s.a for s in calibration], fpr, radius, "volume")
            assert rate <= fpr
            realised = segmentation_fpr(held_out, [s.a for s in held_out], thr, radius, "volume")
            assert fpr / 2 <= realised <= 2 * fpr, (radius, fpr, realised)
    # the dilation makes a higher threshold than the plain quantile
    plain, _ = threshold_at_fpr(calibration, [s.a for s in calibration], 1e-2, 0, "volume")
    dilated, _ = threshold_at_fpr(calibration, [s.a for s in calibration], 1e-2, 1, "volume")
    assert dilated > plain


def test_zmap_is_flat_where_healthy_maps_are_high_and_high_at_an_anomaly():
    studies = [healthy_study(s, edge_gain=20.0) for s in range(8)]
    total = NormativeSums.zeros(SHAPE)
    for s in studies:
        total = total + NormativeSums.of(s.a, s.healthy)
    model = fit_normative(total, sigma_voxels=1.0)
    new = healthy_study(50, edge_gain=20.0)
    band = np.zeros(SHAPE, dtype=bool)
    band[8:12] = True
    band &= new.mask
    rest = new.mask & ~band
    raw_ratio = np.log(new.a[band]).mean() - np.log(new.a[rest]).mean()
    z = model.zmap(new.a, new.mask)
    assert raw_ratio > 2.5  # the raw map is systematically high in the band ...
    assert abs(z[band].mean()) < 0.5 and abs(z[rest].mean()) < 0.5  # ... the z-map is not
    assert np.all(z[~new.mask] == 0)
    lesion = new.a.copy()
    lesion[14:17, 10:13, 5:7] *= 50.0
    assert model.zmap(lesion, new.mask)[14:17, 10:13, 5:7].mean() > 4.0
    back = NormativeModel.from_bytes(model.to_bytes())
    np.testing.assert_allclose(back.location, model.location, rtol=1e-3, atol=1e-3)
    with pytest.raises(StudyError, match="grid"):
        model.zmap(new.a[:, :, :6], new.mask[:, :, :6])


def test_calibration_file_is_checked_when_read(tmp_path):
    collector = MapCollector(healthy=True)
    for s in range(4):
        collector.add(healthy_study(s))
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    path = tmp_path / "models" / "calibration.json"
    value = calibrate(collector, path, {"t_stride": 10}, weights, target_fprs=[0.01, 0.001])
    assert (tmp_path / "models" / "normative.npz").is_file() and value["target_fprs"] == [0.01, 0.001]
    cal = load_calibration(path, {"t_stride": 10}, weights, required=True)
    assert isinstance(cal, Calibration)
    assert segmentation_threshold(cal, "calibrated", "zmap", 1e-3) == value["thresholds"]["zmap"][1]
    assert segmentation_threshold(cal, "yen", "anomaly", 1e-3) is None
    with pytest.raises(StudyError, match="no threshold at target_fpr 0.05"):
        cal.threshold("anomaly", 0.05)
    with pytest.raises(StudyError, match="t_stride: made with 10, configured 1"):
        load_calibration(path, {"t_stride": 1}, weights, required=True)
    assert load_calibration(path, {"t_stride": 1}, weights, required=False) is None  # not needed: not used
    other = tmp_path / "other.pt"
    other.write_bytes(b"other weights")
    with pytest.raises(StudyError, match="made with other weights"):
        load_calibration(path, {"t_stride": 10}, other, required=True)
    (tmp_path / "models" / "normative.npz").write_bytes(b"changed")
    with pytest.raises(StudyError, match="not the normative model"):
        load_calibration(path, {"t_stride": 10}, weights, required=True)
    with pytest.raises(StudyError, match="no calibration file"):
        load_calibration(tmp_path / "none.json", {}, weights, required=True)


def test_channel_fusions():
    a = torch.rand(4, 5, 5, 3)
    epdiff = ReduceChannels("epdiff", channels=["t1", "t1c", "t2", "flair"])(a)
    expected = 0.2 * a.amax(0, keepdim=True) + 0.5 * a.mean(0, keepdim=True) + 0.3 * a[3:4]
    torch.testing.assert_close(torch.as_tensor(epdiff), expected)
    assert EPDIFF_WEIGHTS == {"max": 0.2, "mean": 0.5, "flair": 0.3}
    weighted = ReduceChannels("weighted", {"t2": 1.0}, ["t1", "t1c", "t2", "flair"])(a)
    torch.testing.assert_close(torch.as_tensor(weighted), a[2:3])
    with pytest.raises(ValueError, match="name no term"):
        ReduceChannels("weighted", {"dwi": 1.0})


def test_scores_table_ranks_studies(tmp_path):
    brain = np.ones(SHAPE, dtype=bool)
    a = np.zeros(SHAPE, dtype=np.float32)
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[:2, :2, :2] = 1
    scores = study_scores(a, brain, np.full(SHAPE, 3.0), seg, voxel_ml=0.5)
    assert scores == {"anomaly_q999": 0.0, "zmap_q999": 3.0, "lesion_volume_ml": 4.0}
    for name, score in (("b", 1.0), ("a", 5.0), ("c", 3.0)):
        (tmp_path / name).mkdir()
        info = {"study": name, "study_score": score, "study_score_rule": "zmap_q999", "lesion_volume_ml": 1.0}
        (tmp_path / name / "segmentation.json").write_text(json.dumps(info))
    path = ScoresTable(tmp_path).write()
    rows = list(csv.DictReader(path.open()))
    assert [r["study"] for r in rows] == ["a", "c", "b"] and [r["rank"] for r in rows] == ["1", "2", "3"]


@pytest.mark.slow
def test_calibrate_then_inference_with_a_calibrated_threshold_and_a_zmap(tmp_path):
    datalist = tiny_dataset(tmp_path / "data", n_healthy=3, n_anomalous=1, n_validation=3, seed=4)
    weights = tiny_weights(tmp_path / "model.pt")
    calibration = tmp_path / "models" / "calibration.json"
    common = [*TINY_ARGS, "--weights", str(weights), "--t_lower", "100", "--t_upper", "101",
              "--calibration_file", str(calibration), "--dataset_dir", str(datalist)]  # fmt: skip
    run = run_bundle("calibrate", ["inference.yaml", "calibrate.yaml"], *common, "--output_dir", str(tmp_path / "c"))
    assert "calibrated on 3 healthy studies" in run.stdout
    content = json.loads(calibration.read_text())
    assert content["settings"]["inferer.timesteps"] == [100]  # read from the inferer: t_lower 100, t_upper 101
    assert content["value"]["target_fprs"] == [0.01, 0.001, 0.0001]
    assert content["weights_sha256"] and (calibration.parent / "normative.npz").is_file()

    # the default (segmentation auto on the z-map): the calibration's z-map threshold, since the calibration fits
    out = tmp_path / "out"
    run_bundle("inference", "inference.yaml", *common, "--output_dir", str(out))
    study = out / "tumour_000"
    assert {"anomaly.nii.gz", "zmap.nii.gz", "segmentation.nii.gz", "overview.png"} <= {p.name for p in study.iterdir()}
    info = json.loads((study / "segmentation.json").read_text())
    assert (info["rule"], info["map"]) == ("calibrated at FPR 0.001", "z-map")
    assert info["threshold"] == pytest.approx(content["value"]["thresholds"]["zmap"][1])
    assert info["study_score_rule"] == "zmap_q999" and "lesion_volume_ml" in info
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [r["study"] for r in rows] == ["tumour_000"]

    # a calibration made under other settings: refused when it is needed; the default falls back to Yen on the
    # anomaly map (no z-map), saying so in the log and in segmentation.json
    other = [*common, "--t_upper", "102", "--output_dir", str(tmp_path / "other")]
    refused = run_bundle("inference", "inference.yaml", *other, "--segmentation", "calibrated", check=False)
    last = (refused.stdout + refused.stderr).strip().splitlines()[-1]
    assert refused.returncode == 1 and last.startswith("error: ")
    assert last.endswith("inferer.timesteps: made with [100], configured [100, 101]")  # t_upper 101 -> 102
    fallback = run_bundle("inference", "inference.yaml", *other)
    assert not (tmp_path / "other" / "tumour_000" / "zmap.nii.gz").exists()
    auto = json.loads((tmp_path / "other" / "tumour_000" / "segmentation.json").read_text())
    assert auto["rule"] == "yen (segmentation auto: no calibration fits these weights and settings)"
    assert auto["map"] == "anomaly map"
    assert "segmentation auto: no calibration fits" in fallback.stdout + fallback.stderr

    # the calibrated rule on the anomaly map, asked for on the command line
    fits = [*common, "--output_dir", str(tmp_path / "auto"), "--segmentation", "calibrated", "--segment_map", "anomaly"]
    run_bundle("inference", "inference.yaml", *fits)
    fitted = json.loads((tmp_path / "auto" / "tumour_000" / "segmentation.json").read_text())
    assert (fitted["rule"], fitted["map"]) == ("calibrated at FPR 0.001", "anomaly map")
    assert fitted["threshold"] == pytest.approx(content["value"]["thresholds"]["anomaly"][1])

    # run evaluate: the calibrated rule's Dice beside Yen's, at the calibration's voxel set and median filter only
    evaluation = tmp_path / "eval"
    run_bundle("evaluate", ["inference.yaml", "evaluate.yaml"], *common, "--output_dir", str(evaluation))
    rows = json.loads((evaluation / "metrics.json").read_text())["metrics"]
    (fitted_row,) = [r for r in rows if r["calibrated_threshold"] is not None]
    assert (fitted_row["voxel_set"], fitted_row["median_filter"]) == ("volume", 5)
    assert fitted_row["calibrated_threshold"] == pytest.approx(content["value"]["thresholds"]["zmap"][1])
    assert fitted_row["calibrated_map"] == "zmap"
    assert fitted_row["dice_calibrated"] is not None and 0.0 <= fitted_row["fpr_calibrated"] <= 1.0
    assert "Calibrated rule (volume, median filter 5)" in (evaluation / "metrics.md").read_text()
