"""A value file of a version before 0.7.0 (a calibration, AutoDDPM's tau, FLAIR's threshold) in this version's form.

Before 0.7.0 a value file recorded its settings by config key (``{"t_upper": 88, "median_filter_size": 5, ...}``);
since, by what the configured objects describe of themselves (``scripts.settings``), and a reader refuses the older
form. :func:`upgrade_value_file` checks an older file against a configuration: the configuration, with the file's
recorded keys set on it, must make the same settings as the configuration as it is (so the value was made under
it), and the weights must be the recorded ones. It then writes the file again with the same value and the settings
of the new form, with the older record kept whole under :data:`OLDER_RECORD` (what it was made from, such as its
``dataset_dir``, stays on record; a reader does not check it).

    python -m scripts.cli upgrade-value-file models/calibration.json \\
        --config_file "['configs/inference.yaml','configs/cpu.yaml']"
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.bundle import ConfigParser
from scripts import is_unset
from scripts.errors import StudyError
from scripts.settings import by_object, differences, joined
from scripts.values import file_sha256, write_value_file

OLDER_RECORD = "recorded_before_0.7.0"
"""The key of the older record's settings in an upgraded file."""


def _settings(
    config_files: Sequence[str], bundle_root: str, key: str, overrides: Mapping[str, object]
) -> tuple[dict, ConfigParser]:
    parser = ConfigParser()
    parser.read_config(list(config_files))
    parser["bundle_root"] = bundle_root
    for name, value in overrides.items():
        parser[name] = value
    return dict(parser.get_parsed_content(key)), parser


def upgrade_value_file(
    path: str | os.PathLike,
    config_files: Sequence[str],
    bundle_root: str = ".",
    settings_key: str = "calibration_settings",
    weights_key: str | None = "weights",
    out: str | os.PathLike | None = None,
) -> Path:
    """Write the value file ``path`` (made before 0.7.0) in this version's form, to ``out`` (default: ``path``).

    Args:
        path: the value file.
        config_files: the configuration it is used with (e.g. ``configs/inference.yaml`` and ``configs/cpu.yaml``).
        bundle_root: the configuration's ``bundle_root``.
        settings_key: the config item of the settings the file must fit (``calibration_settings``,
            ``masking_calibration_settings`` of autoddpm.yaml, ``threshold_settings`` of flair.yaml).
        weights_key: the config item of the weights the value was made with (None for a value made without).

    Raises:
        StudyError: one line: a config file is missing, the file is not an older value file, its recorded settings
            would change what the configuration makes (each difference named), or it was made with other weights.
    """
    path = Path(path)
    missing = [f for f in config_files if not Path(f).is_file()]
    if missing:
        raise StudyError(f"{missing[0]}: no such config file")
    try:
        content = json.loads(path.read_text())
        recorded = dict(content["settings"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StudyError(f"{path}: not a readable value file ({type(err).__name__}: {err})") from err
    if by_object(recorded):
        raise StudyError(f"{path}: already records its settings in this version's form")
    configured, parser = _settings(config_files, bundle_root, settings_key, {})
    keys = {k for k in recorded if k in parser.config}
    as_recorded, _ = _settings(config_files, bundle_root, settings_key, {k: recorded[k] for k in keys})
    differ = differences(as_recorded, configured, made="made with")
    weights = None if weights_key is None else parser.get_parsed_content(weights_key)
    sha = None if is_unset(weights) else file_sha256(weights)
    if sha != content.get("weights_sha256"):
        differ.append(f"made with other weights than {weights}")
    if differ:
        raise StudyError(f"{path}: does not fit this configuration, so it cannot be upgraded: {joined(differ)}")
    settings = {**configured, OLDER_RECORD: recorded}
    return write_value_file(out or path, content["value"], settings, weights, content.get("made_by", ""))
