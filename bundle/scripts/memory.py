"""Give memory back between studies, so that a batch's peak is one study's peak (flat in the number of studies).

After a study, its data stay reachable until the next one replaces them (the engine's ``state.batch`` and
``state.output``: the study's image, maps and inverted maps); and glibc keeps the freed heap pages of its
volume-sized arrays (tens of MB each, below its dynamic mmap threshold) for reuse, so the process's resident size
ratchets up with fragmentation. :func:`release` drops the first, collects cycles, and hands the free pages back to
the system (``malloc_trim``; nothing to do elsewhere than glibc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache


@cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release(engine=None) -> None:
    """Forget ``engine``'s last batch and output (a MONAI/ignite engine, or None), collect garbage and return free
    heap memory to the system."""
    if engine is not None and getattr(engine, "state", None) is not None:
        engine.state.batch = None
        engine.state.output = None
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
