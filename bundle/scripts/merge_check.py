"""One line, not a traceback, when a workflow's config list misses a config that another merges over.

Every config but ``inference.yaml`` is merged over it (and ``*_train.yaml`` over ``train.yaml`` too); each says so in
its ``merges_over`` key and imports this module (``check_merge: "$import scripts.merge_check"``). MONAI evaluates
import statements before any reference, so when ``python -m monai.bundle run`` is given a list that lacks one of
those configs, the run stops here with ``error: <config>: merged over <name>: ...`` and exit status 1, instead of a
60-line traceback about an undefined ``@seed``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Sequence
from pathlib import Path

from monai.bundle import ConfigParser

MERGES_OVER = "merges_over"


def config_list(argv: Sequence[str]) -> list[str]:
    """The ``--config_file`` of a ``monai.bundle`` command line (or of its ``--args_file``), as a list of paths."""
    value = None
    for i, arg in enumerate(argv):
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        elif arg == "--args_file" and i + 1 < len(argv) and value is None:
            value = ConfigParser.load_config_file(argv[i + 1]).get("config_file")
    if value is None:
        return []
    if isinstance(value, str):
        value = ast.literal_eval(value) if value.lstrip().startswith("[") else value.split(",")
    return [str(v) for v in value]


def missing_base(files: Sequence[str]) -> tuple[str, str] | None:
    """``(config, name)`` for the first config of ``files`` whose ``merges_over`` names a config that is not before
    it in the list (compared by file name), else None."""
    names = [Path(f).name for f in files]
    for i, path in enumerate(files):
        if not Path(path).is_file():
            continue
        needed = ConfigParser.load_config_file(path).get(MERGES_OVER) or []
        for name in needed:
            if name not in names[:i]:
                return path, name
    return None


def check_command_line(argv: Sequence[str]) -> None:
    """Stop with one line and exit status 1 when a ``monai.bundle`` command line's config list misses a config."""
    if not argv or not str(argv[0]).replace("\\", "/").endswith("monai/bundle/__main__.py"):
        return
    found = missing_base(config_list(argv))
    if found is not None:
        path, name = found
        base = str(Path(path).parent / name)
        sys.stderr.write(f"error: {path}: merged over {name}: add {base} before it to --config_file\n")
        raise SystemExit(1)


check_command_line(sys.argv)
