"""What ``benchmarks/table1.py``, ``benchmarks/table2.py`` and ``benchmarks/faithful.py`` share: the paper's tables on
MADE (synthetic) data, every method trained and scored through the bundle's own workflows.

* :mod:`.settings`: :class:`~.settings.Settings` (data, budget, scoring options) and their command-line options;
* :mod:`.data`: the made healthy, test and labelled validation sets;
* :mod:`.jobs`: bundle commands: building them (the one place the ``--config_file`` list is made), running them,
  caching them in the work folder, running several side by side;
* :mod:`.methods`: the method specifications and their steps: train, evaluate, calibrate (AutoDDPM), tune (FLAIR);
* :mod:`.report`: the Markdown tables and figures;
* :mod:`.main`: the command line of a table script.

The package puts ``bundle`` on ``sys.path`` so that ``scripts`` imports as MONAI's bundle runner imports it.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository root: every bundle command runs from here."""

if str(REPO / "bundle") not in sys.path:
    sys.path.insert(0, str(REPO / "bundle"))
