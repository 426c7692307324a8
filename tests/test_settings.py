"""Settings read from the configured objects (scripts/settings.py): what weights and calibrations record and check.

The tables below are the settings that 0.6's hand-kept lists named: each must still change the record when it
changes (nothing that was checked is lost), and the speed and memory knobs must not (a calibration made with 4 pairs
per call holds for 64)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench.configs import BUNDLE, config_files, parsed
from scripts.errors import StudyError
from scripts.settings import differences, flatten, joined, settings_of, shown
from scripts.upgrade import OLDER_RECORD, upgrade_value_file
from scripts.values import read_value_file, write_value_file

# (config key, another value): each shaped the maps a calibration fits, and 0.6's calibration_settings named it
CALIBRATION_KEYS = [
    ("diffusion_range", [0, 1]),
    ("modalities", ["t1", "t2"]),
    ("image_size", 64),
    ("intensity_percentile", 98),
    ("histogram_matching", True),
    ("atlas", "mni152"),
    ("t_lower", 76),
    ("t_upper", 150),
    ("t_stride", 5),
    ("scoring_noise", "pyramid"),
    ("aggregation", "arithmetic"),
    ("seed", 3),
    ("scoring_noise_per_study", False),
    ("clamp_x0", True),
    ("zero_background", True),
    ("resize_antialias", "gaussian"),
    ("channel_reduction", "mean"),
    ("median_filter_size", 3),
    ("dilation_radius", 2),
    ("voxel_set", "brain"),
    ("schedule", "shifted_cosine"),  # not in 0.6's list: the scheduler now describes itself
    ("label_interpolation", "nearest"),  # nor this: the labels' resize is a setting of pre#resize
]
# (config key, another value): speed, memory, output folders and gates, which never change a map
NOT_SETTINGS = [
    ("pairs_per_call", 64),
    ("memory_budget_mb", 500),
    ("amp", False),
    ("channels_last", False),
    ("compile", True),
    ("output_dir", "elsewhere"),
    ("save_preprocessed", True),
    ("min_brain_ml", 10),
]
WEIGHTS_KEYS = [
    ("method", "AnoDDPM"),
    ("diffusion_range", [0, 1]),
    ("modalities", ["t1", "t2"]),
    ("image_size", 64),
    ("num_train_timesteps", 500),
    ("beta_start", 0.0002),
    ("beta_end", 0.03),
    ("schedule", "shifted_cosine"),
    ("prediction_type", "v_prediction"),
]


def changed_keys(item: str, configs: list[str], key: str, value: object) -> list[str]:
    base = parsed(item, configs)
    other = parsed(item, configs, **{key: value})
    return sorted(k for k in set(base) | set(other) if base.get(k, "absent") != other.get(k, "absent"))


@pytest.mark.parametrize("key,value", CALIBRATION_KEYS, ids=[k for k, _ in CALIBRATION_KEYS])
def test_every_setting_that_shapes_the_map_is_in_a_calibrations_record(key: str, value: object) -> None:
    assert changed_keys("calibration_settings", ["cpu.yaml"], key, value), f"{key} is not recorded"


@pytest.mark.parametrize("key,value", NOT_SETTINGS, ids=[k for k, _ in NOT_SETTINGS])
def test_speed_memory_and_output_knobs_are_not_settings(key: str, value: object) -> None:
    assert changed_keys("calibration_settings", ["cpu.yaml"], key, value) == []
    assert changed_keys("weights_settings", [], key, value) == []


@pytest.mark.parametrize("key,value", WEIGHTS_KEYS, ids=[k for k, _ in WEIGHTS_KEYS])
def test_every_setting_the_weights_are_trained_for_is_in_their_record(key: str, value: object) -> None:
    assert changed_keys("weights_settings", [], key, value), f"{key} is not recorded"


def test_the_weights_record_their_task_not_the_scoring() -> None:
    """The shipped weights were trained with the Gaussian anti-aliasing and are scored with torch's by default: the
    weights' record is what the network is trained for, not the preprocessing around it."""
    for key, value in [("resize_antialias", "gaussian"), ("t_upper", 150), ("median_filter_size", 3)]:
        assert changed_keys("weights_settings", [], key, value) == [], key


class Step:
    """A configured object as the bundle's transforms are: settings and knobs as public attributes."""

    not_settings = ("slab",)

    def __init__(self, size: int, slab: int, new_option: str = "a") -> None:
        self.size, self.slab, self.new_option = size, slab, new_option


class SubStep(Step):
    not_settings = ("inplace",)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.inplace = True


def test_settings_of_reads_every_public_attribute_less_what_each_class_names() -> None:
    """Planted bugs it fails on: ``not_settings`` ignored, a base class's ``not_settings`` not inherited, a new
    option left out (a hand-kept list), nested objects not named by their path."""
    got = settings_of({"step": SubStep(size=5, slab=8), "plain": [1, 2]})
    assert got == {
        "plain": [1, 2],
        "step.class": f"{__name__}.SubStep",
        "step.new_option": "a",
        "step.size": 5,
    }
    nested = settings_of({"post": {"median": Step(size=3, slab=1)}})
    assert nested["post.median.size"] == 3 and "post.median.slab" not in nested


def test_flatten_keeps_arrays_and_lists_of_values_whole() -> None:
    digest = {"shape": [2], "dtype": "float32", "sha1": "ab"}
    assert flatten({"a": digest, "b": [1, 2], "c": [{"d": 1}, {"d": 2}], "e": {}}, "x") == {
        "x.a": digest,
        "x.b": [1, 2],
        "x.c.0.d": 1,
        "x.c.1.d": 2,
        "x.e": {},
    }


def test_differences_name_each_key_and_shorten_long_lists() -> None:
    got = differences({"a": 1, "t": list(range(75, 88))}, {"a": 2, "t": [75, 76], "new": "x"}, made="made with")
    assert got == [
        "a: made with 1, configured 2",
        "t: made with [75, 76, 77, ..., 86, 87] (13 items), configured [75, 76]",
        "new: not recorded, configured 'x'",
    ]
    assert shown(list(range(8))) == repr(list(range(8)))
    assert joined([str(i) for i in range(10)]) == "0; 1; 2; 3; 4; 5; 6; 7; and 2 more"
    assert joined(["a", "b"]) == "a; b"


def older_calibration(tmp_path: Path, **changes: object) -> Path:
    """A calibration file as 0.6 wrote it (settings by config key: those of the demo command) for the shipped
    weights, with ``changes`` to its record."""
    weights = BUNDLE / "models" / "model.pt"
    if not weights.is_file():
        pytest.skip(f"{weights} is absent")
    keys = [k for k, _ in CALIBRATION_KEYS if k not in ("schedule", "label_interpolation")] + ["method"]
    record = {k: parsed(k, ["cpu.yaml"]) for k in keys}
    record.update(channel_weights=None, dataset_dir="/data/healthy.json", **changes)
    return write_value_file(tmp_path / "calibration.json", {"thresholds": [1.0]}, record, weights, "ANDi run calibrate")


def test_an_older_value_file_is_refused_with_one_line_and_upgraded_when_it_fits(tmp_path: Path) -> None:
    """Planted bugs it fails on: an older file read as fitting (no key of it is checked), the upgrade accepting a
    record whose settings differ from the configuration (t_upper 200 for the demo's 88) or other weights, the value
    or the older record lost on the way."""
    configs = config_files(["cpu.yaml"], BUNDLE / "configs")
    expected = parsed("calibration_settings", ["cpu.yaml"])
    weights = BUNDLE / "models" / "model.pt"
    path = older_calibration(tmp_path)
    with pytest.raises(StudyError, match="records its settings by config key, as versions before 0.7.0 did"):
        read_value_file(path, expected, weights)
    upgraded = upgrade_value_file(path, configs, str(BUNDLE), out=tmp_path / "upgraded.json")
    assert read_value_file(upgraded, expected, weights) == {"thresholds": [1.0]}
    content = json.loads(upgraded.read_text())
    assert content["settings"][OLDER_RECORD]["dataset_dir"] == "/data/healthy.json"
    with pytest.raises(StudyError, match="already records its settings in this version's form"):
        upgrade_value_file(upgraded, configs, str(BUNDLE))
    other = older_calibration(tmp_path, t_upper=200)
    with pytest.raises(StudyError, match=r"cannot be upgraded: inferer\.timesteps: made with \[75, 76, 77, \.\.\."):
        upgrade_value_file(other, configs, str(BUNDLE))
    with pytest.raises(StudyError, match="made with other weights than None"):  # a value made without weights
        upgrade_value_file(path, configs, str(BUNDLE), out=tmp_path / "x.json", weights_key=None)


def test_the_upgrade_command_runs_as_the_model_card_gives_it(tmp_path: Path) -> None:
    path = older_calibration(tmp_path)
    cmd = [sys.executable, "-m", "scripts.cli", "upgrade-value-file", str(path)]
    cmd += ["--config_file", "['configs/inference.yaml','configs/cpu.yaml']"]
    run = subprocess.run(cmd, cwd=BUNDLE, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith(f"value file written in this version's form: {path}")
    assert "inferer.timesteps" in json.loads(path.read_text())["settings"]
    missing = subprocess.run([*cmd[:-1], "['configs/inference.yaml','configs/absent.yaml']"], cwd=BUNDLE,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert missing.returncode != 0 and "configs/absent.yaml: no such config file" in missing.stderr
    assert "Traceback" not in missing.stderr
