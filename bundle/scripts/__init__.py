"""ANDi bundle code: small modules with one job each, imported by the bundle configs as ``scripts``.

MONAI's bundle runner puts ``bundle_root`` on ``sys.path`` when it parses a config, so configs name components as
``_target_: scripts.loading.LoadStudyd`` and so on (not ``$import scripts``: MONAI runs imports before that). Nothing
here is installed as a top-level package.
"""

MODALITIES: tuple[str, ...] = ("t1", "t1c", "t2", "flair")
"""The default channel order (``modalities`` in ``configs/inference.yaml``): T1, T1Gd, T2, FLAIR."""

KNOWN_MODALITIES: tuple[str, ...] = ("t1", "t1c", "t2", "flair", "pd")
"""Every modality the bundle can read: the default four and proton density (PD, as IXI has). A configuration uses any
of them, in the order its ``modalities`` names them (``scripts.modalities``)."""

UNSET: tuple[str, ...] = ("", "null", "none")
"""Strings a command line gives for "no value" (``--key null`` arrives as the string "null")."""

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


def is_unset(value: object) -> bool:
    """True for None and for the strings of :data:`UNSET` (case-insensitive)."""
    return value is None or (isinstance(value, str) and value.strip().lower() in UNSET)


def as_optional_float(value: float | str | None) -> float | None:
    """A number or nothing from a config: ``null`` on a command line arrives as the string "null"."""
    return None if is_unset(value) else float(value)


def renamed(
    value: object, new: str, old: dict[str, object] | None = None, since: str = "0.6.0", until: str = "0.8.0"
) -> object:
    """A renamed option whose old names are no longer read: ``value`` (the option ``new``), unless an old name of it
    in ``old`` ({old name: its value, None where unset}) is set, which stops the run with one line (renamed in
    version ``since``, read until ``until``) rather than quietly using ``value``. E.g. inference.yaml's ``weights``,
    whose old name is ``checkpoint``: a run given ``--checkpoint`` must not score with the shipped weights.

    Raises:
        StudyError: an old name is set.
    """
    from scripts.errors import StudyError

    for name, old_value in (old or {}).items():
        if not is_unset(old_value):  # `--checkpoint null` on a command line is the string "null"
            raise StudyError(
                f"--{name}: renamed '{new}' in version {since} (the old name was read until {until}); "
                f"give --{new} instead"
            )
    return value
