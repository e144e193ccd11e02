"""Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from warmlm.engine.engine import EventStream
from warmlm.engine.request import Usage
from warmlm.server.errors import error_body

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


@dataclass(frozen=True)
class ChunkMeta:
    """What every chunk of one response repeats: id, kind, model, creation time."""

    id: str
    model: str
    chat: bool
    created: int = 0

    def chunk(self, choice: dict[str, Any] | None, usage: Usage | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created or int(time.time()),
            "model": self.model,
            "choices": [choice] if choice is not None else [],
        }
        if usage is not None:
            body["usage"] = usage_dict(usage)
        return body

    def choice(self, text: str | None, finish_reason: str | None, role: bool = False) -> dict:
        if not self.chat:
            return {
                "index": 0,
                "text": text or "",
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def stream_error(error: str) -> dict[str, Any]:
    """The error event a stream ends with: the same code as the non-streamed reply."""
    if error == "queue_timeout":
        return error_body(504, "the request waited too long in the queue", code="queue_timeout")
    return error_body(503, f"generation failed: {error}", code="engine_failed")


async def event_stream(
    events: EventStream, meta: ChunkMeta, include_usage: bool
) -> AsyncIterator[bytes]:
    """Frame engine events as SSE; on an engine error, send an error event and stop."""
    try:
        if meta.chat:
            yield sse(meta.chunk(meta.choice("", None, role=True)))
        usage = Usage()
        async for ev in events:
            usage = ev.usage
            if ev.error is not None:
                yield sse(stream_error(ev.error))
                return
            if ev.text:
                yield sse(meta.chunk(meta.choice(ev.text, None)))
            if ev.finish_reason is not None:
                yield sse(meta.chunk(meta.choice(None if meta.chat else "", ev.finish_reason)))
        if include_usage:
            yield sse(meta.chunk(None, usage))
        yield DONE
    finally:
        events.close()
