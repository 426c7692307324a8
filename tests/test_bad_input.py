"""Bad input through the real command line: each kind ends in one line naming the file, the other studies of the
batch are written, the failed study leaves no output, and no input file changes.

One `run inference` scores a folder holding a study of every kind below (most of them broken in one way, a few odd
but fine); a few more runs cover what stops a run before any study is scored.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from runner import TINY_ARGS, run_bundle, tiny_dataset, tiny_weights

from scripts.checkpoints import save_state_dict
from scripts.networks import make_network

KEYS = ("t1", "t1c", "t2", "flair")


def load(path: Path) -> nib.Nifti1Image:
    return nib.load(str(path))


def save(array: np.ndarray, like: nib.Nifti1Image, path: Path, dtype=np.float32) -> None:
    nib.save(nib.Nifti1Image(np.asarray(array).astype(dtype), like.affine), str(path))


def study_files(folder: Path) -> dict[str, Path]:
    return {key: next(folder.glob(f"*_{key}.nii.gz")) for key in KEYS}


def make_kind(kind: str, good: Path, folder: Path) -> tuple[str | None, str]:
    """Copy the good study to ``folder`` and break it as ``kind`` says; returns (the file the error must name, a
    phrase of the problem), or (None, "") for a study that must be scored."""
    shutil.copytree(good, folder)
    (label := next(folder.glob("*_seg.nii.gz"))).unlink()  # inference needs no label
    del label
    files = study_files(folder)
    ref = load(files["t1"])
    data = np.asarray(ref.dataobj, dtype=np.float32)
    if kind == "missing_modality":
        files["t2"].unlink()
        return str(folder), "missing modality t2"
    if kind == "all_zero":
        for path in files.values():
            save(np.zeros_like(data), ref, path)
        return str(files["t1"]), "no voxel above zero"
    if kind == "constant":
        for path in files.values():
            save(np.full_like(data, 7.0), ref, path)
        return str(files["t1"]), "a constant image"
    if kind == "two_flair":
        shutil.copy(files["flair"], folder / "FLAIR_2.nii.gz")
        return str(folder), f"both FLAIR_2.nii.gz and {files['flair'].name} look like the 'flair' image"
    if kind == "truncated_gz":
        raw = files["flair"].read_bytes()
        files["flair"].write_bytes(raw[: len(raw) // 2])
        return str(files["flair"]), "unreadable or truncated"
    if kind == "not_nifti":
        files["t1c"].write_bytes(b"this is not an image at all" * 10)
        return str(files["t1c"]), "unreadable"
    if kind == "zero_bytes":
        files["t2"].write_bytes(b"")
        return str(files["t2"]), "unreadable"
    if kind == "header_promises_more":  # an uncompressed NIfTI cut short: its header promises more voxels
        plain = folder / files["t1"].name.replace(".nii.gz", ".nii")
        plain.write_bytes(gzip.decompress(files["t1"].read_bytes())[:-5000])
        files["t1"].unlink()
        return str(plain), "unreadable or truncated"
    if kind == "image_2d":
        save(data[..., 10], ref, files["t1"])
        return str(files["t1"]), "expected a 3D volume"
    if kind == "image_5d":
        save(data[..., None, None].repeat(2, -1), ref, files["t1"])
        return str(files["t1"]), "expected a 3D volume"
    if kind == "nan":
        data[20, 20, 10] = np.nan
        save(data, ref, files["flair"])
        return str(files["flair"]), "NaN or infinite voxels"
    if kind == "inf":
        data[20, 20, 10] = np.inf
        save(data, ref, files["t2"])
        return str(files["t2"]), "NaN or infinite voxels"
    if kind == "tiny_brain":  # a few voxels of "brain": a wrong file or a wrong voxel size
        blob = np.zeros_like(data)
        blob[20:22, 20:22, 10] = np.random.default_rng(0).uniform(100, 200, (2, 2))
        for path in files.values():
            save(blob, ref, path)
        return str(files["t1"]), "far too small for a brain"
    if kind == "grid_mismatch":
        save(data[:-2], ref, files["t2"])
        return str(files["t2"]), "differs from"
    if kind == "ambiguous_name":
        shutil.copy(files["t1"], folder / "t1_minus_t2.nii.gz")
        return str(folder / "t1_minus_t2.nii.gz"), "names no single modality"
    if kind == "uint16":
        for path in files.values():
            save(np.asarray(load(path).dataobj), ref, path, np.uint16)
        return None, ""
    if kind == "float64":
        for path in files.values():
            save(np.asarray(load(path).dataobj), ref, path, np.float64)
        return None, ""
    if kind == "singleton_4d":
        for path in files.values():
            save(np.asarray(load(path).dataobj)[..., None], ref, path)
        return None, ""
    if kind == "brats_names":  # t1 and t1ce: whole tokens, never substrings
        for key, suffix in (("t1", "t1"), ("t1c", "t1ce"), ("t2", "t2"), ("flair", "flair")):
            files[key].rename(folder / f"BraTS2021_00001_{suffix}.nii.gz")
        return None, ""
    if kind == "unicode folder ü":
        return None, ""
    raise ValueError(kind)


BROKEN = (
    "missing_modality",
    "all_zero",
    "constant",
    "two_flair",
    "truncated_gz",
    "not_nifti",
    "zero_bytes",
    "header_promises_more",
    "image_2d",
    "image_5d",
    "nan",
    "inf",
    "tiny_brain",
    "grid_mismatch",
    "ambiguous_name",
)
FINE = ("uint16", "float64", "singleton_4d", "brats_names", "unicode folder ü")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    datalist = tiny_dataset(root / "data", n_healthy=0, n_anomalous=1)
    good = root / "data" / json.loads(datalist.read_text())["testing"][0]["name"]
    return {"root": root, "good": good, "weights": tiny_weights(root / "tiny.pt")}


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def infer(made: dict[str, Path], dataset: Path, out: Path, *extra: str, weights: Path | None = None):
    args = ["--dataset_dir", str(dataset), "--output_dir", str(out), "--t_stride", "100", *TINY_ARGS, *extra]
    return run_bundle("inference", "inference.yaml", *args, "--weights", str(weights or made["weights"]), check=False)


@pytest.mark.slow
def test_a_batch_of_every_kind_of_bad_and_odd_input(made, tmp_path):
    studies = tmp_path / "studies"
    expected = {kind: make_kind(kind, made["good"], studies / kind) for kind in (*BROKEN, *FINE)}
    before = snapshot(studies)
    out = tmp_path / "out"
    proc = infer(made, studies, out, "--register", "false")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    report = json.loads((out / "failures.json").read_text())
    failed = {f["study"]: f for f in report["failed"]}
    assert sorted(failed) == sorted(BROKEN), sorted(failed)
    assert sorted(report["done"]) == sorted(FINE)
    lines = proc.stderr.strip().splitlines()
    summary = lines.index(next(x for x in lines if x.startswith(f"{len(FINE)} scored, 0 skipped")))
    assert len(lines) - summary - 1 == len(BROKEN), "one error line per failed study, at the end"
    for kind in BROKEN:
        file, phrase = expected[kind]
        message = failed[kind]["message"]
        assert failed[kind]["kind"] == "input", message
        assert file in message and phrase in message, f"{kind}: {message}"
        assert f"error: {message}" in lines[summary + 1 :], f"{kind}: its line is not in the summary"
        assert not (out / kind).exists(), f"{kind}: outputs of a failed study were left behind"
    for kind in FINE:
        assert (out / kind / "segmentation.nii.gz").is_file() and (out / kind / "anomaly.nii.gz").is_file()
    assert snapshot(studies) == before, "an input file was modified"
    print("\n".join(f"{kind}: {failed[kind]['message']}" for kind in BROKEN))


@pytest.mark.slow
def test_five_studies_with_the_second_corrupt_write_four(made, tmp_path):
    studies = tmp_path / "studies"
    for i in range(5):
        make_kind("truncated_gz" if i == 1 else "uint16", made["good"], studies / f"s{i}")
    proc = infer(made, studies, tmp_path / "out")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    written = sorted(p.parent.name for p in (tmp_path / "out").glob("*/segmentation.nii.gz"))
    assert written == ["s0", "s2", "s3", "s4"]
    assert proc.stderr.strip().splitlines()[-2:] == [
        "4 scored, 0 skipped (already done), 1 failed",
        json.loads((tmp_path / "out" / "failures.json").read_text())["failed"][0]["message"].join(["error: ", ""]),
    ]
    # started again, the four are skipped and the corrupt one fails again
    again = infer(made, studies, tmp_path / "out")
    assert "0 scored, 4 skipped (already done), 1 failed" in again.stderr


@pytest.mark.slow
def test_a_run_that_cannot_start_says_why_in_one_line(made, tmp_path):
    good = tmp_path / "studies"
    make_kind("uint16", made["good"], good / "ok")
    cases = {}
    empty = tmp_path / "empty"
    empty.mkdir()
    cases["empty folder"] = (infer(made, empty, tmp_path / "o1"), f"{empty}: holds no study folder with NIfTI files")
    missing = tmp_path / "nowhere"
    cases["no such folder"] = (infer(made, missing, tmp_path / "o2"), f"{missing}: no such file or folder")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = infer(made, good, blocker / "out")
    cases["output folder inside a file"] = (proc, f"{blocker / 'out'}: the output folder cannot be written")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if not os.access(readonly, os.W_OK):  # root may write a read-only folder: then this case says nothing
        proc = infer(made, good, readonly / "out")
        cases["read-only output folder"] = (proc, f"{readonly / 'out'}: the output folder cannot be written")
    readonly.chmod(stat.S_IRWXU)
    other = tmp_path / "other.pt"
    small = {"channels": [4, 8], "attention_levels": [False, False], "norm_num_groups": 4, "num_res_blocks": 1}
    save_state_dict(make_network(small), other, tiny_settings())
    cases["another network"] = (infer(made, good, tmp_path / "o3", weights=other), "do not fit")
    anoddpm = tiny_weights(tmp_path / "anoddpm.pt", method="AnoDDPM")
    cases["another method"] = (
        infer(made, good, tmp_path / "o4", weights=anoddpm),
        "method: trained with 'AnoDDPM', configured 'ANDi'",
    )
    for name, (proc, phrase) in cases.items():
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 1, f"{name}: exit {proc.returncode}"
        assert last.startswith("error: ") and phrase in last, f"{name}: {last}"
        assert "Traceback" not in proc.stderr, f"{name}: {proc.stderr[-2000:]}"
    assert not list(tmp_path.glob("o*/ok/*")), "nothing may be scored when the run cannot start"
    # --debug true shows the traceback as well
    debug = infer(made, missing, tmp_path / "o5", "--debug", "true")
    assert (
        debug.returncode == 1
        and "Traceback" in debug.stderr
        and debug.stderr.strip().endswith("no such file or folder")
    )


def tiny_settings() -> dict:
    from runner import weights_settings

    return weights_settings()


@pytest.mark.slow
def test_existing_outputs_are_kept_unless_overwrite(made, tmp_path):
    studies = tmp_path / "studies"
    make_kind("uint16", made["good"], studies / "ok")
    out = tmp_path / "out"
    assert infer(made, studies, out).returncode == 0
    seg = out / "ok" / "segmentation.nii.gz"
    first = seg.stat().st_mtime_ns
    kept = infer(made, studies, out)
    assert kept.returncode == 0 and "0 scored, 1 skipped (already done), 0 failed" in kept.stdout
    assert seg.stat().st_mtime_ns == first
    redone = infer(made, studies, out, "--overwrite", "true")
    assert redone.returncode == 0 and "1 scored, 0 skipped" in redone.stdout and seg.stat().st_mtime_ns > first


@pytest.mark.slow
def test_a_datalist_item_pointing_to_a_missing_file_fails_alone(made, tmp_path):
    studies = tmp_path / "studies"
    make_kind("uint16", made["good"], studies / "ok")
    files = {k: str(p) for k, p in study_files(studies / "ok").items()}
    datalist = tmp_path / "datalist.json"
    broken = {**files, "t2": str(tmp_path / "gone_t2.nii.gz")}
    datalist.write_text(json.dumps({"testing": [{"name": "ok", **files}, {"name": "gone", **broken}]}))
    proc = infer(made, datalist, tmp_path / "out")
    assert (
        proc.returncode == 1
        and proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'gone_t2.nii.gz'}: no such file"
    )
    assert (tmp_path / "out" / "ok" / "segmentation.nii.gz").is_file() and not (tmp_path / "out" / "gone").exists()


@pytest.mark.slow
def test_evaluate_and_preprocess_survive_a_bad_study(made, tmp_path):
    """The same batch rule for `run evaluate` (the report covers the studies that could be scored) and `run
    preprocess` (the manifest lists the studies prepared)."""
    studies = tmp_path / "studies"
    shutil.copytree(made["good"], studies / "good")
    make_kind("truncated_gz", made["good"], studies / "bad")
    shutil.copy(next(made["good"].glob("*_seg.nii.gz")), studies / "bad")
    out = tmp_path / "eval"
    args = ["--dataset_dir", str(studies), "--output_dir", str(out), "--t_stride", "100", *TINY_ARGS]
    proc = run_bundle(
        "evaluate", ["inference.yaml", "evaluate.yaml"], *args, "--weights", str(made["weights"]), check=False
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-2] == "1 scored, 0 skipped (already done), 1 failed"
    assert json.loads((out / "metrics.json").read_text())["subjects"] == ["good"]
    assert [f["study"] for f in json.loads((out / "failures.json").read_text())["failed"]] == ["bad"]
    prepared = tmp_path / "prepared"
    proc = run_bundle(
        "preprocess", "preprocess.yaml", "--dataset_dir", str(studies), "--output_dir", str(prepared), check=False
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-2] == "1 prepared, 0 skipped (already done), 1 failed"
    assert [s["name"] for s in json.loads((prepared / "datalist.json").read_text())["training"]] == ["good"]
    assert not (prepared / "bad").exists()
