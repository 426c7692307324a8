"""Give memory back between studies, so that a batch's peak is one study's peak (flat in the number of studies).

After a study, its data stay reachable until the next one replaces them (the engine's ``state.batch`` and
``state.output``: the study's image, maps and inverted maps); and glibc keeps the freed heap pages of its
volume-sized arrays (tens of MB each, below its dynamic mmap threshold) for reuse, so the process's resident size
ratchets up with fragmentation. :func:`release` drops the first, collects cycles, and hands the free pages back to
the system (``malloc_trim``; nothing to do elsewhere than glibc). :func:`set_mmap_threshold` (inference's
``mmap_threshold_mb``) lowers the peak within a study: buffers of a megabyte or more (the network's feature maps, a
channel of a volume) get pages of their own that go back to the system when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache

from scripts import as_optional_float

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter (``malloc.h``): the size from which an allocation is its own ``mmap``."""


@cache
def _libc_function(name: str):
    """glibc's function ``name`` (``malloc_trim``, ``mallopt``), or None (another C library)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return getattr(libc, name)
    except (OSError, AttributeError):
        return None


def set_mmap_threshold(megabytes: float | str | None) -> bool:
    """Serve every allocation of ``megabytes`` or more with its own ``mmap`` (glibc's ``mallopt(M_MMAP_THRESHOLD)``),
    so that a freed buffer of that size goes back to the system at once. By default glibc starts at 128 kB and raises
    the threshold to the size of each mmapped block freed, up to 32 MB: after the first study most feature maps and
    volume channels then come from the heap, whose freed pages stay with the process and add to the next step's
    peak. A fixed threshold also stops that raising. None or 0 leaves glibc's rule. Returns whether it was set (False
    with another C library).

    Made data, one BraTS-sized study, ``--t_stride 200``: the whole ``run inference`` process peaked at about 60 MB
    less with 1 MB (``bundle/docs/benchmarks.md``).
    """
    megabytes = as_optional_float(megabytes)  # `--mmap_threshold_mb null` arrives as the string "null"
    if not megabytes:
        return False
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, int(megabytes * 2**20)))


def release(engine=None) -> None:
    """Forget ``engine``'s last batch and output (a MONAI/ignite engine, or None), collect garbage and return free
    heap memory to the system."""
    if engine is not None and getattr(engine, "state", None) is not None:
        engine.state.batch = None
        engine.state.output = None
    gc.collect()
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)
