"""End to end: the real server on real models, through the official OpenAI SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.test_battery_support import Oracle, Solo

pytestmark = pytest.mark.e2e

GREEDY = {"temperature": 0.0, "max_tokens": 24}
HELLO = [{"role": "user", "content": "Name three colors."}]
FOX = [{"role": "user", "content": "Repeat exactly: The quick brown fox jumps over the lazy dog."}]


@pytest.fixture(params=["smol", "qwen"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def api(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_models_lists_the_served_model(url: str, api: openai.OpenAI) -> None:
    ids = [m.id for m in api.models.list().data]
    assert len(ids) == 1 and ids[0] in ("smollm2-135m", "qwen2.5-coder-0.5b")


def test_chat_non_stream(url: str, api: openai.OpenAI) -> None:
    r = api.chat.completions.create(model=_model(url), messages=HELLO, **GREEDY)
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage and r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 24


def test_stream_joins_to_the_non_streamed_reply(url: str, api: openai.OpenAI) -> None:
    """Streamed and non-streamed greedy replies are the solo reply, up to a near-tie (the two
    requests reuse KV from different cells, and llama.cpp rounds differently across them)."""
    c = api
    full = c.chat.completions.create(model=_model(url), messages=HELLO, **GREEDY)
    chunks = list(
        c.chat.completions.create(
            model=_model(url),
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    oracle = Oracle(_model(url))
    try:
        solo = oracle.solo(oracle.chat_tokens(HELLO[0]["content"]), int(GREEDY["max_tokens"]))
    finally:
        oracle.close()
    margins = [round(m, 2) for m in solo.margins]
    assert solo.matches(text), (solo.text, text, margins)
    assert solo.matches(full.choices[0].message.content or ""), (solo.text, full, margins)
    reasons = [
        ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason
    ]
    assert len(reasons) == 1 and reasons[0] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_raw_sse_framing_ends_with_done(url: str) -> None:
    body = {"messages": HELLO, "stream": True, **GREEDY}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        json.loads(e[6:])


def test_text_completion(url: str, api: openai.OpenAI) -> None:
    r = api.completions.create(model=_model(url), prompt="1, 2, 3, 4,", **GREEDY)
    assert r.choices[0].text and r.usage and r.usage.completion_tokens > 0


def test_stop_string_never_reaches_the_stream(url: str, api: openai.OpenAI) -> None:
    """A stop string across two tokens ends the reply just before it, streamed or not, and no
    part of it reaches the client. It is taken where the solo greedy reply has had no near-tie
    yet, so the server's replies reach it whatever KV they reuse (the same prompt asked twice
    can otherwise part ways at a near-tie: "1, 2, 3" against "1. 1\n2. 2")."""
    oracle = Oracle(_model(url))
    try:
        solo = oracle.solo(oracle.chat_tokens(FOX[0]["content"]), 24)
    finally:
        oracle.close()
    stop = _stop_across_tokens(solo)
    expected = solo.text[: solo.text.index(stop)]
    ask = {"messages": FOX, "temperature": 0, "max_tokens": 24, "stop": [stop]}
    full = api.chat.completions.create(model=_model(url), **ask)
    assert (full.choices[0].message.content, full.choices[0].finish_reason) == (expected, "stop")
    chunks = list(api.chat.completions.create(model=_model(url), stream=True, **ask))
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    reasons = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert (streamed, reasons) == (expected, ["stop"]), (stop, solo.text)


def _stop_across_tokens(solo: Solo) -> str:
    """Three characters across a token boundary in the second half of the solo reply's confident
    tokens (the last of one token, the first two of the next), where they first occur."""
    n = solo.confident_tokens()
    for i in range(n // 2, n - 1):
        cut = len(solo.prefixes[i])
        stop = solo.text[cut - 1 : cut + 2]
        if cut + 2 <= len(solo.prefixes[i + 1]) and solo.text.index(stop) == cut - 1:
            return stop
    raise AssertionError(f"no confident token boundary in {solo.text!r} ({solo.margins})")


def test_content_as_list_of_text_parts(url: str, api: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Name three colors."}]}]
    a = api.chat.completions.create(model=_model(url), messages=msgs, **GREEDY)
    b = api.chat.completions.create(model=_model(url), messages=HELLO, **GREEDY)
    # Same prompt either way (replies may differ: the second reuses the first's KV, and
    # llama.cpp's kernels round differently across batch shapes).
    assert a.usage and b.usage and a.usage.prompt_tokens == b.usage.prompt_tokens
    assert a.choices[0].message.content and b.choices[0].message.content


def test_max_completion_tokens_gives_length(url: str, api: openai.OpenAI) -> None:
    r = api.chat.completions.create(
        model=_model(url),
        messages=[{"role": "user", "content": "Write a long story."}],
        temperature=0,
        max_completion_tokens=3,
    )
    assert r.choices[0].finish_reason == "length" and r.usage and r.usage.completion_tokens == 3


def test_a_turn_after_a_pause_finds_the_template_before_it_cached(
    url: str, api: openai.OpenAI
) -> None:
    """While the server is idle after a reply, it prefills what the chat template writes
    before the next user message (engine/opener.py), and the next turn reuses it."""
    conv = [{"role": "user", "content": "Name a color."}]
    first = api.chat.completions.create(model=_model(url), messages=conv, **GREEDY)
    conv += [
        {"role": "assistant", "content": first.choices[0].message.content or ""},
        {"role": "user", "content": "And another one?"},
    ]
    time.sleep(0.5)  # a reader's pause: far longer than the opener's few tokens take
    second = api.chat.completions.create(model=_model(url), messages=conv, **GREEDY)
    assert first.usage and second.usage and second.usage.prompt_tokens_details
    opener = 5  # ChatML's <|im_end|> \n <|im_start|> user \n, for both models
    resident = first.usage.prompt_tokens + first.usage.completion_tokens + opener
    assert second.usage.prompt_tokens_details.cached_tokens == resident


def _model(url: str) -> str:
    return str(httpx.get(url + "/v1/models").json()["data"][0]["id"])
