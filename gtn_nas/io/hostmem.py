"""Keeps freed host memory in the process heap, so XLA's per-call buffers are not re-faulted.

On a CPU, each call of a compiled XLA program allocates its temporaries afresh (the `cpu`
preset's meta-step: one 212 MB block). glibc serves a block that large with a new ``mmap`` from
whichever thread arena asks and unmaps it on free, so every call touches ~52,000 fresh 4 KB
pages: a page fault and a kernel zeroing for each, 10-20% of the meta-step's time
(benchmarks/RESULTS.md, Speed). One arena, no mmap'd blocks and no trimming make the second
call reuse the first one's pages. Costs: the resident set stays at its peak, and XLA's threads
share one malloc lock (cheap here: they allocate little). ``GTN_NAS_MALLOC=default`` opts out.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters


def reuse_freed_memory() -> bool:
    """Tunes glibc's malloc as above; call before JAX starts its threads. True if it applied."""
    if os.environ.get("GTN_NAS_MALLOC") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = [mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)]
    return all(done)
