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


def _glibc(name: str, argtypes: list, restype):
    """glibc's function ``name``, typed; None where the tuning does not apply (opted out, not
    Linux, or not glibc, e.g. musl: the allocator is then left alone)."""
    if os.environ.get("GTN_NAS_MALLOC") == "default" or not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = argtypes, restype
    return fn


def reuse_freed_memory() -> bool:
    """Tunes glibc's malloc as above; call before JAX starts its threads. True if it applied."""
    mallopt = _glibc("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)
    if mallopt is None:
        return False
    # Trim threshold -1: glibc reads it as a size_t, SIZE_MAX, so the heap is never trimmed. The
    # largest int (2 GiB) was not enough: without remat, two freed 1.5 GB temporaries coalesce
    # past it, go back to the kernel and are re-faulted (a 5 s meta-step instead of 1.9 s).
    done = [mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, -1)]
    return all(done)


def release_freed_memory() -> bool:
    """Hands the heap's free pages back to the kernel once (glibc's ``malloc_trim``): after a
    compilation, whose transient ~0.5-0.7 GB would otherwise stay resident for the whole run
    (``reuse_freed_memory`` turns automatic trimming off). True if it ran."""
    trim = _glibc("malloc_trim", [ctypes.c_size_t], ctypes.c_int)
    if trim is None:
        return False
    trim(0)
    return True


def one_call_at_a_time() -> None:
    """Makes each compiled call on CPU return only when it has finished (JAX's
    ``jax_cpu_enable_async_dispatch`` off; no effect on accelerators). Call it before JAX's CPU
    client exists: it is read when the client is made. Why: with a call dispatched while the
    last one still runs, or started the moment its outputs are ready, two calls' temporaries
    are alive at once: the heap grew by a second 1.5 GB for a meta-step without remat
    (benchmarks/RESULTS.md, Speed). A meta-step takes seconds and needs the last one's state,
    so nothing is lost by waiting."""
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)
