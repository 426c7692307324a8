"""ANDi bundle code: small modules with one job each, imported by the bundle configs as ``scripts``.

MONAI's bundle runner puts ``bundle_root`` on ``sys.path`` when it parses a config, so configs name components as
``_target_: scripts.loading.LoadStudyd`` and so on (not ``$import scripts``: MONAI runs imports before that). Nothing
here is installed as a top-level package.
"""

import logging

MODALITIES: tuple[str, ...] = ("t1", "t1c", "t2", "flair")
"""The default channel order (``modalities`` in ``configs/inference.yaml``): T1, T1Gd, T2, FLAIR."""

KNOWN_MODALITIES: tuple[str, ...] = ("t1", "t1c", "t2", "flair", "pd")
"""Every modality the bundle can read: the default four and proton density (PD, as IXI has). A configuration uses any
of them, in the order its ``modalities`` names them (``scripts.modalities``)."""

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", "none", ""}


def as_bool(value: object) -> bool:
    """A config flag as a bool: command-line overrides such as ``--overwrite false`` arrive as the string "false"."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"expected a boolean (true/false), got {value!r}")
    return bool(value)


def as_flag_or_auto(value: object) -> bool | str:
    """A tri-state option: "auto" stays "auto", anything else goes through :func:`as_bool`."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    return as_bool(value)


def as_optional_float(value: float | str | None) -> float | None:
    """A number or nothing from a config: ``null`` on a command line arrives as the string "null"."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "")):
        return None
    return float(value)


def renamed(value: object, new: str, old: dict[str, object] | None = None, until: str = "0.8.0") -> object:
    """A renamed option: ``value`` (the option ``new``), or the value of an old name of it in ``old`` ({old name:
    its value, None where unset}) with a one-line notice, while the old name is still read (until version
    ``until``). E.g. inference.yaml's ``weights``, whose old name is ``checkpoint``."""
    for name, old_value in (old or {}).items():
        if old_value is not None:
            logging.getLogger("scripts").warning(
                "notice: '%s' is now named '%s'; the old name is read until version %s", name, new, until
            )
            return old_value
    return value
