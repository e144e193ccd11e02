"""SSE framing: chunk shapes, the error event a failed stream ends with, [DONE]."""

from __future__ import annotations

import json

from warmlm.engine.request import Usage
from warmlm.server.sse import DONE, ChunkMeta, sse, stream_error, usage_dict


def test_sse_frames_one_json_payload_keeping_unicode() -> None:
    frame = sse({"text": "你好 👋"})
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    assert json.loads(frame[6:]) == {"text": "你好 👋"}
    assert "你好".encode() in frame  # not \\u-escaped
    assert DONE == b"data: [DONE]\n\n"


def test_chat_chunks_carry_a_delta_and_text_chunks_carry_text() -> None:
    chat = ChunkMeta("chatcmpl-1", "m", chat=True, created=7)
    first = chat.chunk(chat.choice("", None, role=True))
    assert first["object"] == "chat.completion.chunk" and first["created"] == 7
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    last = chat.chunk(chat.choice(None, "stop"))
    assert last["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    text = ChunkMeta("cmpl-1", "m", chat=False)
    body = text.chunk(text.choice("hi", None))
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "hi"


def test_usage_chunk_has_no_choices_and_reports_cached_tokens() -> None:
    meta = ChunkMeta("chatcmpl-1", "m", chat=True)
    usage = Usage(prompt_tokens=10, completion_tokens=3, cached_tokens=8)
    body = meta.chunk(None, usage)
    assert body["choices"] == [] and body["usage"] == usage_dict(usage)
    assert body["usage"]["total_tokens"] == 13
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 8}


def test_stream_errors_use_the_codes_of_non_streamed_replies() -> None:
    failed = stream_error("RuntimeError: decode failed")["error"]
    assert failed["code"] == "engine_failed" and failed["type"] == "service_unavailable"
    assert "decode failed" in failed["message"]
    timeout = stream_error("queue_timeout")["error"]
    assert timeout["code"] == "queue_timeout"
