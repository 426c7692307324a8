"""Batch rules that no workflow test reaches: ``on_error: stop``, the failures file's ``unexpected`` kind and
``skipped`` list, the rank split of ``select_studies`` and its error, and ``atomic_path`` when the writer raises."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from monai.data import DataLoader, Dataset
from runner import tiny_dataset

from benchmarks.bench.configs import config_parser
from scripts.batch import BatchReport, StudyBatch, failures_file, run_studies
from scripts.errors import Failure, StudiesFailed, StudyError
from scripts.files import atomic_path, atomic_write_bytes
from scripts.selection import StudySelection, select_studies

STUDIES = [{"name": n} for n in ("a", "b", "c")]


def test_on_error_stop_stops_at_the_first_failure_and_cleans_it_up():
    """Planted bug: "on_error stop goes on" (the failure recorded and the next study done, as with continue)."""
    done, cleaned = [], []

    def do_one(study: dict) -> None:
        if study["name"] == "b":
            raise StudyError("b.nii.gz: broken")
        done.append(study["name"])

    report = BatchReport()
    with pytest.raises(StudyError, match="b.nii.gz: broken"):
        run_studies(STUDIES, do_one, report, on_error="stop", clean_up=lambda s: cleaned.append(s["name"]))
    assert done == ["a"] and cleaned == ["b"], "c is not started; b's partial outputs are removed"
    assert report.done == ["a"]


def test_on_error_stop_refuses_a_batch_whose_headers_failed(tmp_path):
    """Planted bug: "on_error stop scores the valid studies although a header check failed"."""
    scored = []
    selection = StudySelection(studies=[{"name": "a"}], failures=[Failure("b", "b/t1.nii.gz: not 3D")])
    engine = SimpleNamespace(logger=logging.getLogger("test_batch_rules"), add_event_handler=lambda *args: None)
    loader = DataLoader(Dataset(selection.studies), batch_size=1)
    batch = StudyBatch(engine, selection, loader=loader, output_dir=tmp_path, on_error="stop")
    batch.score = lambda study: scored.append(study["name"])
    with pytest.raises(StudiesFailed, match="b/t1.nii.gz: not 3D"):
        batch.run()
    assert scored == []
    continued = StudyBatch(engine, selection, loader=loader, output_dir=tmp_path / "c", on_error="continue")
    continued.score = lambda study: scored.append(study["name"])
    continued.run()
    assert scored == ["a"]


def test_failures_file_records_a_bug_as_unexpected_and_the_skipped_studies(tmp_path, caplog):
    """Planted bugs: "a bug recorded as an input error" (kind input, no traceback in the log) and "the skipped list
    left out of failures.json"."""

    def do_one(study: dict) -> None:
        if study["name"] == "a":
            raise StudyError("a/flair.nii.gz: not a brain")
        if study["name"] == "b":
            raise KeyError("pred")  # a bug of the bundle, not of the input

    report = BatchReport(skipped=["z"])
    with caplog.at_level(logging.ERROR):
        run_studies(STUDIES, do_one, report, on_error="continue")
    path = report.write(failures_file(tmp_path, rank=1, world_size=2))
    assert path.name == "failures_rank1.json"
    content = json.loads(path.read_text())
    assert content["done"] == ["c"] and content["skipped"] == ["z"]
    assert content["failed"] == [
        {"study": "a", "message": "a/flair.nii.gz: not a brain", "kind": "input"},
        {"study": "b", "message": "b: KeyError: 'pred'", "kind": "unexpected"},
    ]
    assert "Traceback" in caplog.text and "KeyError" in caplog.text
    lines = report.summary().splitlines()
    assert lines[0] == "1 scored, 1 skipped (already done), 2 failed"
    assert lines[2] == "error (unexpected, a bug): b: KeyError: 'pred'"


@pytest.fixture(scope="module")
def five_studies(tmp_path_factory) -> Path:
    """Made (synthetic) tiny studies, five in a datalist."""
    return tiny_dataset(tmp_path_factory.mktemp("split"), n_healthy=0, n_anomalous=5, seed=2)


def test_select_studies_gives_each_study_to_one_rank(five_studies, tmp_path):
    """Planted bugs: "every rank takes every study", "done studies skipped before the split" (a rank's share then
    depends on what the others finished) and "a rank outside the world size gets an empty share" (no error)."""
    names = sorted(s["name"] for s in json.loads(five_studies.read_text())["testing"])
    out = tmp_path / "out"
    (out / names[0]).mkdir(parents=True)
    (out / names[0] / "segmentation.nii.gz").write_bytes(b"done")  # study 0 was done by an earlier run
    shares = [select_studies(five_studies, out, register=False, rank=r, world_size=2) for r in range(2)]
    assert [[s["name"] for s in sel.studies] for sel in shares] == [names[2::2], names[1::2]]
    assert shares[0].skipped == [names[0]] and shares[1].skipped == []
    alone = select_studies(five_studies, out, register=False)
    assert [s["name"] for s in alone.studies] == names[1:]
    for rank, world_size in ((2, 2), (-1, 2)):
        with pytest.raises(ValueError, match=f"rank {rank} is outside world size {world_size}"):
            select_studies(five_studies, out, register=False, rank=rank, world_size=world_size)


def test_inference_leaves_labels_out_and_evaluation_and_calibration_read_them(five_studies, tmp_path):
    """Planted bugs: "inference reads the label" (34 MB of a BraTS-sized study that nothing uses), "calibration or
    evaluation loses its label" (calibration's healthy voxels would include the lesion; evaluation would have nothing
    to score against) and "a label both required and left out" (no error)."""
    assert all("label" in s for s in select_studies(five_studies, tmp_path / "a", register=False).studies)
    dropped = select_studies(five_studies, tmp_path / "b", register=False, labels=False).studies
    assert len(dropped) == 5 and not any("label" in s for s in dropped)
    with pytest.raises(ValueError, match="require_label needs labels"):
        select_studies(five_studies, tmp_path / "c", register=False, labels=False, require_label=True)
    for configs, want in ((["inference.yaml"], False), (["evaluate.yaml"], True), (["calibrate.yaml"], True)):
        assert config_parser(configs)["studies"]["labels"] is want, configs


def test_atomic_path_leaves_nothing_when_the_writer_raises(tmp_path):
    """Planted bugs: "the temporary file left behind" and "renamed onto the target although the writer failed"."""
    target = tmp_path / "out" / "anomaly.nii.gz"
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(b"half a file")
            raise OSError("disk full")
    assert not target.exists() and list(target.parent.iterdir()) == []
    atomic_write_bytes(b"the earlier, complete file", target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"the earlier, complete file"
    assert [p.name for p in target.parent.iterdir()] == ["anomaly.nii.gz"]
