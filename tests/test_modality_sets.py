"""Any set of modalities, end to end through the command line: a tiny network trained on made (synthetic) healthy
studies with only those modalities, then scoring a made BIDS dataset (sessions, a contrast-enhanced T1w, a subject
without FLAIR) into BIDS derivatives on the input grid; weights of one set refused under another with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from runner import TINY_ARGS, run_bundle

from scripts.synthetic import make_dataset

ALL = ["t1", "t1c", "t2", "flair", "pd"]
BIDS_NAMES = {"t1": "T1w", "t1c": "ce-made_T1w", "t2": "T2w", "flair": "FLAIR", "pd": "PDw"}
SETS = [["t1"], ["t2"], ["t1", "t2"], ["t1", "t2", "pd"], ["t1", "t1c", "t2", "flair"]]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """Made studies of all five contrasts (48x48x32 at 5 mm): 3 healthy (1 for validation) and 1 with a tumour, as a
    datalist; and a made BIDS dataset: sub-01/ses-1 (the tumour study, all five) and sub-02 (a healthy study,
    no FLAIR and no contrast-enhanced T1w)."""
    root = tmp_path_factory.mktemp("sets")
    datalist = make_dataset(
        root / "made", 3, 1, "tumour", seed=5, shape=(48, 48, 32), spacing=(5.0, 5.0, 5.0), n_validation=1,
        modalities=ALL,
    )  # fmt: skip
    lists = json.loads(datalist.read_text())
    bids = root / "bids"
    bids.mkdir()
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "made", "BIDSVersion": "1.8.0"}))
    for item, prefix, keys in (
        (lists["testing"][0], "sub-01/ses-1/anat/sub-01_ses-1", ALL),
        (lists["validation"][0], "sub-02/anat/sub-02", ["t1", "t2", "pd"]),
    ):
        for key in keys:
            target = bids / f"{prefix}_{BIDS_NAMES[key]}.nii.gz"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(datalist.parent / item[key], target)
    return {"datalist": datalist, "bids": bids}


def sets_args(modalities: list[str]) -> list[str]:
    return ["--modalities", str(modalities), *TINY_ARGS]


@pytest.mark.slow
@pytest.mark.parametrize("modalities", SETS, ids=["+".join(s) for s in SETS])
def test_a_set_of_modalities_trains_and_scores_bids_into_derivatives(made, modalities, tmp_path):
    train = tmp_path / "train"
    weights = train / "model.pt"
    run_bundle(
        "training", "train.yaml", "--dataset_dir", str(made["datalist"]), "--output_dir", str(train),
        "--final_weights", str(weights), "--max_epochs", "1", "--epoch_iterations", "2", "--checkpoint_interval", "2",
        "--batch_size", "4", "--val_batches", "1", *sets_args(modalities),
    )  # fmt: skip
    out = tmp_path / "derivatives" / "andi"
    args = ["--dataset_dir", str(made["bids"]), "--output_dir", str(out), "--checkpoint", str(weights)]
    scored = run_bundle("inference", "inference.yaml", *args, "--t_upper", "76", *sets_args(modalities), check=False)
    log = scored.stdout + scored.stderr
    assert "Traceback" not in log, log[-3000:]
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    studies = {"sub-01/ses-1/anat/sub-01_ses-1": made["bids"] / "sub-01/ses-1/anat/sub-01_ses-1"}
    if "flair" in modalities:  # sub-02 has none: that study alone fails, with one line
        assert scored.returncode == 1
        failed = json.loads((out / "failures.json").read_text())["failed"]
        assert [f["study"] for f in failed] == ["sub-02"]
        assert "missing modality t1c, flair (found pd, t1, t2)" in failed[0]["message"]
        assert f"error: {failed[0]['message']}" in scored.stderr
    else:
        assert scored.returncode == 0, log[-3000:]
        studies["sub-02/anat/sub-02"] = made["bids"] / "sub-02/anat/sub-02"
    for prefix, source in studies.items():
        ref = nib.load(f"{source}_{BIDS_NAMES[modalities[0]]}.nii.gz")
        a = nib.load(out / f"{prefix}_desc-anomaly_map.nii.gz")
        s = nib.load(out / f"{prefix}_desc-anomaly_mask.nii.gz")
        assert a.shape == ref.shape == s.shape
        np.testing.assert_allclose(a.affine, ref.affine, atol=1e-5)
        assert np.isfinite(a.get_fdata()).all() and a.get_fdata().max() > 0
        info = json.loads((out / f"{prefix}_desc-anomaly_mask.json").read_text())
        assert info["study"] == prefix.rsplit("/", 1)[-1]
        assert (out / f"{prefix}_desc-anomaly_overview.png").stat().st_size > 1000
    scores = (out / "scores.csv").read_text()
    assert "sub-01_ses-1" in scores
    if modalities != ["t1"]:
        return
    # the weights of this set, under another set: refused with one line (checked once: it is the same check for all)
    other = ["t1", "t2"]
    refused = run_bundle(
        "inference", "inference.yaml", *args[:3], str(tmp_path / "refused"), *args[4:], *sets_args(other), check=False
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {weights}: the weights do not fit this configuration (modalities: trained with {modalities}, "
        f"configured {other})"
    )
