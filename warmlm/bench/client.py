"""A streaming client of any OpenAI-compatible server that times every content token it receives."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from warmlm.bench.sse import SSEEvent, SSEParser
from warmlm.bench.stats import rate

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class StreamResult:
    """One streamed reply; times are `time.perf_counter()` seconds, comparable across requests."""

    sent_at: float
    finished_at: float
    token_times: tuple[float, ...]
    completion_tokens: int
    prompt_tokens: int | None = None
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None

    @property
    def first_token_at(self) -> float | None:
        return self.token_times[0] if self.token_times else None

    @property
    def ttft(self) -> float | None:
        """Seconds from sending the request to the first non-empty content chunk."""
        first = self.first_token_at
        return None if first is None else first - self.sent_at

    @property
    def e2e(self) -> float:
        return self.finished_at - self.sent_at

    @property
    def gaps(self) -> list[float]:
        """Inter-token latencies: the gaps between consecutive content chunks."""
        t = self.token_times
        return [b - a for a, b in zip(t, t[1:], strict=False)]

    @property
    def decode_tps(self) -> float | None:
        """Completion tokens after the first ÷ time from the first to the last content chunk."""
        if len(self.token_times) < 2:
            return None
        return rate(self.completion_tokens - 1, self.token_times[-1] - self.token_times[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "ttft_s": self.ttft,
            "e2e_s": self.e2e,
            "decode_tps": self.decode_tps,
            "completion_tokens": self.completion_tokens,
            "content_chunks": len(self.token_times),
            "prompt_tokens": self.prompt_tokens,
            "finish_reason": self.finish_reason,
            "error": self.error,
        }


@dataclass
class _Recorder:
    sent_at: float
    token_times: list[float] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    usage_tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None

    def absorb(self, event: SSEEvent, now: float) -> None:
        try:
            payload = json.loads(event.data)
        except json.JSONDecodeError:
            self.error = f"malformed event data: {event.data[:200]!r}"
            return
        if not isinstance(payload, dict):
            return
        if payload.get("error"):
            self.error = json.dumps(payload["error"])[:500]
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self.usage_tokens = usage.get("completion_tokens", self.usage_tokens)
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
        for choice in payload.get("choices") or []:
            self._choice(choice, now)

    def _choice(self, choice: dict[str, Any], now: float) -> None:
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if text:
            self.token_times.append(now)
            self.parts.append(text)
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]

    def result(self, finished_at: float) -> StreamResult:
        count = self.usage_tokens if self.usage_tokens is not None else len(self.token_times)
        return StreamResult(
            self.sent_at,
            finished_at,
            tuple(self.token_times),
            count,
            self.prompt_tokens,
            "".join(self.parts),
            self.finish_reason,
            self.error,
        )


def api_root(base_url: str) -> str:
    """`http://h:p`, `http://h:p/` and `http://h:p/v1` all name the same server."""
    root = base_url.rstrip("/")
    return root.removesuffix("/v1")


class ChatClient:
    """Streams chat completions (greedy unless told otherwise) and records their timing."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        self._http = httpx.AsyncClient(
            base_url=api_root(base_url),
            headers=headers,
            timeout=timeout,
            limits=limits,
            transport=transport,
        )
        self.model: str | None = None

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.aclose()

    async def discover_model(self) -> str | None:
        """The first id of `/v1/models`, used as the `model` field of every request."""
        try:
            resp = await self._http.get("/v1/models")
            resp.raise_for_status()
            data = resp.json().get("data") or []
            self.model = str(data[0]["id"]) if data else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            self.model = None
        return self.model

    def body(self, messages: Messages, max_tokens: int, temperature: float) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.model:
            body["model"] = self.model
        return body

    async def stream_chat(
        self, messages: Messages, max_tokens: int, temperature: float = 0.0
    ) -> StreamResult:
        """Send one streamed request; transport and HTTP errors come back in `error`."""
        rec = _Recorder(sent_at=time.perf_counter())
        try:
            await self._stream(rec, self.body(messages, max_tokens, temperature))
        except httpx.HTTPError as exc:
            rec.error = f"{type(exc).__name__}: {exc}"
        return rec.result(time.perf_counter())

    async def _stream(self, rec: _Recorder, body: dict[str, Any]) -> None:
        async with self._http.stream("POST", "/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                detail = (await resp.aread()).decode("utf-8", "replace")[:500]
                rec.error = f"HTTP {resp.status_code}: {detail}"
                return
            parser = SSEParser()
            async for line in resp.aiter_lines():
                event = parser.feed(line)
                if event is not None and self._handle(rec, event):
                    return
            last = parser.close()
            if last is not None:
                self._handle(rec, last)

    @staticmethod
    def _handle(rec: _Recorder, event: SSEEvent) -> bool:
        """Record one event; True once the stream is over."""
        if event.done:
            return True
        rec.absorb(event, time.perf_counter())
        return False
