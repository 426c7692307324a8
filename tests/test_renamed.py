"""Options renamed in version 0.6.0 (issue 21): inference's ``checkpoint`` and training's ``final_weights`` are now
``weights`` (one path: written by training, read by inference), inference's ``batch_size`` is ``pairs_per_call``
(slice-timestep pairs per network call; training's ``batch_size`` stays slices per step). The old names are read
until 0.8.0 with a one-line notice; the new names, and a run that names neither, print none."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"


def parsed(key: str, configs: list[str], **overrides: object) -> object:
    parser = ConfigParser()
    parser.read_config(ConfigParser.load_config_files([str(BUNDLE / "configs" / c) for c in configs]))
    parser.update({"bundle_root": str(BUNDLE), "output_dir": "outputs", **overrides})
    return parser.get_parsed_content(key)


@pytest.mark.parametrize(
    ("configs", "key", "old", "new", "default"),
    [
        (["inference.yaml"], "weights", "checkpoint", "weights", str(BUNDLE / "models" / "model.pt")),
        (["inference.yaml", "train.yaml"], "weights", "final_weights", "weights", str(BUNDLE / "models" / "model.pt")),
        (["inference.yaml"], "pairs_per_call", "batch_size", "pairs_per_call", 4),
        (["inference.yaml", "anoddpm.yaml"], "weights", "checkpoint", "weights", str(BUNDLE / "models/anoddpm.pt")),
    ],
)
def test_an_old_name_still_works_with_one_notice_and_the_new_name_without(configs, key, old, new, default, caplog):
    """Planted bugs it fails on: an old name silently ignored (the default used instead), a notice on every run, or
    none when the old name is used."""
    with caplog.at_level(logging.WARNING):
        assert parsed(key, configs) == default  # on this CPU machine, pairs_per_call's default is the CPU's 4
    assert not [r for r in caplog.records if "notice" in r.getMessage()]
    with caplog.at_level(logging.WARNING):
        assert parsed(key, configs, **{new: 7}) == 7
    assert not [r for r in caplog.records if "notice" in r.getMessage()]
    with caplog.at_level(logging.WARNING):
        assert parsed(key, configs, **{old: 9}) == 9
    notices = [r.getMessage() for r in caplog.records if "notice" in r.getMessage()]
    assert notices == [f"notice: '{old}' is now named '{new}'; the old name is read until version 0.8.0"]


def test_the_renamed_classes_keep_their_old_names_for_a_version():
    from scripts.postprocess import ThresholdSegmentd, YenSegmentd
    from scripts.triage import ScoreStudyd, StudyScored

    assert YenSegmentd is ThresholdSegmentd and StudyScored is ScoreStudyd
