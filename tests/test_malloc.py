"""The fixed mmap threshold: freed multi-MB blocks (saved KV states) leave the process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from warmlm.engine.malloc import fix_mmap_threshold

# Runs in a fresh interpreter: one 4 MiB block freed (glibc would raise its threshold to 4
# MiB), then 60 blocks of 2 MiB of which every other one is freed, as the KV RAM tier does.
PROBE = """
import sys
from warmlm.engine.malloc import fix_mmap_threshold
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
big = b"x" * (4 << 20)
del big
blocks = [b"x" * (2 << 20) for _ in range(60)]
before = rss()
del blocks[::2]
print((before - rss()) >> 20)
"""


def released_mib(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")
def test_freed_states_leave_the_process_with_the_threshold_fixed() -> None:
    assert fix_mmap_threshold()  # this machine's C library is glibc
    assert released_mib("fixed") >= 55  # 30 blocks of 2 MiB went back to the system


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")
def test_without_it_the_heap_keeps_them() -> None:
    """The failure the fix is for: glibc's own threshold keeps freed holes resident."""
    assert released_mib("default") <= 10
