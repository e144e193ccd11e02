"""A `warmlm serve` subprocess: start it, time it to `/ready`, read its peak RSS, stop it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import httpx

READY_POLL_S = 0.02


class ServerFailed(RuntimeError):
    """The server exited or did not become ready in time."""


@dataclass(frozen=True)
class ServerSpec:
    """How to start warmlm: the flags `warmlm bench` passes through to `warmlm serve`."""

    ready_path: ClassVar[str] = "/ready"  # polled until 200 (peers name their own)

    model: str
    threads: int
    parallel: int
    ctx: int

    def command(self, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "warmlm.cli",
            "serve",
            "--model",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--threads",
            str(self.threads),
            "--parallel",
            str(self.parallel),
            "--ctx",
            str(self.ctx),
            "--log-level",
            "warning",
        ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_status_kib(pid: int, key: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmHWM = peak RSS, VmRSS = current RSS), in KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class ServerProcess:
    """One server subprocess; use as a context manager so it is always stopped."""

    def __init__(self, spec: ServerSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self._proc is not None, "the server was started"
        return self._proc.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.started_at = time.perf_counter()
            self._proc = subprocess.Popen(
                self.spec.command(self.port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    async def wait_ready(self, timeout: float) -> float:
        """Poll `/ready` (the spec's `ready_path`) every 20 ms; seconds from process start to its
        first 200."""
        deadline = self.started_at + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=1.0) as http:
            while time.perf_counter() < deadline:
                self._check_alive()
                try:
                    resp = await http.get(self.spec.ready_path)
                    if resp.status_code == 200:
                        return time.perf_counter() - self.started_at
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(READY_POLL_S)
        raise ServerFailed(f"not ready after {timeout:.0f}s; see {self.log_path}")

    def _check_alive(self) -> None:
        assert self._proc is not None, "the server was started"
        code = self._proc.poll()
        if code is not None:
            raise ServerFailed(f"the server exited with code {code}; see {self.log_path}")

    def peak_rss_bytes(self) -> int | None:
        kib = read_status_kib(self.pid, "VmHWM")
        return None if kib is None else kib * 1024

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGINT (graceful), then SIGTERM, then SIGKILL; the exit code."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            proc.send_signal(sig)
            try:
                return proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return proc.poll()
