"""Inference's default ``register: auto`` through the command line, on a made study off the atlas lattice (every
other command-line test passes ``--register false``)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from runner import TINY_NET, run_bundle, tiny_dataset, tiny_weights


@pytest.mark.slow
def test_inference_registers_a_made_native_study_by_default(tmp_path):
    """Planted bug: "register auto never registers" (no transform.tfm, the preprocessed image not on the atlas
    lattice) and "outputs left on the atlas grid" (not brought back to the study's own grid)."""
    datalist = tiny_dataset(tmp_path / "data", n_healthy=0, n_anomalous=1, seed=6)  # 48 x 48 x 32 at 5 mm: native
    study = json.loads(datalist.read_text())["testing"][0]
    out = tmp_path / "out"
    run_bundle(
        "inference", "inference.yaml", "--dataset_dir", str(datalist), "--output_dir", str(out),
        "--weights", str(tiny_weights(tmp_path / "tiny.pt")), "--network_preset", TINY_NET, "--image_size", "32",
        "--t_stride", "125", "--save_preprocessed", "true",
    )  # fmt: skip
    reference = nib.load(datalist.parent / study["t1"])
    folder = out / study["name"]
    for name in ("anomaly.nii.gz", "segmentation.nii.gz"):
        img = nib.load(folder / name)
        assert img.shape == reference.shape
        np.testing.assert_allclose(img.affine, reference.affine, atol=1e-3)
    assert (folder / "transform.tfm").is_file(), "the study was registered"
    assert nib.load(folder / "preprocessed.nii.gz").shape == (240, 240, 155, 4), "scored on the atlas lattice"
    assert np.asarray(nib.load(folder / "anomaly.nii.gz").dataobj).max() > 0
