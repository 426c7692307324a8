"""Options renamed in version 0.6.0 (issue 21) and no longer read since 0.9.0: inference's ``checkpoint`` and
training's ``final_weights`` are ``weights`` (one path: written by training, read by inference); a run given an old
name stops with one line that names the new one, where it once used the old value with a notice. Inference's
``batch_size`` is ``pairs_per_call``; training's ``batch_size`` (slices per step) is not an inference option. The
benchmarks' step records made under the old name still stand for the same step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from scripts.errors import StudyError, bundle_error

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"


def parsed(key: str, configs: list[str], **overrides: object) -> object:
    parser = ConfigParser()
    parser.read_config(ConfigParser.load_config_files([str(BUNDLE / "configs" / c) for c in configs]))
    parser.update({"bundle_root": str(BUNDLE), "output_dir": "outputs", **overrides})
    return parser.get_parsed_content(key)


@pytest.mark.parametrize(
    ("configs", "old", "default"),
    [
        (["inference.yaml"], "checkpoint", str(BUNDLE / "models" / "model.pt")),
        (["inference.yaml", "train.yaml"], "final_weights", str(BUNDLE / "models" / "model.pt")),
        (["inference.yaml", "anoddpm.yaml"], "checkpoint", str(BUNDLE / "models/anoddpm.pt")),
    ],
)
def test_an_old_name_of_weights_stops_the_run_with_one_line_naming_the_new_one(configs, old, default):
    """Planted bugs it fails on: the old name quietly ignored (the shipped weights scored instead of the user's), the
    old name still read, or an error that does not say what to give instead."""
    assert parsed("weights", configs) == default
    assert parsed("weights", configs, weights="/my/model.pt") == "/my/model.pt"
    with pytest.raises(Exception) as caught:
        parsed("weights", configs, **{old: "/my/model.pt"})
    error = bundle_error(caught.value)
    assert isinstance(error, StudyError), "an old name is the user's error: one line, no traceback"
    assert str(error) == (
        f"--{old}: renamed 'weights' in version 0.6.0 (the old name was read until 0.8.0); give --weights instead"
    )


def test_pairs_per_call_does_not_read_training_s_batch_size():
    """Planted bug: pairs per call taken from training's batch_size (slices per step) when both configs are merged."""
    assert parsed("pairs_per_call", ["inference.yaml"]) == 4  # this CPU machine's default
    assert parsed("pairs_per_call", ["inference.yaml", "train.yaml"], batch_size=16) == 4
    assert parsed("pairs_per_call", ["inference.yaml"], pairs_per_call=7) == 7


def test_the_old_class_names_are_gone_and_the_authors_grid_name_stays():
    """compare.py (../shared/tools/authors_equiv) imports ``CEIL_GRID``; the classes' old names are not read."""
    import scripts.postprocess
    import scripts.triage
    from scripts.metrics import AUTHORS_CEIL_GRID, CEIL_GRID

    assert CEIL_GRID == AUTHORS_CEIL_GRID
    assert not hasattr(scripts.postprocess, "YenSegmentd") and not hasattr(scripts.triage, "StudyScored")


def test_a_step_recorded_under_final_weights_is_the_same_step_under_weights(tmp_path):
    """The benchmarks' kept records (before 0.9.0) name ``--final_weights``: they must still count as done, and a
    record of other settings must still be refused. Planted bug: every kept training run again after the rename."""
    from benchmarks.bench.kept import finished_record

    now = ["-m", "monai.bundle", "run", "training", "--weights", "/w/model.pt", "--seed", "0"]
    record = tmp_path / "table_command.json"
    old = [("--final_weights" if part == "--weights" else part) for part in now]
    record.write_text(json.dumps({"command": old, "finished": True, "seconds": 1.0}))
    assert finished_record(record, now) is not None
    assert finished_record(record, [*now[:-1], "1"]) is None
