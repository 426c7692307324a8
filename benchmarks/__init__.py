"""The benchmarks, run from the repository root as modules (``python -m benchmarks.scoring_speed``); not installed.

Importing the package puts ``bundle`` on ``sys.path`` (the one place that does), so that the bundle's code package
``scripts`` imports as MONAI's bundle runner imports it; :mod:`benchmarks.bench` holds what the benchmarks share.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
"""The repository root: every bundle command runs from here."""

if str(REPO / "bundle") not in sys.path:  # `scripts`, as MONAI's bundle runner imports it
    sys.path.insert(0, str(REPO / "bundle"))
