"""The processes a local Ray leaves behind: found as this process's descendants before Ray shuts
down, ended by pid afterwards.

Ray's node agents exit when they see their raylet gone; where PID 1 does not reap orphans (some
containers), a dead raylet stays a zombie that still "exists", and its agents live on. Only
processes this process started (its descendants, same pid *and* start time) are touched.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

Proc = tuple[int, int]  # pid, start time (clock ticks since boot): a pid is reused, the pair is not


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time, state) of a process, from /proc; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[19]), fields[0]


def descendants(root: int | None = None) -> list[Proc]:
    """Every live descendant of `root` (default: this process)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[Proc]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info is not None:
                children.setdefault(info[0], []).append((int(entry.name), info[1]))
    found: list[Proc] = []
    stack = [root]
    while stack:
        for proc in children.get(stack.pop(), []):
            found.append(proc)
            stack.append(proc[0])
    return found


def alive(proc: Proc) -> bool:
    info = _stat(proc[0])
    return info is not None and info[1] == proc[1] and info[2] != "Z"


def end(procs: list[Proc], grace: float = 5.0) -> list[Proc]:
    """Wait up to `grace` seconds for `procs` to exit, then SIGKILL the rest; returns those
    that had to be killed."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in procs):
        time.sleep(0.1)
    killed = []
    for proc in procs:
        if alive(proc):
            try:
                os.kill(proc[0], signal.SIGKILL)
                killed.append(proc)
            except OSError:
                pass
    return killed
