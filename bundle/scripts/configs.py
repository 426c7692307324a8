"""The bundle's own configs from Python: one component of the merged workflow configs, as ``monai.bundle run`` would
build it. For tests, benchmarks and notebooks that need, say, the configured preprocessing without running a
workflow."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from monai.bundle import ConfigParser

BUNDLE = Path(__file__).resolve().parents[1]


def parsed(key: str, configs: Sequence[str] = (), **overrides: object) -> object:
    """Component ``key`` of ``common.yaml`` merged with ``configs`` (names under ``configs/``) and ``overrides``.

    ``bundle_root`` is this bundle; ``output_dir`` defaults to ``"outputs"`` (the preprocessing names it).
    """
    parser = ConfigParser()
    parser.read_config(ConfigParser.load_config_files([str(BUNDLE / "configs" / c) for c in ("common.yaml", *configs)]))
    parser.update({"bundle_root": str(BUNDLE), "output_dir": "outputs", **overrides})
    return parser.get_parsed_content(key)
