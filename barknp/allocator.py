"""Keeping freed memory in the process, for the large temporaries of many-row forwards.

A prefill or a fine pass allocates and frees dozens of arrays of 1-17 MB per layer (the fused
projection's rows, the MLP's hidden rows, attention scores). glibc's malloc serves requests this
large with fresh ``mmap`` pages and hands freed memory back to the kernel, so every layer pays the
page faults and the kernel's zeroing of those pages again. Measured on the 2-core development
machine (benchmarks/NOTES.md, session 7), three process pairs without and with freed memory kept:
a coarse prefill of 887 positions 1297 / 1437 / 1349 -> 1214 / 1121 / 1283 ms, a fine pass within
the noise; peak RSS unchanged (1003 against 1005 MB), because the same sizes come back layer after
layer. The price: memory freed after a forward stays with the process (up to one forward's
temporaries) instead of going back to the OS.

:func:`keep_freed_memory` raises malloc's two thresholds through ``mallopt``, once per process.
It changes the allocator of the whole process, as the BLAS thread count does, so barknp calls it
where it needs it (:func:`barknp.threads.forward_workers`) rather than on import. Where the C
library is not glibc (musl, macOS, Windows) it does nothing and says so by returning False.
"""

from __future__ import annotations

import ctypes
import functools

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Requests below this come from malloc's heaps, which reuse freed memory: above the largest
# temporary of a forward (bark's MLP rows, 1 024 x 4 096 float32 = 17 MB). Older glibc caps the
# threshold at 32 MB (half its heap size), hence the fallback.
_MMAP_THRESHOLDS = (256 << 20, 32 << 20)
# Free memory at the top of a heap is returned to the OS only beyond this.
_TRIM_THRESHOLD = 1 << 30


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (once per process); True if it did."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError, TypeError):
        return False
    if not any(mallopt(_M_MMAP_THRESHOLD, value) for value in _MMAP_THRESHOLDS):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
