"""Settings read from the configured objects: what weights, calibrations and value files record, and compare.

A calibration holds only for the maps it was made from; weights only for the channels, slice size, input range and
diffusion they were trained for. Rather than a hand-kept list of the config keys that matter, a record names the
configured *objects* that make those maps (the preprocessing's steps, the inferer, the post steps before the
threshold), and :func:`settings_of` reads what each describes of itself
(:func:`scripts.fingerprint.describe` with ``settings_only``: its class and public attributes, recursively, less the
attributes the class names in ``not_settings``). The description is flattened into dotted keys::

    {"inferer.class": "scripts.scoring.ANDiInferer", "inferer.timesteps": [75, 76, ...],
     "pre.scale.op.percentile": 99.0, "post.median_filter.size": 5, ...}

so that a new option of any step is recorded, and checked, without a list to update, and a difference is named by
the step and attribute it comes from (:func:`differences`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from scripts.fingerprint import DIGEST_KEYS, describe


def plain(value: object) -> object:
    """``value`` as JSON gives it back (tuples become lists), so that recorded and configured values compare."""
    return json.loads(json.dumps(value))


def flatten(description: object, prefix: str) -> dict[str, object]:
    """Dotted keys of a nested description: a dict's entries by name, a list of described objects by position; any
    other value (a number, a string, a list of values, an array's digest) is one setting."""
    if isinstance(description, dict) and description and set(description) != DIGEST_KEYS:  # an array: one setting
        out: dict[str, object] = {}
        for key, value in description.items():
            out.update(flatten(value, f"{prefix}.{key}"))
        return out
    if isinstance(description, list) and description and all(isinstance(v, dict) for v in description):
        out = {}
        for i, value in enumerate(description):
            out.update(flatten(value, f"{prefix}.{i}"))
        return out
    return {prefix: description}


def settings_of(objects: Mapping[str, object]) -> dict[str, object]:
    """The settings of the configured ``objects`` (name -> object, or a plain value), as flat dotted keys.

    Args:
        objects: e.g. ``{"pre": @pre, "inferer": @inferer}``; a mapping of named objects (the ``pre`` steps) is
            described step by step.

    Returns:
        ``{"<name>.<attribute>...": value}``, JSON-plain, sorted by key.
    """
    flat: dict[str, object] = {}
    for name, obj in objects.items():
        flat.update(flatten(describe(obj, settings_only=True), str(name)))
    return {key: plain(flat[key]) for key in sorted(flat)}


def shown(value: object, most: int = 8) -> str:
    """``value`` for a message: a list of more than ``most`` items by its ends and its length."""
    if isinstance(value, list) and len(value) > most:
        return f"[{', '.join(map(repr, value[:3]))}, ..., {', '.join(map(repr, value[-2:]))}] ({len(value)} items)"
    return repr(value)


def differences(recorded: Mapping[str, object], expected: Mapping[str, object], made: str = "made with") -> list[str]:
    """One phrase per key of ``expected`` that ``recorded`` lacks or holds another value of:
    ``"<key>: <made> <recorded>, configured <expected>"`` (values compared JSON-plain, long lists shortened)."""
    out = []
    for key, want in expected.items():
        if key not in recorded:
            out.append(f"{key}: not recorded, configured {shown(plain(want))}")
        elif plain(recorded[key]) != plain(want):
            out.append(f"{key}: {made} {shown(plain(recorded[key]))}, configured {shown(plain(want))}")
    return out


def by_object(settings: Mapping[str, object]) -> bool:
    """True when ``settings`` are in this version's form, read from objects: some key is dotted."""
    return any("." in key for key in settings)


def older_form(recorded: Mapping[str, object], expected: Mapping[str, object]) -> bool:
    """True when ``recorded`` names its settings by config key (the form before version 0.7.0, e.g. ``t_upper``)
    where ``expected`` reads them from objects (:func:`by_object`)."""
    return by_object(expected) and not by_object(recorded)


def joined(phrases: list[str], most: int = 8) -> str:
    """``phrases`` for one line: the first ``most``, then how many more."""
    more = f"; and {len(phrases) - most} more" if len(phrases) > most else ""
    return "; ".join(phrases[:most]) + more
