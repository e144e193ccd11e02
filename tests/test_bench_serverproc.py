"""The bench's server subprocess handling, with a stand-in server instead of warmlm."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from warmlm.bench.serverproc import ServerFailed, ServerProcess, ServerSpec, read_status_kib

STAND_IN = """
import http.server, sys, time
start = time.monotonic()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = time.monotonic() - start > 0.2
        self.send_response(200 if ready else 503)
        self.end_headers()
    def log_message(self, *a):
        pass
time.sleep(0.1)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


@dataclass(frozen=True)
class StandIn(ServerSpec):
    script: str = STAND_IN

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-c", self.script, str(port)]


def spec(script: str = STAND_IN) -> StandIn:
    return StandIn(model="m", threads=1, parallel=1, ctx=256, script=script)


def test_warmlm_command_passes_flags_through() -> None:
    cmd = ServerSpec(model="qwen", threads=2, parallel=8, ctx=4096).command(8123)
    assert cmd[:4] == [sys.executable, "-m", "warmlm.cli", "serve"]
    flags = dict(zip(cmd[4::2], cmd[5::2], strict=True))
    assert flags["--model"] == "qwen" and flags["--port"] == "8123"
    assert flags["--threads"] == "2" and flags["--parallel"] == "8" and flags["--ctx"] == "4096"


def test_ready_time_rss_and_stop(tmp_path: Path) -> None:
    with ServerProcess(spec(), tmp_path / "s.log") as server:
        ready = asyncio.run(server.wait_ready(timeout=10))
        assert 0.2 <= ready < 5
        peak = server.peak_rss_bytes()
        assert peak is not None and peak > 1_000_000
        pid = server.pid
    assert not os.path.exists(f"/proc/{pid}") or read_status_kib(pid, "VmHWM") is None


def test_exit_before_ready_fails(tmp_path: Path) -> None:
    server = ServerProcess(spec("import sys; sys.exit(3)"), tmp_path / "s.log")
    with server, pytest.raises(ServerFailed, match="exited with code 3"):
        asyncio.run(server.wait_ready(timeout=10))


def test_read_status_of_this_process() -> None:
    hwm = read_status_kib(os.getpid(), "VmHWM")
    assert hwm is not None and hwm > 0
    assert read_status_kib(os.getpid(), "NoSuchKey") is None
