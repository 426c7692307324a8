"""The made data of the tables: one healthy set, and per lesion family a test set and a labelled validation set."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench.jobs import BenchmarkError
from benchmarks.bench.settings import DATA_NOTE, FAMILIES, GRIDS, Settings
from scripts.files import atomic_write_bytes
from scripts.synthetic import make_dataset


@dataclass
class Data:
    """Datalists of the made data: ``healthy`` ("training"/"validation"); per family a ``test`` set and a labelled
    ``val`` set (each a "testing" list)."""

    healthy: Path
    test: dict[str, Path]
    val: dict[str, Path]


def make_data(work_dir: Path, s: Settings, log: Callable[[str], None] = print) -> Data:
    """Make (or find, when already made) the healthy, test and labelled validation sets in ``work_dir/data``, all
    with :func:`scripts.synthetic.make_dataset`.

    Seeds: healthy and test studies from ``seed``, the labelled validation studies from ``seed + 1`` (other
    studies). A work folder made with another grid or seed is refused (the studies would be mixed).
    """
    shape, spacing = GRIDS[s.grid]
    root = work_dir / "data"
    stamp = {"grid": s.grid, "shape": shape, "spacing": spacing, "seed": s.seed}
    stamp_file = root / "made_data.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) != json.loads(json.dumps(stamp)):
        raise BenchmarkError(
            f"{root} holds made data of other settings ({stamp_file.read_text().strip()}); use another --work_dir"
        )
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes((json.dumps(stamp) + "\n").encode(), stamp_file)
    start = time.perf_counter()
    grid = {"shape": shape, "spacing": spacing}
    data = Data(
        healthy=make_dataset(root / "healthy", s.n_train + s.n_val, 0, seed=s.seed, n_validation=s.n_val, **grid),
        test={f: make_dataset(root / f"{f}_test", 0, s.n_test, lesion=f, seed=s.seed, **grid) for f in FAMILIES},
        val={
            f: make_dataset(root / f"{f}_val", 0, s.n_val_labelled, lesion=f, seed=s.seed + 1, **grid) for f in FAMILIES
        },
    )
    log(
        f"{DATA_NOTE}: {s.n_train} healthy training + {s.n_val} healthy validation studies; per family "
        f"({', '.join(FAMILIES)}) {s.n_test} test + {s.n_val_labelled} labelled validation studies; grid {s.grid} "
        f"{shape} at {spacing[0]} mm; in {root} ({time.perf_counter() - start:.0f} s)"
    )
    return data
