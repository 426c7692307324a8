"""The BraTS 2021 datalist maker, on a made BraTS-shaped folder (tiny NIfTI files), directly and through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scripts.data import split_studies
from scripts.datalists import (
    BRATS21_FILES,
    SPLIT_FILES,
    SPLITS_DIR,
    DatalistError,
    make_brats21_datalist,
    read_split_csv,
    read_splits,
)
from scripts.files import atomic_write_bytes, write_nifti
from scripts.selection import check_study

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
REFERENCE_SPLITS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "brats21_splits"


def write_csv(path: Path, ids: list[str]) -> Path:
    return atomic_write_bytes(("BraTS21ID\n" + "".join(f"{i}\n" for i in ids)).encode(), path)


def make_subject(root: Path, subject: str) -> None:
    """One BraTS 2021 subject folder with tiny (made) volumes: BraTS2021_XXXXX/BraTS2021_XXXXX_<suffix>.nii.gz."""
    rng = np.random.default_rng(int(subject[-5:]))
    for suffix in BRATS21_FILES.values():
        array = rng.random((6, 6, 4)).astype(np.float32) if suffix != "seg" else np.zeros((6, 6, 4), np.uint8)
        write_nifti(array, np.eye(4), root / subject / f"{subject}_{suffix}.nii.gz", dtype=array.dtype)


@pytest.fixture()
def brats(tmp_path: Path) -> tuple[Path, Path, dict[str, list[str]]]:
    """A made BraTS folder with a few subjects of each shipped split, one extra subject in no split, and the
    small split CSVs that list those subjects."""
    shipped = read_splits(SPLITS_DIR)
    splits = {
        "training": shipped["training"][:3],
        "validation": shipped["validation"][:1],
        "testing": shipped["testing"][:2],
    }
    root = tmp_path / "BraTS2021_Training_Data"
    for ids in splits.values():
        for subject in ids:
            make_subject(root, subject)
    make_subject(root, "BraTS2021_99999")  # in no split
    (root / "not_a_subject").mkdir()
    splits_dir = tmp_path / "splits"
    for key, name in SPLIT_FILES.items():
        write_csv(splits_dir / name, splits[key])
    return root, splits_dir, splits


def test_shipped_splits_are_the_papers() -> None:
    """938 / 62 / 251 subjects (paper Sec. 5.2), disjoint; the same as the reference copy when it is here."""
    splits = read_splits(SPLITS_DIR)
    assert {k: len(v) for k, v in splits.items()} == {"training": 938, "validation": 62, "testing": 251}
    if REFERENCE_SPLITS.is_dir():
        for key, name in SPLIT_FILES.items():
            assert splits[key] == read_split_csv(REFERENCE_SPLITS / name), name


def test_datalist_relative(brats, tmp_path: Path) -> None:
    root, splits_dir, splits = brats
    out = tmp_path / "lists" / "datalist.json"
    summary = make_brats21_datalist(root, out, splits_dir)
    assert summary["counts"] == {"training": 3, "validation": 1, "testing": 2}
    assert summary["unused"] == ["BraTS2021_99999"]
    content = json.loads(out.read_text())
    assert sorted(content) == ["testing", "training", "validation"]
    for key, ids in splits.items():
        assert [item["name"] for item in content[key]] == ids
        for item in content[key]:
            assert sorted(item) == ["flair", "label", "name", "t1", "t1c", "t2"]
            assert not Path(item["t1c"]).is_absolute() and item["t1c"].endswith(f"{item['name']}_t1ce.nii.gz")
            assert item["label"].endswith(f"{item['name']}_seg.nii.gz")
    # the bundle reads it: paths resolve against the JSON's folder, the studies pass the header checks
    studies = split_studies(out, "training")
    assert [s["name"] for s in studies] == splits["training"]
    for study in studies:
        assert Path(study["flair"]).is_file()
        check_study(study)


def test_datalist_absolute(brats, tmp_path: Path) -> None:
    root, splits_dir, _ = brats
    out = make_brats21_datalist(root, tmp_path / "abs.json", splits_dir, absolute=True)["path"]
    item = json.loads(Path(out).read_text())["testing"][0]
    assert all(Path(item[k]).is_absolute() and Path(item[k]).is_file() for k in BRATS21_FILES)


def test_missing_file_and_folder_are_named(brats, tmp_path: Path) -> None:
    root, splits_dir, splits = brats
    gone_file = root / splits["training"][1] / f"{splits['training'][1]}_flair.nii.gz"
    gone_file.unlink()
    gone_subject = splits["testing"][0]
    for path in (root / gone_subject).iterdir():
        path.unlink()
    (root / gone_subject).rmdir()
    out = tmp_path / "datalist.json"
    with pytest.raises(DatalistError) as err:
        make_brats21_datalist(root, out, splits_dir)
    message = str(err.value)
    assert "2 problem(s)" in message
    assert str(gone_file) in message and "file missing" in message
    assert f"{root / gone_subject}: subject folder missing (testing split)" in message
    assert not out.exists()


def test_bad_inputs(brats, tmp_path: Path) -> None:
    root, splits_dir, splits = brats
    with pytest.raises(DatalistError, match="no such folder"):
        make_brats21_datalist(tmp_path / "nowhere", tmp_path / "d.json", splits_dir)
    with pytest.raises(DatalistError, match="holds no BraTS2021_XXXXX subject folder"):
        make_brats21_datalist(tmp_path, tmp_path / "d.json", splits_dir)
    write_csv(splits_dir / "val.csv", [splits["training"][0]])
    with pytest.raises(DatalistError, match="in both the training and the validation split"):
        make_brats21_datalist(root, tmp_path / "d.json", splits_dir)
    atomic_write_bytes(b"subject\nBraTS2021_00000\n", splits_dir / "val.csv")
    with pytest.raises(DatalistError, match="expected a 'BraTS21ID' header"):
        read_split_csv(splits_dir / "val.csv")
    atomic_write_bytes(b"BraTS21ID\nBraTS2021_123\n", splits_dir / "val.csv")
    with pytest.raises(DatalistError, match="line 2: 'BraTS2021_123' is not a BraTS 2021 subject id"):
        read_split_csv(splits_dir / "val.csv")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts.cli", *args], cwd=BUNDLE, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_cli(brats, tmp_path: Path) -> None:
    root, splits_dir, _ = brats
    out = tmp_path / "datalist.json"
    proc = cli("make-datalist", str(root), str(out), "--splits_dir", str(splits_dir))
    assert proc.returncode == 0, proc.stderr
    assert "training 3, validation 1, testing 2 subjects" in proc.stdout
    assert "1 subject folder(s)" in proc.stdout and "in no split" in proc.stdout
    assert len(split_studies(out, "testing")) == 2

    # the shipped splits name subjects this folder lacks: a clear error, no traceback, nothing written
    out2 = tmp_path / "full.json"
    proc = cli("make-datalist", str(root), str(out2))
    assert proc.returncode != 0
    assert "subject folder missing" in proc.stderr and "more" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out2.exists()

    proc = cli("make-datalist", "--help")
    assert proc.returncode == 0 and "BRATS_DIR" in proc.stdout + proc.stderr
