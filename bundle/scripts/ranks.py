"""The processes of a torchrun job meeting before one of them writes what all of them made (e.g. ``scores.csv``).

Sharded inference (``run inference`` under torchrun) needs no process group while it scores: every process does its
own share of the studies. Only at the end must the ranks meet, so that rank 0 writes the table of every study once,
after the last study of every rank is on disk. :func:`meet` sets up a gloo group for that (on the CPU, whatever the
device the studies were scored on) when there is none, waits at a barrier and takes the group down again.
"""

from __future__ import annotations

import datetime
import os

import torch.distributed as dist

MEET_TIMEOUT = datetime.timedelta(hours=24)
"""How long a rank waits for the others: one rank may finish its share long before the slowest."""


def meet(world_size: int | str = 1, timeout: datetime.timedelta = MEET_TIMEOUT) -> None:
    """Return when every one of the ``world_size`` processes of the job has called this (at once with one process).

    Uses the job's process group when there is one; otherwise one is made from torchrun's environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) for the barrier and destroyed after it."""
    if int(world_size) <= 1:
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        return
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"world_size {world_size} but no torchrun environment ({', '.join(missing)} unset)")
    dist.init_process_group(backend="gloo", timeout=timeout)
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()
