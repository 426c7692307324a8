"""A SIGKILL of ``run inference`` between two studies' writes (half-way through the second study's first NIfTI), then
the same command again: the run resumes and its outputs are those of an uninterrupted run."""

from __future__ import annotations

import csv
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from runner import REPO, TINY_ARGS, bundle_cmd, run_bundle, tiny_dataset, tiny_weights


@pytest.mark.slow
def test_inference_killed_between_two_studies_resumes_to_the_uninterrupted_outputs(tmp_path):
    """Planted bugs: "a half-written file is taken as done" (no atomic write, or resume keyed on a partial file) and
    "a killed study's partial files are left behind"."""
    datalist = tiny_dataset(tmp_path / "data", n_healthy=0, n_anomalous=3, seed=9)
    args = ["--dataset_dir", str(datalist), "--weights", str(tiny_weights(tmp_path / "tiny.pt")),
            "--t_stride", "100", *TINY_ARGS]  # fmt: skip
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_bundle("inference", "inference.yaml", *args, "--output_dir", str(whole))
    cmd = bundle_cmd("inference", "inference.yaml", *args, "--output_dir", str(killed))
    fault = [sys.executable, str(REPO / "tests" / "faults.py"), "nifti", "3", "--", *cmd[cmd.index("run") :]]
    proc = subprocess.run(fault, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    names = sorted(p.name for p in whole.iterdir() if p.is_dir())
    assert len(names) == 3
    assert (killed / names[0] / "segmentation.nii.gz").is_file(), "the first study was written whole before the kill"
    assert not (killed / names[1] / "segmentation.nii.gz").exists()
    again = run_bundle("inference", "inference.yaml", *args, "--output_dir", str(killed))
    assert "2 scored, 1 skipped (already done), 0 failed" in again.stdout + again.stderr
    for name in names:
        for file in ("anomaly.nii.gz", "segmentation.nii.gz"):
            a = np.asarray(nib.load(killed / name / file).dataobj)
            np.testing.assert_array_equal(a, np.asarray(nib.load(whole / name / file).dataobj), err_msg=name)
        assert not [p.name for p in (killed / name).iterdir() if ".partial-" in p.name], "no partial file left"
    with open(killed / "scores.csv", newline="") as f:
        assert sorted(r["study"] for r in csv.DictReader(f)) == names
