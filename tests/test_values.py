"""Value files (scripts/values.py): written with their settings and weights, refused when they do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.errors import StudyError
from scripts.values import given_or_recorded, read_value_file, write_value_file

SETTINGS = {"t_upper": 200, "diffusion_range": (-1, 1), "image_size": 128, "seed": 0}


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(b"some weights")
    return path


def test_round_trip_records_settings_weights_and_maker(tmp_path, weights):
    path = write_value_file(tmp_path / "sub" / "tau.json", {"tau": [0.1, 0.2]}, SETTINGS, str(weights), "run calibrate")
    content = json.loads(path.read_text())
    assert content["value"] == {"tau": [0.1, 0.2]} and content["made_by"] == "run calibrate"
    assert content["settings"]["diffusion_range"] == [-1, 1] and content["weights"] == "model.pt"
    assert len(content["weights_sha256"]) == 64
    # tuples equal lists after the round trip; only the settings asked for are checked
    assert read_value_file(path, {"diffusion_range": [-1, 1], "t_upper": 200}, weights) == {"tau": [0.1, 0.2]}
    assert read_value_file(path, {}, weights) == {"tau": [0.1, 0.2]}
    # no weights at all: recorded as null and read back with weights None
    bare = write_value_file(tmp_path / "thr.json", {"threshold": 0.5}, {"median_filter_size": 5}, None)
    assert json.loads(bare.read_text())["weights_sha256"] is None
    assert read_value_file(bare, {"median_filter_size": 5}, None) == {"threshold": 0.5}


def test_missing_and_unreadable_files_are_refused(tmp_path):
    with pytest.raises(StudyError, match=r"absent\.json: no such value file"):
        read_value_file(tmp_path / "absent.json", {}, None)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(StudyError, match=r"bad\.json: not a readable value file"):
        read_value_file(bad, {}, None)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(StudyError, match=r"bad\.json: not a value file"):
        read_value_file(bad, {}, None)


def test_other_settings_are_refused_naming_every_difference(tmp_path, weights):
    path = write_value_file(tmp_path / "tau.json", {"tau": [0.1]}, SETTINGS, weights)
    with pytest.raises(StudyError) as err:
        read_value_file(path, {"t_upper": 100, "image_size": 64, "seed": 0, "noise_type": "gaussian"}, weights)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "t_upper: made with 200, configured 100" in message
    assert "image_size: made with 128, configured 64" in message
    assert "noise_type: not recorded" in message and "seed" not in message


def test_other_weights_are_refused(tmp_path, weights):
    path = write_value_file(tmp_path / "tau.json", {"tau": [0.1]}, SETTINGS, weights)
    other = tmp_path / "other.pt"
    other.write_bytes(b"other weights")
    with pytest.raises(StudyError, match="made with other weights: model.pt .* configured other.pt"):
        read_value_file(path, SETTINGS, other)
    with pytest.raises(StudyError, match="made with other weights"):
        read_value_file(path, SETTINGS, None)
    weights.write_bytes(b"retrained")  # same name, other content
    with pytest.raises(StudyError, match="made with other weights"):
        read_value_file(path, SETTINGS, weights)
    # a difference of settings and of weights together: both named, on one line, the weights first (a long list of
    # settings, shortened after eight, must not hide them)
    with pytest.raises(StudyError, match="made with other weights: .*; t_upper: made with 200, configured 1$"):
        read_value_file(path, {"t_upper": 1}, other)
    with pytest.raises(StudyError, match="no weights file"):
        read_value_file(path, SETTINGS, tmp_path / "absent.pt")


def test_given_or_recorded_prefers_the_given_value_then_the_file_then_none(tmp_path):
    path = tmp_path / "thr.json"
    assert given_or_recorded(None, path, {}, None, "threshold") is None  # no file: the method's fallback
    assert given_or_recorded(None, "null", {}, None, "threshold") is None  # no file named
    write_value_file(path, {"threshold": 0.5}, {"median_filter_size": 5}, None)
    assert given_or_recorded(None, path, {"median_filter_size": 5}, None, "threshold") == 0.5
    assert given_or_recorded("null", str(path), {"median_filter_size": 5}, None, "threshold") == 0.5
    assert given_or_recorded(0.7, path, {"median_filter_size": 3}, None, "threshold") == 0.7  # given: no check
    with pytest.raises(StudyError, match="median_filter_size: made with 5, configured 3"):
        given_or_recorded(None, path, {"median_filter_size": 3}, None, "threshold")
    with pytest.raises(StudyError, match="holds no 'tau'"):
        given_or_recorded(None, path, {}, None, "tau")
