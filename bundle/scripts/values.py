"""Value files: a value that one workflow makes and a later one uses, written with what it was made under.

Some workflows produce a number rather than images: AutoDDPM's ``run calibrate`` (the masking threshold tau),
FLAIR's ``run tune_threshold`` (the best-Dice threshold). Such a value is only valid for the settings and the weights
it was made with, so it is written as a small JSON file that records them::

    {"value": {...}, "settings": {...}, "weights": "model.pt", "weights_sha256": "...", "made_by": "run calibrate"}

and the workflow that uses it reads it by path with :func:`read_value_file`, which refuses (one line naming the file
and every difference) a file made under other settings or with other weights. :func:`given_or_recorded` is the
config-side rule: a value given explicitly wins, else the file's when it exists, else none (the method's fallback).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from scripts import is_unset
from scripts.errors import StudyError
from scripts.files import atomic_write_bytes
from scripts.settings import differences, joined, older_form, plain


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_record(weights: str | os.PathLike | None) -> tuple[str | None, str | None]:
    """(file name, sha256) of ``weights``, or (None, None) without weights."""
    if is_unset(weights):
        return None, None
    path = Path(weights)
    if not path.is_file():
        raise StudyError(f"{path}: no weights file to record or check a value against")
    return path.name, file_sha256(path)


def write_value_file(
    path: str | os.PathLike,
    value: Mapping[str, object],
    settings: Mapping[str, object],
    weights: str | os.PathLike | None,
    made_by: str = "",
) -> Path:
    """Write ``value`` with the ``settings`` and ``weights`` it was made under to the JSON file ``path`` atomically.

    Args:
        path: the value file (folders are made as needed).
        value: what was made, plain values only (numbers, strings, lists, dicts).
        settings: the settings it was made under (:func:`scripts.settings.settings_of` of the objects that made it,
            with what else is kept for the record); a reader checks the ones it is given (:func:`read_value_file`).
        weights: the weights file it was made with (its name and sha256 are recorded), or None.
        made_by: a short note of what wrote it, e.g. the workflow (``"AutoDDPM run calibrate"``).

    Returns:
        ``path``.
    """
    if is_unset(path):
        raise ValueError("no value file named (the path is null): give the file to write")
    name, sha = _weights_record(weights)
    content = {
        "value": plain(dict(value)),
        "settings": plain(dict(settings)),
        "weights": name,
        "weights_sha256": sha,
        "made_by": made_by,
    }
    return atomic_write_bytes((json.dumps(content, indent=4) + "\n").encode(), path)


def read_value_file(
    path: str | os.PathLike, expected_settings: Mapping[str, object], weights: str | os.PathLike | None
) -> dict:
    """The value of the value file ``path``, after checking it against the configuration that will use it.

    Args:
        path: a file written by :func:`write_value_file`.
        expected_settings: settings the value must have been made under (:func:`scripts.settings.settings_of`);
            each is compared with the recorded one after a JSON round trip (tuples equal lists). Recorded settings
            not named here are not checked.
        weights: the weights the value will be used with (their sha256 must equal the recorded one), or None for a
            value made without weights.

    Returns:
        the recorded ``value`` (a dict).

    Raises:
        StudyError: one line naming the file and each difference (the first eight, then how many more): the file
            is missing or unreadable, the weights' sha256 differs ("made with other weights"), a setting differs
            from (or is absent in) the record, or the file records its settings in the form of versions before
            0.7.0 (by config key).
    """
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: no such value file")
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StudyError(f"{path}: not a readable value file ({type(err).__name__}: {err})") from err
    if not isinstance(content, dict) or not all(isinstance(content.get(k), dict) for k in ("value", "settings")):
        raise StudyError(f"{path}: not a value file (expected a JSON object with 'value' and 'settings' objects)")
    recorded = content["settings"]
    by = f" (made by {content['made_by']})" if content.get("made_by") else ""
    if older_form(recorded, expected_settings):
        raise StudyError(
            f"{path}: records its settings by config key, as versions before 0.7.0 did{by}, where this version reads "
            "them from the configured objects: make it again, or check and rewrite it with `python -m scripts.cli "
            "upgrade-value-file FILE --config_file [...]` (docs/README.md, 'Settings on record')"
        )
    differ = []
    name, sha = _weights_record(weights)
    if sha != content.get("weights_sha256"):  # first: a long list of settings must not hide it
        made = content.get("weights")
        made = f"{made} (sha256 {str(content.get('weights_sha256'))[:12]})" if content.get("weights_sha256") else "none"
        configured = f"{name} (sha256 {sha[:12]})" if sha else "none"
        differ.append(f"made with other weights: {made}, configured {configured}")
    differ += differences(recorded, expected_settings)
    if differ:
        raise StudyError(f"{path}: does not fit this configuration{by}: {joined(differ)}")
    return content["value"]


def given_or_recorded(
    given: object,
    path: str | os.PathLike | None,
    expected_settings: Mapping[str, object],
    weights: str | os.PathLike | None,
    key: str,
) -> object | None:
    """The rule of a value that a workflow can be given or read from a value file, for configs:

    ``given`` when it is set (not None, nor "null"/"none" from a command line); else ``value[key]`` of the value
    file ``path`` when that file exists, checked with :func:`read_value_file` (a file made under other settings or
    with other weights stops with a StudyError); else None (the method's own fallback). ``path`` None (or "null")
    names no file.
    """
    if not is_unset(given):
        return given
    if is_unset(path) or not Path(path).exists():
        return None
    value = read_value_file(path, expected_settings, weights)
    if key not in value:
        raise StudyError(f"{path}: the value file holds no {key!r} (it holds {sorted(value)})")
    return value[key]
