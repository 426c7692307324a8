"""The bundle's own configs from Python: one component of the merged workflow configs, as ``monai.bundle run`` would
build it. For tests, benchmarks and notebooks that need, say, the configured preprocessing without running a
workflow."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from monai.bundle import ConfigParser

BUNDLE = Path(__file__).resolve().parents[1]


def config_parser(configs: Sequence[str] = (), **overrides: object) -> ConfigParser:
    """The parser of ``inference.yaml`` merged with ``configs`` (names under ``configs/``; ``inference.yaml`` among
    them is not repeated) and ``overrides``, for several components that share their references (e.g. ``pre`` and
    ``preprocessing``).

    ``bundle_root`` is this bundle; ``output_dir`` defaults to ``"outputs"`` (the preprocessing names it).
    """
    parser = ConfigParser()
    names = ("inference.yaml", *(c for c in configs if c != "inference.yaml"))
    parser.read_config(ConfigParser.load_config_files([str(BUNDLE / "configs" / c) for c in names]))
    parser.update({"bundle_root": str(BUNDLE), "output_dir": "outputs", **overrides})
    return parser


def parsed(key: str, configs: Sequence[str] = (), **overrides: object) -> object:
    """Component ``key`` of the merged configs (:func:`config_parser`)."""
    return config_parser(configs, **overrides).get_parsed_content(key)
