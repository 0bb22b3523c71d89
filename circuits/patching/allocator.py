"""Keep freed activation memory in the process instead of handing it back to the kernel.

A batched patching forward allocates and frees the same large activations (tens of MB each) in
every block. glibc serves allocations above its mmap threshold (at most 32 MB) with fresh
``mmap`` calls, so every one of them page-faults and is zeroed by the kernel again; on a 2-core
CPU that costs the engine 10-20% of its time. Raising the mmap and trim thresholds lets freed
blocks be reused from the heap. Peak memory is unchanged (the same tensors are live at the
peak); the process just keeps its high-water mark instead of returning it between forwards.

This is a process-wide glibc setting (``mallopt``), applied once, the first time a ``Patcher``
is built; it does nothing on other C libraries. Set ``P0_CIRCUITS_MALLOC_TUNING=0`` to skip it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 512 * 2**20
TRIM_THRESHOLD_BYTES = 1024 * 2**20


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process). Returns True when applied."""
    if os.environ.get("P0_CIRCUITS_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
