"""Any set of modalities, end to end through the command line: a tiny network trained on made (synthetic) healthy
studies with only those modalities, then scoring a made BIDS dataset (sessions, a contrast-enhanced T1w, a subject
without FLAIR) into BIDS derivatives on the input grid; weights of one set refused under another with one line.
T1 + T2 + PD is trained by the IXI recipe (docs/ixi.md) on made IXI-shaped data: native grids, brain masks, the
cohort datalist, `run preprocess` onto the atlas, training on the slice cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from runner import TINY_ARGS, run_bundle

from scripts.files import write_nifti
from scripts.synthetic import make_dataset, make_study

ALL = ["t1", "t1c", "t2", "flair", "pd"]
BIDS_NAMES = {"t1": "T1w", "t1c": "ce-made_T1w", "t2": "T2w", "flair": "FLAIR", "pd": "PDw"}
SETS = [["t1"], ["t2"], ["t1", "t2"], ["t1", "t1c", "t2", "flair"]]  # and t1+t2+pd: the IXI recipe below


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


def train(datalist: Path, out: Path, modalities: list[str], *extra: str) -> Path:
    """`run training` of the tiny network for 2 iterations; returns the weights."""
    run_bundle(
        "training", "train.yaml", "--dataset_dir", str(datalist), "--output_dir", str(out),
        "--weights", str(out / "model.pt"), "--max_epochs", "1", "--epoch_iterations", "2",
        "--checkpoint_interval", "2", "--batch_size", "4", "--val_batches", "1", *sets_args(modalities), *extra,
    )  # fmt: skip
    return out / "model.pt"


def score_made_bids(made: dict[str, Path], modalities: list[str], weights: Path, tmp_path: Path) -> None:
    """`run inference` on the made BIDS dataset: derivatives on the input grid; sub-02 (no FLAIR) fails alone, with
    one line, when the set has FLAIR."""
    out = tmp_path / "derivatives" / "andi"
    args = ["--dataset_dir", str(made["bids"]), "--output_dir", str(out), "--weights", str(weights)]
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
    assert "sub-01_ses-1" in (out / "scores.csv").read_text()


def calibrate_and_evaluate(datalist: Path, modalities: list[str], weights: Path, tmp_path: Path) -> None:
    """`run calibrate` on the healthy validation study and `run evaluate` on the labelled one, with the set: the
    evaluation gives Yen's Dice and the calibrated rule's beside it (benchmarks/modality_sets.py's path)."""
    calibration = tmp_path / "calibration" / "calibration.json"
    common = ["--dataset_dir", str(datalist), "--weights", str(weights), "--calibration_file", str(calibration),
              "--t_upper", "76", *sets_args(modalities)]  # fmt: skip
    run_bundle("calibrate", ["inference.yaml", "calibrate.yaml"], *common, "--output_dir", str(tmp_path / "cal"))
    assert json.loads(calibration.read_text())["settings"]["pre.check.modalities"] == modalities
    out = tmp_path / "eval"
    run_bundle("evaluate", ["inference.yaml", "evaluate.yaml"], *common, "--output_dir", str(out))
    rows = json.loads((out / "metrics.json").read_text())["metrics"]
    assert len(rows) == 6 and all(r["auprc"] is not None for r in rows)
    assert [r["dice_calibrated"] is not None for r in rows].count(True) == 1


@pytest.mark.slow
@pytest.mark.parametrize("modalities", SETS, ids=["+".join(s) for s in SETS])
def test_a_set_of_modalities_trains_and_scores_bids_into_derivatives(made, modalities, tmp_path):
    weights = train(made["datalist"], tmp_path / "train", modalities)
    score_made_bids(made, modalities, weights, tmp_path)
    if modalities == ["t1", "t2"]:
        calibrate_and_evaluate(made["datalist"], modalities, weights, tmp_path)
    if modalities != ["t1"]:
        return
    # the weights of this set, under another set: refused with one line (checked once: it is the same check for all)
    other = ["t1", "t2"]
    args = ["--dataset_dir", str(made["bids"]), "--output_dir", str(tmp_path / "refused"), "--weights", str(weights)]
    refused = run_bundle("inference", "inference.yaml", *args, *sets_args(other), check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {weights}: the weights do not fit this configuration (modalities: trained with {modalities}, "
        f"configured {other})"
    )


@pytest.mark.slow
def test_ixi_recipe_trains_t1_t2_pd_on_made_ixi_shaped_data(made, tmp_path: Path) -> None:
    """docs/ixi.md on made (synthetic) data shaped like IXI: T1 in IXI-T1/, T2 and PD (one dual-echo grid, not the
    T1's) in IXI-T2/ and IXI-PD/, brain masks named after the T1; the cohort datalist, `run preprocess` (the studies
    registered to the atlas), `run training` on the prepared datalist with T1, T2 and PD (the slice cache); then
    the T1 + T2 + PD weights score the made BIDS dataset."""
    from scripts.cli import main

    root = tmp_path / "ixi"
    for i, subject in enumerate(["IXI002-Guys-0828", "IXI012-HH-1211"]):
        study = make_study(100 + i, "none", (48, 48, 32), (5.0, 5.0, 5.0))
        moved = study.affine.copy()
        moved[:3, 3] += (6.0, -4.0, 5.0)  # T2 and PD share a grid that is not the T1's
        for contrast, affine in (("T1", study.affine), ("T2", moved), ("PD", moved)):
            image = np.rint(study.images[contrast.lower()]).astype(np.int16)
            write_nifti(image, affine, root / f"IXI-{contrast}" / f"{subject}-{contrast}.nii.gz", dtype=np.int16)
        write_nifti(study.mask.astype(np.uint8), study.affine, root / "masks" / f"{subject}-T1_mask.nii.gz", np.uint8)
    datalist = tmp_path / "ixi.json"
    folders = [root / "IXI-T1", root / "IXI-T2", root / "IXI-PD", root / "masks"]
    main(["make-cohort-datalist", str([str(f) for f in folders]), str(datalist), "--validation_fraction", "0.5"])
    assert json.loads(datalist.read_text())["training"][0]["mask"] == "ixi/masks/IXI002-Guys-0828-T1_mask.nii.gz"
    modalities = ["t1", "t2", "pd"]
    prepared = tmp_path / "prepared"
    run_bundle(
        "preprocess", "preprocess.yaml", "--dataset_dir", str(datalist), "--output_dir", str(prepared),
        "--modalities", str(modalities),
    )  # fmt: skip
    item = json.loads((prepared / "datalist.json").read_text())["training"][0]
    assert item["name"] == "IXI002-Guys-0828" and set(item) == {"name", "t1", "t2", "pd"}
    assert nib.load(prepared / item["pd"]).shape == (240, 240, 155)  # the SRI24 lattice
    assert (prepared / "IXI002-Guys-0828" / "transform.tfm").is_file()
    weights = train(prepared / "datalist.json", tmp_path / "train", modalities)  # on the atlas lattice now
    assert len(list((tmp_path / "train" / "cache").glob("*.npy"))) == 2
    score_made_bids(made, modalities, weights, tmp_path)
