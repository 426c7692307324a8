"""Study layouts and names from the data: BIDS datasets (sessions, contrast-enhanced T1w, a missing FLAIR), datalists of
``<study>/t1.nii.gz`` files, IXI-style names, and the steps that need a particular modality. Tiny made NIfTI files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.baselines.flair import FLAIRInferer
from scripts.bids import OUTPUT_NAMES, write_description
from scripts.cohorts import make_cohort_datalist
from scripts.data import split_studies
from scripts.errors import StudyError
from scripts.files import write_nifti
from scripts.modalities import channel_of, checked, reference_modality
from scripts.outputs import SaveOverviewd
from scripts.postprocess import ReduceChannels
from scripts.selection import select_studies, study_output
from scripts.slices import healthy_slice_indices
from scripts.studies import file_study_id, list_studies, scan_studies


def nifti(path: Path, seed: int = 0) -> Path:
    array = np.random.default_rng(seed).random((6, 6, 4)).astype(np.float32) + 0.5
    return write_nifti(array, np.eye(4), path, dtype=np.float32)


@pytest.fixture()
def bids_dataset(tmp_path: Path) -> Path:
    """sub-01 with two sessions (ses-1: T1w, ce-gadolinium T1w, T2w, FLAIR, PDw; ses-2: T1w, T2w, no FLAIR) and
    sub-02 without sessions (T1w, T2w, FLAIR, and a T2w of a second run)."""
    root = tmp_path / "bids"
    (root / "dataset_description.json").parent.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "made", "BIDSVersion": "1.8.0"}))
    files = [
        "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
        "sub-01/ses-1/anat/sub-01_ses-1_ce-gadolinium_T1w.nii.gz",
        "sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz",
        "sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz",
        "sub-01/ses-1/anat/sub-01_ses-1_PDw.nii.gz",
        "sub-01/ses-1/anat/sub-01_ses-1_desc-brain_mask.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_T2w.nii.gz",
        "sub-02/anat/sub-02_T1w.nii.gz",
        "sub-02/anat/sub-02_run-1_T2w.nii.gz",
        "sub-02/anat/sub-02_run-2_T2w.nii.gz",
        "sub-02/anat/sub-02_FLAIR.nii.gz",
    ]
    for i, name in enumerate(files):
        nifti(root / name, i)
    (root / "sub-01/ses-1/anat/sub-01_ses-1_T1w.json").write_text("{}")  # sidecars are not images
    return root


def test_bids_sessions_become_studies_and_ce_t1w_is_t1c(bids_dataset: Path) -> None:
    studies, failures = scan_studies(bids_dataset, modalities=["t1", "t1c", "t2", "flair", "pd"])
    assert [s["name"] for s in studies] == ["sub-01_ses-1"]
    study = studies[0]
    assert Path(study["t1"]).name == "sub-01_ses-1_T1w.nii.gz"
    assert Path(study["t1c"]).name == "sub-01_ses-1_ce-gadolinium_T1w.nii.gz"
    assert Path(study["pd"]).name == "sub-01_ses-1_PDw.nii.gz"
    assert Path(study["mask"]).name == "sub-01_ses-1_desc-brain_mask.nii.gz"
    assert study["bids_prefix"] == "sub-01/ses-1/anat/sub-01_ses-1"
    messages = {f.study: f.message for f in failures}
    assert sorted(messages) == ["sub-01_ses-2", "sub-02"]
    assert messages["sub-01_ses-2"] == (
        f"{bids_dataset / 'sub-01/ses-2/anat'}: missing modality t1c, flair, pd (found t1, t2); "
        "expected BIDS suffixes FLAIR, PDw"
    )
    assert "sub-02_run-1_T2w.nii.gz and sub-02_run-2_T2w.nii.gz are all 't2'; keep one" in messages["sub-02"]


def test_bids_with_fewer_modalities_takes_the_session_without_flair(bids_dataset: Path) -> None:
    studies, failures = scan_studies(bids_dataset, modalities=["t1"])
    assert [s["name"] for s in studies] == ["sub-01_ses-1", "sub-01_ses-2", "sub-02"]
    assert [sorted(s) for s in studies] == [["bids_prefix", "mask", "name", "t1"], *[["bids_prefix", "name", "t1"]] * 2]
    assert not failures


def test_bids_outputs_are_derivatives(bids_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "derivatives" / "andi"
    selection = select_studies(bids_dataset, out, modalities=["t1"])
    assert len(selection) == 3
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"] == "1.8.0"
    assert description["Name"] == "ANDi anomaly maps of made"
    study = selection.studies[0]
    assert study_output(out, study, "anomaly.nii.gz") == out / "sub-01/ses-1/anat/sub-01_ses-1_desc-anomaly_map.nii.gz"
    assert study_output(out, {"name": ["x"], "bids_prefix": ["sub-02/anat/sub-02"]}, "segmentation.nii.gz") == (
        out / "sub-02/anat/sub-02_desc-anomaly_mask.nii.gz"
    )
    assert all("desc-anomaly" in name for name in OUTPUT_NAMES.values())
    assert study_output(out, {"name": "plain"}, "anomaly.nii.gz") == out / "plain" / "anomaly.nii.gz"
    assert write_description(out, bids_dataset) == out / "dataset_description.json"  # kept, not rewritten


def test_bids_description_is_honoured(bids_dataset: Path) -> None:
    (bids_dataset / "dataset_description.json").write_text("{not json")
    with pytest.raises(StudyError, match=r"dataset_description.json: not a readable dataset description"):
        scan_studies(bids_dataset, modalities=["t1"])
    (bids_dataset / "dataset_description.json").write_text(json.dumps({"Name": "x", "DatasetType": "derivative"}))
    with pytest.raises(StudyError, match="describes a derivatives dataset; give the raw BIDS dataset"):
        scan_studies(bids_dataset, modalities=["t1"])


def test_bids_anat_folder_alone_tells_ce_t1w_from_t1w(bids_dataset: Path) -> None:
    """The issue's second try: pointed at one session's anat folder, the two T1w images are T1 and T1Gd."""
    studies, failures = scan_studies(bids_dataset / "sub-01/ses-1/anat", modalities=["t1", "t1c"])
    assert not failures
    assert Path(studies[0]["t1c"]).name == "sub-01_ses-1_ce-gadolinium_T1w.nii.gz"


def test_datalist_of_plain_file_names_takes_the_folder_names(tmp_path: Path) -> None:
    """<study>/t1.nii.gz, <study>/t2.nii.gz: the names carry no study id, so each study is named by its folder."""
    for study in ("a01", "b02"):
        for m in ("t1", "t2"):
            nifti(tmp_path / "data" / study / f"{m}.nii.gz")
    items = [{"t1": f"data/{s}/t1.nii.gz", "t2": f"data/{s}/t2.nii.gz"} for s in ("a01", "b02")]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": items, "validation": items[:1], "testing": items}))
    studies = list_studies(datalist, "testing", modalities=["t1", "t2"])
    assert [s["name"] for s in studies] == ["a01", "b02"]
    # the first try: the datalist reader checks the configured modalities, not the four defaults
    assert [s["name"] for s in split_studies(datalist, "training", modalities=["t1", "t2"])] == ["a01", "b02"]
    _, failures = scan_studies(datalist, "testing")
    assert failures[0].message == f"{datalist}: item 0 of 'testing' lacks modality t1c, flair"
    # two studies of one name: fine for training (nothing is written per study), refused where outputs would collide
    same = [{"name": "x", **items[0]}, {"name": "x", **items[1]}]
    datalist.write_text(json.dumps({"training": same, "testing": same}))
    assert len(split_studies(datalist, "training", modalities=["t1", "t2"])) == 2
    with pytest.raises(StudyError, match=r"study names are not unique \(x\); outputs would collide"):
        select_studies(datalist, tmp_path / "out", modalities=["t1", "t2"])


def test_file_names_give_the_study_id() -> None:
    assert file_study_id("IXI002-Guys-0828-T1.nii.gz") == "IXI002-Guys-0828"
    assert file_study_id("IXI012-HH-1211-PD.nii.gz") == "IXI012-HH-1211"
    assert file_study_id("BraTS2021_00000_t1ce.nii.gz") == "BraTS2021_00000"
    assert file_study_id("sub-01_ses-a_ce-gd_T1w.nii.gz") == "sub-01_ses-a"
    assert file_study_id("t1.nii.gz") is None


def ixi_folders(root: Path) -> list[Path]:
    """IXI's downloads, made: one folder per contrast; IXI013 has no PD, a file of another kind is beside them."""
    subjects = ["IXI002-Guys-0828", "IXI012-HH-1211", "IXI013-HH-1212"]
    for i, subject in enumerate(subjects):
        for contrast in ("T1", "T2", "PD"):
            if subject.startswith("IXI013") and contrast == "PD":
                continue
            nifti(root / f"IXI-{contrast}" / f"{subject}-{contrast}.nii.gz", i)
    (root / "IXI-T1" / "IXI002-Guys-0828-T1.txt").write_text("not an image")
    return [root / f"IXI-{c}" for c in ("T1", "T2", "PD")]


def test_ixi_names_give_studies_and_a_datalist(tmp_path: Path) -> None:
    folders = ixi_folders(tmp_path / "ixi")
    summary = make_cohort_datalist(folders, tmp_path / "ixi.json", ["t1", "t2", "pd"], validation_fraction=0.5)
    datalist = json.loads((tmp_path / "ixi.json").read_text())
    assert [i["name"] for i in datalist["training"]] == ["IXI002-Guys-0828"]
    assert [i["name"] for i in datalist["validation"]] == ["IXI012-HH-1211"]
    assert datalist["training"][0]["pd"] == "ixi/IXI-PD/IXI002-Guys-0828-PD.nii.gz"
    assert len(summary["left_out"]) == 1 and "IXI013-HH-1212: missing modality pd" in summary["left_out"][0]
    studies = list_studies(tmp_path / "ixi.json", "training", modalities=["t1", "t2", "pd"])
    assert Path(studies[0]["t2"]).name == "IXI002-Guys-0828-T2.nii.gz"
    # T1 + T2 only: all three subjects; the same files in one flat folder are grouped by the id in their names
    make_cohort_datalist(folders, tmp_path / "t1t2.json", ["t1", "t2"], validation_fraction=0.0)
    assert len(json.loads((tmp_path / "t1t2.json").read_text())["validation"]) == 1  # at least one
    flat = tmp_path / "flat"
    for folder in folders:
        for path in folder.glob("*.nii.gz"):
            (flat / path.name).parent.mkdir(exist_ok=True)
            (flat / path.name).write_bytes(path.read_bytes())
    studies, failures = scan_studies(flat, modalities=["t1", "t2", "pd"])
    assert [s["name"] for s in studies] == ["IXI002-Guys-0828", "IXI012-HH-1211"]
    assert [f.study for f in failures] == ["IXI013-HH-1212"]
    assert "missing modality pd" in failures[0].message


def test_cohort_datalist_command_says_what_is_wrong(tmp_path: Path, capsys) -> None:
    """``python -m scripts.cli make-cohort-datalist`` (its entry point, in this process)."""
    from scripts.cli import main

    folders = ixi_folders(tmp_path / "ixi")
    main(["make-cohort-datalist", str([str(f) for f in folders]), str(tmp_path / "d.json")])
    out = capsys.readouterr().out
    assert "training 1, validation 1" in out and "1 subject(s) left out" in out
    with pytest.raises(SystemExit) as stopped:
        main(["make-cohort-datalist", str(tmp_path / "nowhere"), str(tmp_path / "e.json")])
    assert stopped.value.code != 0
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nowhere'}: no such folder" in err and "Traceback" not in err


def test_steps_that_need_a_modality_say_so_in_one_line() -> None:
    assert checked(["t1", "t2", "pd"]) == ["t1", "t2", "pd"]
    with pytest.raises(StudyError, match=r"dwi not known; use one or more of t1, t1c, t2, flair, pd"):
        checked(["t1", "dwi"])
    with pytest.raises(StudyError, match="t1 named twice"):
        checked(["t1", "t1"])
    line = "modalities [t1, t2] hold no flair, which the FLAIR-threshold baseline needs"
    with pytest.raises(StudyError, match=line.replace("[", r"\[").replace("]", r"\]")):
        FLAIRInferer(["t1", "t2"])
    assert FLAIRInferer(["t2", "flair"]).channel == 1
    with pytest.raises(StudyError, match=r"hold no flair, which channel_reduction epdiff \(its 0.3 FLAIR term\)"):
        ReduceChannels("epdiff", channels=["t1", "t2"])
    with pytest.raises(StudyError, match=r"hold no flair, which the overview \(overview_modality\) needs"):
        SaveOverviewd("pred", "out", modalities=["t1", "t2"], modality="flair")
    assert SaveOverviewd("pred", "out", modalities=["t1", "t2"]).flair_channel == 0  # no FLAIR: the first
    assert SaveOverviewd("pred", "out", modalities=["t2", "flair"]).flair_channel == 1
    assert channel_of(["t1", "pd"], "pd", "x") == 1
    assert reference_modality(["t1", "t2"]) == "t1"
    assert reference_modality(["t2", "pd"]) == "t2"  # no T1: the first, matched to the T1 atlas by mutual information
    with pytest.raises(StudyError, match="hold no t1, which reference_modality needs"):
        reference_modality(["t2"], "t1")


def test_healthy_slices_by_a_named_modality() -> None:
    image = torch.zeros(2, 4, 4, 3)
    image[0, :, :, :] = 1.0  # T1 has brain on every slice
    image[1, :, :, 1] = 1.0  # FLAIR only on slice 1
    assert healthy_slice_indices(image).tolist() == [0, 1, 2]
    assert healthy_slice_indices(image, channel=1).tolist() == [1]
