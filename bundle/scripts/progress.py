"""Progress bars inside long work: the slice-timestep chunks of one study, reverse steps, registration, the slice
cache. One ``tqdm`` bar, the library ignite's ``ProgressBar`` (the per-study bar of the workflows) draws with, shown
on the main process only (rank 0 under torchrun), and left off when ``ANDI_PROGRESS=0``."""

from __future__ import annotations

import os
from collections.abc import Iterable

from tqdm import tqdm


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a plain process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def progress(
    iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it", leave: bool = False
) -> tqdm:
    """A tqdm bar over ``iterable`` (or ``total`` steps, advanced with ``update``), on the main process only."""
    enabled = is_main_process() and os.environ.get("ANDI_PROGRESS", "1") != "0"
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=not enabled, mininterval=0.5)
