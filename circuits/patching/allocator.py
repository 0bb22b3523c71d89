"""Keep freed activation memory in the process instead of handing it back to the kernel.

A batched patching forward allocates and frees the same large activations (tens of MB each) in
every block. glibc serves allocations above its mmap threshold (at most 32 MB) with fresh
``mmap`` calls, so every one of them page-faults and is zeroed by the kernel again; on a 2-core
CPU that costs the engine 10-20% of its time. Raising the mmap and trim thresholds lets freed
blocks be reused from the heap. Peak memory is unchanged (the same tensors are live at the
peak); the process just keeps its high-water mark instead of returning it between forwards.

This is a process-wide glibc setting (``mallopt``), applied once, by the callers that run many
patches (``discover``, the panel, the benchmarks), never as a side effect of building a
``Patcher``; it does nothing on other C libraries. Set ``P0_CIRCUITS_MALLOC_TUNING=0`` to skip it.

Under a memory budget (``discover --max-memory``) the kept heap is what breaks the bound: freed
blocks of one stage's batch shapes stay reserved while the next stage allocates others (on the
1B-shape model, a 7.5 GB budget peaked at 9.6 GB tuned and 7.2 GB untuned).
``bound_memory()`` puts glibc's defaults back and keeps the tuning off for the process.
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
GLIBC_DEFAULT_BYTES = 128 * 2**10  # both thresholds' defaults (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD)

_memory_bounded = False


def _mallopt():  # type: ignore[no-untyped-def]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process). Returns True when applied."""
    if _memory_bounded or os.environ.get("P0_CIRCUITS_MALLOC_TUNING", "1") == "0":
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )


def bound_memory() -> None:
    """Return freed memory to the kernel for the rest of the process (glibc's default
    thresholds, undoing ``keep_freed_memory`` if it ran): the stacked-batch size chosen for a
    memory budget then bounds the peak."""
    global _memory_bounded
    _memory_bounded = True
    if keep_freed_memory.cache_info().currsize and keep_freed_memory():
        mallopt = _mallopt()
        if mallopt is not None:
            mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT_BYTES)
            mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT_BYTES)
