"""The bundle's own configs from Python, for the tests and the benchmarks (the bundle itself never needs them): the
one builder of the list of config files a workflow merges (``inference.yaml`` first, then the others merged over it,
as every ``monai.bundle run`` command of this project names them), and one component of the merged configs, as
``monai.bundle run`` would build it, for code that needs, say, the configured preprocessing without running a
workflow."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from monai.bundle import ConfigParser

from benchmarks import REPO

BUNDLE = REPO / "bundle"
"""The bundle folder (``bundle_root``)."""


def config_names(configs: str | Sequence[str] = ()) -> list[str]:
    """``inference.yaml`` and then ``configs`` (names under ``bundle/configs``, merged in order); naming
    ``inference.yaml`` among ``configs`` is allowed: it is not repeated. The one place that list is made."""
    names = [configs] if isinstance(configs, str) else list(configs)
    return ["inference.yaml", *(c for c in names if c != "inference.yaml")]


def config_files(configs: str | Sequence[str] = (), folder: str | Path = "bundle/configs") -> list[str]:
    """The paths of :func:`config_names` under ``folder``: by default relative to the repository root, where the
    bundle commands run (``--config_file`` takes this list's literal, ``str(config_files(...))``)."""
    return [f"{folder}/{c}" for c in config_names(configs)]


def config_parser(configs: str | Sequence[str] = (), **overrides: object) -> ConfigParser:
    """The parser of the merged configs (:func:`config_files`) with ``overrides``, for several components that share
    their references (e.g. ``pre`` and ``preprocessing``).

    ``bundle_root`` is the bundle folder; ``output_dir`` defaults to ``"outputs"`` (the preprocessing names it).
    """
    parser = ConfigParser()
    parser.read_config(ConfigParser.load_config_files(config_files(configs, BUNDLE / "configs")))
    parser.update({"bundle_root": str(BUNDLE), "output_dir": "outputs", **overrides})
    return parser


def parsed(key: str, configs: str | Sequence[str] = (), **overrides: object) -> object:
    """Component ``key`` of the merged configs (:func:`config_parser`)."""
    return config_parser(configs, **overrides).get_parsed_content(key)
