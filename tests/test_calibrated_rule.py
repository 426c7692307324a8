"""The calibrated rule voxel by voxel, through the post-processing steps that inference.yaml configures: the z-map's
values, the segmentation of the configured map at the calibration's threshold (masked as the voxel set says) and the
study score, on a non-constant map, a non-constant normative model and a brain that fills only part of the grid; and
the evaluation of the calibrated rule beside Yen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage
from skimage.morphology import ball

from benchmarks.bench.configs import config_parser
from scripts.calibration import AUTO_FALLBACK, Calibration
from scripts.errors import StudyError
from scripts.metrics import CalibratedRule, Subject, dice, evaluate_all, median_filtered
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


@pytest.mark.parametrize("segment_map", ["anomaly", "zmap"])
@pytest.mark.parametrize("voxel_set", ["brain", "volume"])
def test_evaluation_gives_the_calibrated_rules_dice_and_false_positive_rate(voxel_set, segment_map):
    """The evaluation's calibrated rule, voxel by voxel: the map (or its z-map under the calibration's normative
    model, from the median-filtered map) thresholded at the calibration's threshold plus the dilation, Dice per
    subject, and the pooled rate on the healthy voxels; only at the median filter and voxel set it was calibrated
    under. Planted bugs: "Yen's segmentation reused", "the rate over the whole brain (lesion included)", "the rule
    applied at every median filter", "the anomaly map thresholded whatever segment_map says"."""
    model = made_calibration().normative
    studies = []
    for seed in (0, 1):
        data, a, brain = made_study(seed)
        label = np.zeros(SHAPE, bool)
        label[10:14, 8:12, 4:8] = True
        healthy = brain & ~ndimage.binary_dilation(label, iterations=3)
        studies.append(Subject(f"s{seed}", a, label.astype(np.uint8), brain, healthy=healthy))

    def segmented(s: Subject) -> np.ndarray:  # the map the rule thresholds, at median filter 3
        m = median_filtered(np.where(s.mask, s.a, 0) if voxel_set == "brain" else s.a, 3)
        return expected_zmap(m, s.mask, model) if segment_map == "zmap" else m

    threshold = float(np.quantile(np.concatenate([segmented(s)[s.healthy] for s in studies]), 0.99))
    rule = CalibratedRule(threshold, 1e-2, voxel_set, 3, segment_map, model if segment_map == "zmap" else None)
    results = evaluate_all(studies, (0, 3), dilation_radius=1, voxel_sets=[voxel_set], calibrated=rule)
    off, three = results
    assert np.isnan(off.dice_calibrated) and np.isnan(off.calibrated_threshold), "only where it was calibrated"
    marked, healthy_total, false_pos = [], 0, 0
    for s in studies:
        seg = expected_segmentation(segmented(s), threshold, s.mask, voxel_set)
        target = s.label.astype(bool) & (s.mask if voxel_set == "brain" else True)
        marked.append(dice(seg, target))
        false_pos += int((seg & s.healthy).sum())
        healthy_total += int(s.healthy.sum())
    assert [x.dice_calibrated for x in three.subjects] == pytest.approx(marked)
    assert three.dice_calibrated == pytest.approx(np.mean(marked))
    assert three.fpr_calibrated == pytest.approx(false_pos / healthy_total)
    assert three.dice_calibrated != pytest.approx(three.dice_yen), "Yen's segmentation differs here"
    assert three.summary()["target_fpr"] == 1e-2 and three.summary()["calibrated_threshold"] == threshold
    assert three.summary()["calibrated_map"] == segment_map
    with pytest.raises(ValueError, match="needs the calibration's normative model"):
        CalibratedRule(threshold, 1e-2, voxel_set, 3, "zmap")


def test_evaluate_config_evaluates_the_calibrated_rule_only_with_a_calibration():
    """evaluate.yaml: a calibration that fits gives the rule at the configured voxel set and median filter, and the
    collector keeps the healthy voxels its rate needs; none gives no rule (Yen alone), the healthy voxels not kept."""
    calibration = made_calibration()
    parser = config_parser(["inference.yaml", "evaluate.yaml"], voxel_set="brain", median_filter_size=3)
    parser["calibration"] = calibration
    rule = parser.get_parsed_content("calibrated_rule")  # the default: the z-map, as inference segments
    assert rule == CalibratedRule(calibration.threshold("zmap", 1e-3), 1e-3, "brain", 3, "zmap", calibration.normative)
    assert rule.normative is calibration.normative
    assert parser.get_parsed_content("collector").healthy
    assert parser.get_parsed_content("report").calibrated == rule
    parser = config_parser(["inference.yaml", "evaluate.yaml"], voxel_set="brain", segment_map="anomaly")
    parser["calibration"] = calibration
    assert parser.get_parsed_content("calibrated_rule").threshold == calibration.threshold("anomaly", 1e-3)
    parser = config_parser(["inference.yaml", "evaluate.yaml"])
    parser["calibration"] = None
    assert parser.get_parsed_content("calibrated_rule") is None
    assert not parser.get_parsed_content("collector").healthy


def test_segmentation_auto_is_the_calibrated_rule_where_a_calibration_fits_else_yen():
    """inference.yaml's segment step under ``segmentation auto``: the calibration's threshold and its rule with a
    calibration; Yen's own threshold and the fallback's rule (segmentation.json) without; ``calibrated`` without a
    calibration stops with one line."""
    data, a, brain = made_study()
    calibration = made_calibration()
    on_anomaly = {"segmentation": "auto", "segment_map": "anomaly", "voxel_set": "brain"}
    fitted = post_steps(calibration, **on_anomaly)["segment"](dict(data))["seg_info"]
    assert fitted["rule"] == "calibrated at FPR 0.001"
    assert fitted["threshold"] == pytest.approx(calibration.threshold("anomaly", 1e-3))
    fallback = post_steps(None, **on_anomaly)["segment"](dict(data))["seg_info"]
    yen = post_steps(None, segmentation="yen", segment_map="anomaly", voxel_set="brain")["segment"](dict(data))[
        "seg_info"
    ]
    assert fallback["rule"] == AUTO_FALLBACK and yen["rule"] == "yen"
    assert fallback["threshold"] == yen["threshold"] != fitted["threshold"]
    with pytest.raises(RuntimeError) as err:  # MONAI's config parser wraps the error; the error hook unwraps it
        post_steps(None, segmentation="calibrated")
    assert isinstance(err.value.__cause__, StudyError)
    assert "segmentation calibrated needs a calibration file" in str(err.value.__cause__)


def segmented_by(configs: list[str], calibration: Calibration | None) -> dict:
    """``seg_info`` of the made study after the zmap and segment steps of ``configs`` (inference.yaml first), with
    ``calibration`` as if read from a file."""
    parser = config_parser(configs, voxel_set="brain")
    parser["calibration"] = calibration
    post = parser.get_parsed_content("post")
    data, _, _ = made_study()
    return post["segment"](post["zmap"](data))["seg_info"]


def test_the_default_segments_the_calibrated_zmap_where_a_calibration_fits_and_the_paper_keeps_yen(tmp_path):
    """The default rule (segmentation auto on the z-map at FPR 1e-3, chosen by docs/segmentation_rule_made_data.md):
    the calibration's z-map threshold where a calibration fits; Yen on the anomaly map, saying so, where none does,
    and no error for a missing file. The paper profile and the baselines keep Yen on the anomaly map even with a
    calibration. Planted bugs: "auto falls back to Yen on a z-map that does not exist", "the default needs a
    calibration", "paper.yaml inherits the calibrated default"."""
    calibration = made_calibration()
    fitted = segmented_by(["inference.yaml"], calibration)
    assert (fitted["rule"], fitted["map"]) == ("calibrated at FPR 0.001", "z-map")
    assert fitted["threshold"] == calibration.threshold("zmap", 1e-3)
    fallback = segmented_by(["inference.yaml"], None)
    assert (fallback["rule"], fallback["map"]) == (AUTO_FALLBACK, "anomaly map")
    yen = segmented_by(["inference.yaml", "paper.yaml"], calibration)
    assert (yen["rule"], yen["map"]) == ("yen", "anomaly map") and yen["threshold"] == fallback["threshold"]
    missing = {"calibration_file": str(tmp_path / "none.json")}
    assert config_parser(["inference.yaml"], **missing).get_parsed_content("calibration") is None
    with pytest.raises(RuntimeError) as err:  # Yen on a z-map needs the calibration's normative model
        config_parser(["inference.yaml"], segmentation="yen", **missing).get_parsed_content("calibration")
    assert "no calibration file" in str(err.value.__cause__)
    for baseline in ("flair", "dae", "anoddpm", "autoddpm"):
        parser = config_parser(["inference.yaml", f"{baseline}.yaml"])
        assert (parser["segmentation"], parser["segment_map"]) == ("yen", "anomaly"), baseline
