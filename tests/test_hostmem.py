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
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
n = 64 << 20
def touch():
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    libc.free(p)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(**env) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **env}, check=True).stdout.split()
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
