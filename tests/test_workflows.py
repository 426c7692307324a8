"""The bundle's workflows through the real command line: `python -m monai.bundle run training|inference`."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from faults import PHASES
from runner import (
    REPO,
    TINY_ARGS,
    TINY_NET,
    bundle_cmd,
    config_files,
    run_bundle,
    tiny_dataset,
    tiny_weights,
    weights_settings,
)

from scripts.checkpoints import save_state_dict, save_weights
from scripts.networks import make_network

TINY = TINY_ARGS


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Made (synthetic) tiny studies: 4 healthy (1 for validation) and 1 with a tumour, 48x48x32 at 5 mm."""
    out = tmp_path_factory.mktemp("data")
    return tiny_dataset(out, n_healthy=4, n_anomalous=1, n_validation=1)


def train_args(datalist: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--dataset_dir",
        str(datalist),
        "--output_dir",
        str(out),
        "--weights",
        str(out / "model.pt"),
        "--epoch_iterations",
        "3",
        "--checkpoint_interval",
        "3",
        "--batch_size",
        "4",
        "--val_batches",
        "1",
        *TINY,
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train")
    run_bundle("training", "train.yaml", *train_args(tiny_data, out, "--max_epochs", "1"))
    return out


@pytest.mark.slow
def test_training_writes_checkpoint_and_final_weights(trained):
    assert (trained / "model.pt").is_file()
    assert [p.name for p in (trained / "checkpoints").glob("*.pt")] == ["checkpoint_iteration=3.pt"]
    assert list(trained.glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert list((trained / "cache").glob("*.npy")), "healthy slices were not cached"


@pytest.mark.slow
def test_training_killed_five_times_resumes_each_time(tiny_data, tmp_path):
    """SIGKILL at a seeded random moment of each phase (slice caching, a training iteration, a checkpoint write,
    validation, the final weights' write), one run after the other: each run resumes where the last checkpoint
    left it, no truncated file ever sits under a real name, and the last run ends with weights that load."""
    from scripts.checkpoints import load_network
    from scripts.networks import make_network

    out, epochs = tmp_path / "run", 4  # 12 iterations, a checkpoint and a validation every 3
    args = bundle_cmd("training", "train.yaml", *train_args(tiny_data, out, "--max_epochs", str(epochs)))[3:]
    rng = np.random.default_rng(20261201)
    events = {"cache": 3, "iteration": 3, "checkpoint": 2, "validation": 2, "final": 1}  # per run, at least
    ckpt_dir, restored = out / "checkpoints", []
    for phase in PHASES:
        n = int(rng.integers(1, events[phase] + 1))
        cmd = [sys.executable, str(REPO / "tests" / "faults.py"), phase, str(n), "--", *args]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
        log = proc.stdout + proc.stderr
        assert proc.returncode == -signal.SIGKILL, f"{phase} #{n}: not killed (exit {proc.returncode}):\n{log[-2000:]}"
        restored += [line.split("Restored all variables from ")[-1] for line in log.splitlines() if "Restored" in line]
        for path in ckpt_dir.glob("checkpoint_*.pt"):
            torch.load(path, weights_only=True)  # never truncated under its real name
        for path in (out / "cache").glob("[!.]*.npy"):  # a hidden ".<name>.partial-*" is the killed write
            np.load(path)
        assert phase == "final" or not (out / "model.pt").exists()
    done = run_bundle("training", "train.yaml", *train_args(tiny_data, out, "--max_epochs", str(epochs)))
    log = done.stdout + done.stderr
    final = ckpt_dir / f"checkpoint_iteration={3 * epochs}.pt"
    assert f"Restored all variables from {final}" in log, "the last run did not resume from the last checkpoint"
    iterations = [int(r.split("=")[-1].split(".")[0]) for r in restored]
    assert iterations == sorted(iterations) and iterations, f"the runs did not resume in order: {restored}"
    assert not [p for p in out.rglob(".*") if ".partial-" in p.name], "a killed write's temporary file was left"
    load_network(make_network("tiny"), out / "model.pt", expected=weights_settings())


@pytest.mark.slow
def test_inference_writes_nifti_on_the_input_grid_and_resumes(trained, tiny_data, tmp_path):
    out = tmp_path / "out"
    args = [
        "--dataset_dir",
        str(tiny_data),
        "--output_dir",
        str(out),
        "--weights",
        str(trained / "model.pt"),
        "--t_stride",
        "60",
        *TINY,
    ]
    proc = run_bundle("inference", "inference.yaml", *args)
    assert f"ANDi outputs written to {out}" in proc.stdout
    study = json.loads(tiny_data.read_text())["testing"][0]
    ref = nib.load(tiny_data.parent / study["flair"])
    folder = out / study["name"]
    a = nib.load(folder / "anomaly.nii.gz")
    s = nib.load(folder / "segmentation.nii.gz")
    assert a.shape == ref.shape and s.shape == ref.shape
    np.testing.assert_allclose(a.affine, ref.affine, atol=1e-5)
    np.testing.assert_allclose(s.affine, ref.affine, atol=1e-5)
    assert a.get_data_dtype() == np.float32 and s.get_data_dtype() == np.uint8
    amap = a.get_fdata()
    assert np.isfinite(amap).all() and amap.max() > 0
    assert amap[ref.get_fdata() == 0].max() == 0, "map must be 0 outside the brain"
    assert set(np.unique(s.get_fdata())) <= {0.0, 1.0}
    assert (folder / "overview.png").stat().st_size > 1000
    # every median filter setting gives outputs on the input grid (the map stays a MetaTensor for Invertd)
    off = run_bundle(
        "inference", "inference.yaml", *args[:3], str(tmp_path / "off"), *args[4:], "--median_filter_size", "0"
    )
    assert "1 scored" in off.stdout and nib.load(tmp_path / "off" / study["name"] / "anomaly.nii.gz").shape == ref.shape
    # a second run finds the study done and writes nothing
    mtime = (folder / "anomaly.nii.gz").stat().st_mtime_ns
    again = run_bundle("inference", "inference.yaml", *args)
    assert "ANDi: 0 scored, 1 skipped (already done), 0 failed" in again.stdout
    assert (folder / "anomaly.nii.gz").stat().st_mtime_ns == mtime


def copy_study(tiny_data: Path, dst: Path) -> dict[str, Path]:
    study = json.loads(tiny_data.read_text())["testing"][0]
    dst.mkdir(parents=True)
    paths = {}
    for key in ("t1", "t1c", "t2", "flair"):
        src = tiny_data.parent / study[key]
        paths[key] = dst / src.name
        shutil.copy(src, paths[key])
    return paths


@pytest.mark.slow
@pytest.mark.parametrize(
    "problem", ["missing", "grid", "nan", "dims", "unreadable", "checkpoint", "range", "unrecorded"]
)
def test_inference_refuses_bad_input_naming_the_file(problem, trained, tiny_data, tmp_path):
    paths = copy_study(tiny_data, tmp_path / "studies" / "bad")
    checkpoint = trained / "model.pt"
    if problem == "missing":
        paths["t2"].unlink()
        expected = ["bad", "missing modality t2"]
    elif problem == "grid":
        img = nib.load(paths["t2"])
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-2], img.affine), paths["t2"])
        expected = [paths["t2"].name, "differs from"]
    elif problem == "nan":
        img = nib.load(paths["flair"])
        data = np.asarray(img.dataobj).astype(np.float32)
        data[10, 10, 10] = np.nan
        nib.save(nib.Nifti1Image(data, img.affine), paths["flair"])
        expected = [paths["flair"].name, "NaN"]
    elif problem == "dims":
        img = nib.load(paths["t1"])
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., :2, None].repeat(2, -1), img.affine), paths["t1"])
        expected = [paths["t1"].name, "expected a 3D volume"]
    elif problem == "unreadable":
        paths["t1c"].write_bytes(b"not a nifti file")
        expected = [paths["t1c"].name, "unreadable"]
    elif problem == "checkpoint":
        checkpoint = tmp_path / "wrong.pt"
        save_weights({"conv.weight": torch.zeros(3, 3)}, checkpoint, weights_settings())
        expected = ["wrong.pt", "do not fit"]
    elif problem == "range":  # weights trained on another diffusion range
        checkpoint = tiny_weights(tmp_path / "other_range.pt", diffusion_range=[0, 1])
        expected = ["other_range.pt", "diffusion_range: trained with [0, 1], configured [-1, 1]"]
    else:  # weights without a record of their settings
        checkpoint = tmp_path / "bare.pt"
        save_state_dict(make_network(TINY_NET), checkpoint)
        expected = ["bare.pt", "record no training settings"]
    before = {p: p.read_bytes() for p in paths.values() if p.exists()}
    proc = run_bundle(
        "inference",
        "inference.yaml",
        "--dataset_dir",
        str(tmp_path / "studies"),
        "--output_dir",
        str(tmp_path / "out"),
        "--weights",
        str(checkpoint),
        "--t_stride",
        "100",
        *TINY,
        check=False,
    )
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in the error output:\n{text[-2000:]}"
    assert all(p.read_bytes() == b for p, b in before.items()), "an input file was modified"
    assert not list((tmp_path / "out").rglob("*.nii.gz"))


SHORTCUTS = {
    "inference": ["inference.yaml"],
    "inference_cpu": ["inference.yaml", "cpu.yaml"],
    "training": ["train.yaml"],
    "evaluate": ["inference.yaml", "evaluate.yaml"],
    "calibrate": ["inference.yaml", "calibrate.yaml"],
    "preprocess": ["preprocess.yaml"],
    "paper_training": ["train.yaml", "paper.yaml"],
}


@pytest.mark.parametrize("name", sorted(SHORTCUTS))
def test_each_one_file_shortcut_names_inference_yaml_first_and_its_workflow(name):
    args = yaml.safe_load((REPO / "shortcuts" / f"{name}.yaml").read_text())
    assert args["config_file"] == config_files(SHORTCUTS[name]) and args["bundle_root"] == "bundle"
    assert args["run_id"] == name.removeprefix("paper_").removesuffix("_cpu")


@pytest.mark.slow
def test_the_inference_shortcut_scores_as_its_config_files_do(trained, tiny_data, tmp_path):
    args = ["--dataset_dir", str(tiny_data), "--weights", str(trained / "model.pt"), "--t_stride", "60", *TINY]
    run_bundle("inference", "inference.yaml", *args, "--output_dir", str(tmp_path / "two"))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--args_file", "shortcuts/inference.yaml", *args]
    proc = subprocess.run([*cmd, "--output_dir", str(tmp_path / "one")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = json.loads(tiny_data.read_text())["testing"][0]["name"]
    one, two = (nib.load(tmp_path / d / study / "anomaly.nii.gz").get_fdata() for d in ("one", "two"))
    np.testing.assert_array_equal(one, two)
