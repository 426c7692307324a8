"""`python -m monai.bundle run evaluate` through the real command line, on tiny made (synthetic) studies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ignite.engine import Engine
from runner import TINY_NET, tiny_dataset, tiny_weights
from scipy import ndimage
from sklearn.metrics import average_precision_score

from benchmarks.bench.configs import config_files
from scripts.collect import LABEL_MARGIN, MapCollector, load_maps
from scripts.errors import StudyError
from scripts.metrics import median_filtered
from scripts.selection import select_studies

REPO = Path(__file__).resolve().parents[1]
CONFIGS = config_files("evaluate.yaml")  # inference.yaml, evaluate.yaml


@pytest.fixture(scope="module")
def tiny_labelled(tmp_path_factory) -> Path:
    """Two made studies with a tumour and its label, 48x48x32 at 5 mm; datalist "testing" list."""
    return tiny_dataset(tmp_path_factory.mktemp("data"), n_healthy=0, n_anomalous=2, seed=1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random weights of a tiny network (the workflow is checked, not the model)."""
    return tiny_weights(tmp_path_factory.mktemp("w") / "tiny.pt")


@pytest.fixture(scope="module")
def evaluated(tiny_labelled, weights, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("eval")
    # a study that inference would count as already scored: evaluate must score it all the same
    done = out / "tumour_000" / "segmentation.nii.gz"
    done.parent.mkdir()
    done.write_bytes(b"")
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "evaluate",
        "--config_file",
        str(CONFIGS),
        "--bundle_root",
        "bundle",
        "--dataset_dir",
        str(tiny_labelled),
        "--output_dir",
        str(out),
        "--weights",
        str(weights),
        "--network_preset",
        TINY_NET,
        "--image_size",
        "32",
        "--t_stride",
        "60",
        "--register",  # the made studies are not on the atlas lattice: score them on their own grid (fast)
        "false",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"evaluate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return out, proc.stdout


def printed_auprc(stdout: str) -> dict[tuple[str, str], float]:
    rows = re.findall(r"^\| (volume|brain) \| (off|\d+) \| ([0-9.]+) \|", stdout, flags=re.MULTILINE)
    return {(voxels, mf): float(v) for voxels, mf, v in rows}


@pytest.mark.slow
def test_evaluate_writes_the_report_and_prints_auprc_as_sklearn(evaluated, tiny_labelled):
    out, stdout = evaluated
    for name in ("metrics_per_subject.csv", "metrics.md", "metrics.json"):
        assert (out / name).stat().st_size > 0
    png = (out / "pr_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = (out / "metrics.md").read_text()
    assert "| voxel set | median filter | AUPRC | ceil Dice (threshold) | pooled ceil Dice | Dice_Yen" in md
    names = [s["name"] for s in json.loads(tiny_labelled.read_text())["testing"]]
    rows = (out / "metrics_per_subject.csv").read_text().splitlines()
    assert rows[0].startswith("subject,voxel_set,median_filter,")
    want_rows = [[n, v, mf] for n in names for v in ("volume", "brain") for mf in ("0", "3", "5")]
    assert sorted(r.split(",")[:3] for r in rows[1:]) == sorted(want_rows)
    placeholder = out / "tumour_000" / "segmentation.nii.gz"
    assert list(out.rglob("*.nii.gz")) == [placeholder] and placeholder.stat().st_size == 0, "NIfTI written"

    subjects = [load_maps(out / "maps" / f"{n}.npz") for n in names]
    assert subjects[0].a.shape[:2] == (32, 32) and subjects[0].label.max() > 0
    assert all((s.a[~s.mask] > 0).any() for s in subjects), "voxel_set volume: the maps are not masked"
    printed = printed_auprc(stdout)
    assert set(printed) == {(v, mf) for v in ("volume", "brain") for mf in ("off", "3", "5")}
    summary = {
        (m["voxel_set"], m["median_filter"]): m for m in json.loads((out / "metrics.json").read_text())["metrics"]
    }
    for voxels in ("volume", "brain"):
        for size, key in ((0, "off"), (3, "3"), (5, "5")):
            if voxels == "brain":
                maps = [median_filtered(s.a * s.mask, size)[s.mask] for s in subjects]
                targets = np.concatenate([s.label[s.mask] > 0.5 for s in subjects])
            else:
                maps = [median_filtered(s.a, size).ravel() for s in subjects]
                targets = np.concatenate([(s.label & s.mask).ravel() for s in subjects])
            scores = np.concatenate(maps)
            scores = (scores - scores.min()) / (scores.max() - scores.min())
            want = average_precision_score(targets, scores)
            assert printed[voxels, key] == pytest.approx(want, abs=5e-5)
            assert summary[voxels, size]["auprc"] == pytest.approx(want, abs=1e-12)


def test_evaluate_and_calibrate_insert_their_collection_into_inferences_named_steps():
    """evaluate.yaml and calibrate.yaml restate no step of inference.yaml's order (post_order): they add their own
    step by name. Planted bugs it fails on: a workflow that lists inference's steps again (and so misses one that is
    added later), a collection put after the median filter in evaluation (the metrics filter the maps themselves)."""
    from scripts.postprocess import step_names

    inference = yaml.safe_load((REPO / CONFIGS[0]).read_text())
    order = inference["post_order"]
    assert set(order) == set(inference["post"]) and inference["post_steps"] == "@post_order"
    for name in ("evaluate.yaml", "calibrate.yaml"):
        text = (REPO / "bundle" / "configs" / name).read_text()
        assert not [step for step in order if f"@post#{step}" in text], f"{name} restates inference's steps"
    assert step_names(order, ["collect"], "mask_brain", rest=False) == ["reduce_channels", "mask_brain", "collect"]
    for name, after in (("evaluate.yaml", "mask_brain"), ("calibrate.yaml", "median_filter")):
        config = yaml.safe_load((REPO / "bundle" / "configs" / name).read_text())
        assert config["post_steps"]["add"] == ["collect"] and config["post_steps"]["after"] == after, name
        collect, collector = config["post#collect"], config["collector"]
        assert collect["keys"] == "pred" and collect["names"] == collector["map_key"], f"{name}: not the copy"
        assert collector["_target_"] == "scripts.collect.MapCollector" and config["handlers"] == ["@collector"]
    assert inference["evaluator"]["val_handlers"] == "@handlers" and inference["handlers"] == []
    assert step_names(order, ["c"], "median_filter", rest="true") == [*order[:3], "c", *order[3:]]
    with pytest.raises(ValueError, match="post step 'median' is not one of"):
        step_names(order, ["c"], "median")


@pytest.mark.parametrize("write", [False, True, "false", "true"])
def test_evaluate_writes_study_outputs_only_when_asked(write, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(ConfigParser.load_config_files([str(REPO / c) for c in CONFIGS]))
    parser.update({"bundle_root": str(REPO / "bundle"), "output_dir": str(tmp_path), "write_study_outputs": write})
    assert parser["studies"]["_target_"] == "scripts.selection.select_studies"
    assert parser["studies"]["require_label"] is True and parser["studies"]["overwrite"] is True
    names = [type(t).__name__ for t in parser.get_parsed_content("postprocessing").transforms]
    inference = [type(parser.get_parsed_content(f"post#{n}")).__name__ for n in parser["post_order"]]
    assert names == ["ReduceChannelsd", "MaskOutsideBraind", "CopyItemsd"] + (
        inference[2:] if write in (True, "true") else []
    )
    assert "SaveStudyOutputsd" in inference
    (collector,) = parser.get_parsed_content("handlers")
    assert isinstance(collector, MapCollector) and collector.require_label and collector.map_key == "collected_map"


def made_study() -> dict[str, torch.Tensor]:
    """A 4-channel image with a brain box, a map and a label with values 4, 0.3 and 0.7 (two count: > 0.5)."""
    image = torch.zeros(4, 6, 5, 4)
    image[3, 1:5, 1:4, 1:3] = 1.0
    label = torch.zeros(1, 6, 5, 4)
    label[0, 2, 2, 1], label[0, 2, 3, 1], label[0, 3, 2, 1] = 4.0, 0.3, 0.7
    return {"collected_map": torch.rand(1, 6, 5, 4), "label": label, "image": image}


def test_collector_keeps_map_binary_label_and_brain_mask(tmp_path):
    """The collector as an evaluator handler: each study's batch item (its name) and output item (map, label, image)
    after the iteration."""
    study = made_study()
    collector = MapCollector(map_key="collected_map", require_label=True, maps_dir=str(tmp_path / "maps"))
    engine = Engine(lambda engine, batch: [{**study, "pred": torch.zeros(1, 9, 9, 9)}])  # pred: inverted elsewhere
    collector.attach(engine)
    collector.attach(engine)  # once only
    engine.run([[{"name": "s1"}]])
    (subject,) = collector.subjects
    saved = load_maps(tmp_path / "maps" / "s1.npz")
    for s in (subject, saved):
        assert s.name == "s1" and s.a.dtype == np.float32 and s.a.shape == (6, 5, 4)
        np.testing.assert_array_equal(s.a, study["collected_map"][0].numpy())
        assert s.label.dtype == bool and sorted(map(tuple, np.argwhere(s.label))) == [(2, 2, 1), (3, 2, 1)]
        np.testing.assert_array_equal(s.mask, study["image"][3].numpy() > 0)
    assert subject.healthy is None and subject.voxel_ml == 1e-3
    with pytest.raises(StudyError, match="twice"):
        collector.collect({"name": "s1", **study})
    with pytest.raises(StudyError, match="s2: no label"):
        collector.collect({"name": "s2", **study, "label": None})


def test_collector_keeps_healthy_voxels_away_from_the_label():
    """Calibration's options: the brain less the label dilated by LABEL_MARGIN; the whole brain without a label."""
    study = made_study()
    study["image"][3] = 1.0
    collector = MapCollector(map_key="collected_map", healthy=True)
    labelled = collector.collect({"name": "labelled", **study})
    healthy = MapCollector(map_key="collected_map", healthy=True).collect({"name": "healthy", **study, "label": None})
    assert healthy.label is None and healthy.healthy.all() and labelled.mask.all()
    lesion = np.zeros((6, 5, 4), bool)
    lesion[2, 2, 1] = lesion[3, 2, 1] = True
    away = ~ndimage.binary_dilation(lesion, iterations=LABEL_MARGIN)
    np.testing.assert_array_equal(labelled.healthy, away)
    assert 0 < labelled.healthy.sum() < labelled.mask.sum()


def test_evaluate_refuses_studies_without_label(tiny_labelled, tmp_path):
    study = json.loads(tiny_labelled.read_text())["testing"][0]
    folder = tmp_path / "studies" / "nolabel"
    folder.mkdir(parents=True)
    for key in ("t1", "t1c", "t2", "flair"):
        (folder / f"{key}.nii.gz").write_bytes((tiny_labelled.parent / study[key]).read_bytes())
    refused = select_studies(tmp_path / "studies", tmp_path / "out", require_label=True)
    assert not refused.studies and [f.study for f in refused.failures] == ["nolabel"]
    assert "no label to evaluate against" in refused.failures[0].message
    (folder / "seg.nii.gz").write_bytes((tiny_labelled.parent / study["label"]).read_bytes())
    selected = select_studies(tmp_path / "studies", tmp_path / "out", require_label=True)
    assert [s["name"] for s in selected.studies] == ["nolabel"] and not selected.failures
