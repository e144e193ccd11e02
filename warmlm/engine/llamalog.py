"""llama.cpp's log: routed into Python logging, except while a model loads.

llama.cpp reports about 1,800 lines while it loads a model and creates a context, at every
level. A Python callback needs the GIL for each line, and when the load runs on a thread
while another imports modules (warmlm/preload.py), every line waits for the GIL (up to the
5 ms switch interval): the load took twice as long. So loading runs with a C callback that
ignores its arguments — libc's `abs`: in the C calling convention of the platforms we run on,
a callee ignores extra register arguments, and the caller of a `void` callback ignores the
return register — and a load that fails is repeated outside `silenced` (engine/runner.py) so
that llama.cpp's reason reaches the log.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import llama_cpp

log = logging.getLogger("warmlm.llama")

_LEVELS = {3: logging.WARNING, 4: logging.ERROR}  # ggml: 1 debug, 2 info, 5 continuation


@llama_cpp.llama_log_callback  # type: ignore[misc]
def _to_python(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    log.log(_LEVELS.get(level, logging.DEBUG), "%s", text.decode("utf-8", "replace").rstrip())


_SILENT = ctypes.cast(ctypes.CDLL(None).abs, llama_cpp.llama_log_callback)


def route_to_python() -> None:
    llama_cpp.llama_log_set(_to_python, ctypes.c_void_p(0))


@contextmanager
def silenced() -> Iterator[None]:
    """llama.cpp logs nothing inside; into Python logging again after."""
    llama_cpp.llama_log_set(_SILENT, ctypes.c_void_p(0))
    try:
        yield
    finally:
        route_to_python()
