"""UTF-8 over SSE on Qwen (byte-level BPE: Chinese and emoji characters span tokens): every
event is valid UTF-8 JSON, and the joined stream equals the non-streamed reply, also when
`max_tokens` cuts a character in half (the unfinished character is dropped, never mangled)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import QWEN, installed
from tests.test_battery_support import sse_payloads, stream_text

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.qwen,
    pytest.mark.skipif(not installed(QWEN), reason="Qwen is not installed"),
]
CHINESE = "用中文写两句关于春天的诗，不要解释。"
EMOJI = "Reply with ten different food emoji and nothing else."
MIXED = "用中文和 emoji 介绍一下熊猫 🐼，一句话。"


def replies(url: str, prompt: str, max_tokens: int) -> tuple[str, str, list[bytes]]:
    """The plain and the streamed greedy reply, computed the same way: a first request leaves
    the prompt in the prefix cache, so both reuse it and recompute only its last token. (A
    cold prompt is prefilled in one batch, through other attention kernels than a lone token,
    and greedy replies may then part at a near-tie.)"""
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    httpx.post(url + "/v1/chat/completions", json={**body, "max_tokens": 1}, timeout=120)
    plain = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    text = plain.json()["choices"][0]["message"]["content"]
    stream_body = {**body, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=stream_body, timeout=120) as r:
        raw = r.read()
    payloads = sse_payloads(raw)
    for p in payloads[:-1]:
        json.loads(p.decode("utf-8", errors="strict"))  # each event on its own: valid UTF-8
    assert payloads[-1] == b"[DONE]"
    return str(text), stream_text(payloads)[0], payloads


@pytest.mark.parametrize("prompt", [CHINESE, EMOJI, MIXED], ids=["chinese", "emoji", "mixed"])
def test_streams_are_valid_utf8_and_equal_the_plain_reply(qwen_url: str, prompt: str) -> None:
    text, streamed, _ = replies(qwen_url, prompt, 48)
    assert streamed == text and "\ufffd" not in text
    assert any(ord(ch) > 0x2E80 for ch in text), text  # the model did answer in CJK or emoji


def test_max_tokens_cutting_a_character_drops_it_in_both(qwen_url: str) -> None:
    texts = [""]
    for n in range(1, 9):
        text, streamed, payloads = replies(qwen_url, EMOJI, n)
        assert streamed == text and "\ufffd" not in text, n
        assert text.startswith(texts[-1]) and len(stream_text(payloads)[1]) == 1
        texts.append(text)
    # a token that adds no character ended inside one: max_tokens cut that character
    cuts = [n for n in range(2, len(texts)) if texts[n] == texts[n - 1]]
    assert cuts, f"no max_tokens value cut an emoji, so this proved nothing: {texts}"
