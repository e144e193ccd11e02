"""glibc's allocator, told not to keep freed KV states: a fixed mmap threshold.

Saved KV states (`KVStore`, a few MB each) are allocated and freed all the time. glibc serves
a block above its mmap threshold (128 KiB at first) with a fresh mapping, but each time such a
block is freed it raises the threshold to that block's size (up to 32 MiB), so later states
come from the heap, whose freed space stays resident and fragments: under a 30-minute soak the
server's RSS grew 8 MB/min with the RAM tier already full. Fixing the threshold (which also
turns off that adjustment) returns every freed state to the system: the same soak stays flat
(`warmlm bench soak`, docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("warmlm.engine")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
THRESHOLD = 128 << 10  # glibc's initial default, kept fixed


def fix_mmap_threshold(threshold: int = THRESHOLD) -> bool:
    """True when the C library is glibc and took the setting; elsewhere nothing changes."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    if not ok:
        log.warning("mallopt(M_MMAP_THRESHOLD) failed; freed KV states may stay resident")
    return ok
