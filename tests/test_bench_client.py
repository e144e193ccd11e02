"""The bench's streaming client against fake OpenAI-compatible servers (no model needed)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from warmlm.bench.client import ChatClient, api_root
from warmlm.bench.serverproc import free_port
from warmlm.bench.sse import SSEParser
from warmlm.bench.timeline import group_stats

FIRST_DELAY = 0.15
GAP = 0.05
CHUNKS = 5


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


async def _paced(words: int) -> AsyncIterator[bytes]:
    yield chunk({"role": "assistant", "content": ""})
    await asyncio.sleep(FIRST_DELAY)
    for i in range(words):
        if i:
            await asyncio.sleep(GAP)
        yield chunk({"content": f"w{i} "})
    yield chunk({}, finish="length")
    usage = {"prompt_tokens": 12, "completion_tokens": words, "total_tokens": 12 + words}
    yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
    yield b"data: [DONE]\n\n"


async def completions(request: Request) -> Response:
    body = await request.json()
    assert body["stream"] is True and body["temperature"] == 0.0
    if body["messages"][-1]["content"] == "fail":
        return JSONResponse({"error": {"message": "busy"}}, status_code=503)
    return StreamingResponse(_paced(body["max_tokens"]), media_type="text/event-stream")


async def models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models),
        ]
    )
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="error", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(5)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.mark.asyncio
async def test_stream_timing_over_real_http(fake_url: str) -> None:
    async with ChatClient(fake_url) as client:
        assert await client.discover_model() == "fake-model"
        assert client.body(user("x"), 3, 0.0)["model"] == "fake-model"
        r = await client.stream_chat(user("hello"), CHUNKS)
    assert r.error is None
    assert r.text == "".join(f"w{i} " for i in range(CHUNKS))
    assert r.completion_tokens == CHUNKS and r.prompt_tokens == 12
    assert r.finish_reason == "length"
    assert r.ttft is not None and FIRST_DELAY * 0.9 <= r.ttft < FIRST_DELAY + 2.0
    assert len(r.gaps) == CHUNKS - 1
    assert all(GAP * 0.8 <= g < GAP + 1.0 for g in r.gaps)  # generous: the CPU may be busy
    assert r.decode_tps is not None and 1 < r.decode_tps <= 1 / (GAP * 0.8)
    assert r.e2e >= r.ttft


@pytest.mark.asyncio
async def test_concurrent_streams_overlap(fake_url: str) -> None:
    async with ChatClient(fake_url) as client:
        replies = await asyncio.gather(*(client.stream_chat(user(f"q{i}"), 4) for i in range(3)))
    stats = group_stats(list(replies))
    assert stats["errors"] == [] and stats["completion_tokens"] == 12
    assert stats["waited_for_other"] == 0
    assert stats["decode_window"] == "all-decoding"
    assert stats["aggregate_tps"] is not None and stats["decode_aggregate_tps"] is not None


@pytest.mark.asyncio
async def test_http_error_is_reported(fake_url: str) -> None:
    async with ChatClient(fake_url) as client:
        r = await client.stream_chat(user("fail"), 4)
    assert r.error is not None and r.error.startswith("HTTP 503") and "busy" in r.error
    assert r.ttft is None and r.completion_tokens == 0


@pytest.mark.asyncio
async def test_connection_error_is_reported() -> None:
    async with ChatClient(f"http://127.0.0.1:{free_port()}", timeout=2.0) as client:
        r = await client.stream_chat(user("x"), 4)
        assert await client.discover_model() is None
    assert r.error is not None and "ConnectError" in r.error


def mock_client(raw: bytes) -> ChatClient:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/chat/completions"
        assert request.headers["authorization"] == "Bearer k"
        return httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    return ChatClient("http://fake/", api_key="k", transport=httpx.MockTransport(handler))


@pytest.mark.asyncio
async def test_framing_without_usage_counts_chunks() -> None:
    raw = (
        b": keep-alive comment\r\n\r\n"
        b'data: {"choices":[{"delta":{"role":"assistant"}}]}\r\n\r\n'
        b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
        b'event: message\ndata: {"choices":[{"delta":{"content":""}}]}\n\n'
        b'data: {"choices":[{"text":"b","finish_reason":"stop"}]}\n\n'
        b"data: [DONE]"
    )
    async with mock_client(raw) as client:
        r = await client.stream_chat(user("x"), 8)
    assert r.error is None and r.text == "ab" and r.completion_tokens == 2
    assert r.finish_reason == "stop" and r.prompt_tokens is None


@pytest.mark.asyncio
async def test_error_event_and_bad_json() -> None:
    raw = (
        b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
        b'data: {"error":{"message":"generation failed"}}\n\n'
    )
    async with mock_client(raw) as client:
        r = await client.stream_chat(user("x"), 8)
    assert r.error is not None and "generation failed" in r.error and r.text == "a"
    async with mock_client(b"data: {not json\n\n") as client:
        r = await client.stream_chat(user("x"), 8)
    assert r.error is not None and "malformed" in r.error


def test_sse_parser_multiline_and_fields() -> None:
    p = SSEParser()
    assert p.feed("event: update") is None
    assert p.feed("data: line one") is None
    assert p.feed("data:line two") is None
    assert p.feed("id: 7") is None
    event = p.feed("")
    assert event is not None and event.event == "update" and event.data == "line one\nline two"
    assert p.feed("") is None  # a blank line with no data dispatches nothing
    p.feed("data: [DONE]")
    last = p.close()
    assert last is not None and last.done and last.event == "message"


def test_api_root() -> None:
    assert api_root("http://h:1/v1/") == "http://h:1"
    assert api_root("http://h:1") == "http://h:1"
