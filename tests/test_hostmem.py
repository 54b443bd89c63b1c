"""The malloc tuning of gtn_nas/io/hostmem.py: a freed large block is reused, not re-faulted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Allocates, touches and frees a 64 MB block (glibc would mmap it), then counts the page faults
# of doing the same again: ~16,000 (one per 4 KB page) unless the first block's pages are reused.
PROBE = """
import ctypes, resource, sys
from gtn_nas.io.hostmem import reuse_freed_memory
applied = reuse_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = int(sys.argv[1]) << 20 if len(sys.argv) > 1 else 64 << 20
def touch():
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    libc.free(p)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(mb: int = 64, **env) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(mb)], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, **env}, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_block_is_reused_without_page_faults():
    applied, faults = _probe()
    assert applied
    assert faults < 1000  # reused pages: no per-page faults

    applied, faults = _probe(GTN_NAS_MALLOC="default")  # the opt-out leaves glibc's defaults
    assert not applied
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[always]" not in thp.read_text():  # 2 MB pages would fault 32 times
        assert faults > 8000  # a fresh mmap: one fault per 4 KB page (16,384 pages)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_block_above_2_gib_is_kept_too():
    """No trimming at any size: a meta-step without remat frees ~1.5 GB of temporaries per call,
    two of which coalesced past the old 2 GiB threshold and were handed back to the kernel, then
    re-faulted (366,000 faults, a 5 s step in 20; benchmarks/RESULTS.md, Speed)."""
    applied, faults = _probe(2200)
    assert applied
    assert faults < 1000


RELEASE_PROBE = """
import ctypes
from gtn_nas.io.hostmem import release_freed_memory, reuse_freed_memory
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
reuse_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 256 << 20
p = libc.malloc(n)
pin = libc.malloc(64)  # keeps the block off the heap's top: freed, it is a hole, not the top
ctypes.memset(p, 1, n)
libc.free(p)
kept = rss_mb()
released = release_freed_memory()
print(released, kept - rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_memory_is_handed_back_once_on_request():
    """After a compile, meta-train returns the heap's free pages once (``release_freed_memory``),
    hole or top: a freed 256 MB block stays resident under ``reuse_freed_memory`` until then."""
    out = subprocess.run([sys.executable, "-c", RELEASE_PROBE], capture_output=True, text=True,
                         cwd=ROOT, env=dict(os.environ), check=True).stdout.split()
    assert out[0] == "True"
    assert int(out[1]) > 200  # MB given back
