"""`warmlm chat` / `warmlm classify` against a server: SSE parsing, errors, the API key."""

from __future__ import annotations

import argparse
import json

import httpx
import pytest

from warmlm.cli import build_parser
from warmlm.tasks.chat import Message
from warmlm.tasks.classify import ClassifyRequest
from warmlm.terminal import RemoteBackend, make_backend, run_chat

SSE = (
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":"lo \xe4\xbd\xa0"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


def server(seen: list[httpx.Request], status: int = 200) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if status != 200:
            return httpx.Response(status, json={"error": {"message": "bad key"}})
        if request.url.path == "/v1/classify":
            item = {"index": 0, "label": "positive", "scores": {"positive": 0.9, "negative": 0.1}}
            return httpx.Response(200, json={"object": "list", "data": [item]})
        return httpx.Response(200, content=SSE, headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(handle)


def test_stream_yields_content_deltas_and_sends_the_bearer_key() -> None:
    seen: list[httpx.Request] = []
    backend = RemoteBackend("http://x/", "sk-1", transport=server(seen))
    pieces = list(backend.stream([Message("user", "hi")], 0.0, 8))
    assert "".join(pieces) == "Hello 你"
    assert seen[0].headers["authorization"] == "Bearer sk-1"
    body = json.loads(seen[0].content)
    assert body["stream"] is True and body["messages"] == [{"role": "user", "content": "hi"}]


def test_errors_surface_as_runtime_errors_with_the_server_message() -> None:
    backend = RemoteBackend("http://x", None, transport=server([], status=401))
    with pytest.raises(RuntimeError, match="bad key"):
        list(backend.stream([Message("user", "hi")], 0.0, 8))
    with pytest.raises(RuntimeError, match="bad key"):
        backend.classify(ClassifyRequest.build("great"))


def test_classify_posts_inputs_and_labels() -> None:
    seen: list[httpx.Request] = []
    backend = RemoteBackend("http://x", None, transport=server(seen))
    body = backend.classify(ClassifyRequest.build(["great", "awful"]))
    sent = json.loads(seen[0].content)
    assert sent["input"] == ["great", "awful"] and set(sent["labels"]) == {"positive", "negative"}
    assert "authorization" not in seen[0].headers
    assert body["data"][0]["label"] == "positive"


@pytest.mark.parametrize("command", [["chat"], ["classify", "text"]])
def test_api_key_flag_wins_over_the_environment(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARMLM_API_KEY", "from-env")
    args = build_parser().parse_args([*command, "--url", "http://x", "--api-key", "flag"])
    backend = make_backend(args)
    assert isinstance(backend, RemoteBackend)
    assert backend.client.headers["authorization"] == "Bearer flag"
    args = build_parser().parse_args([*command, "--url", "http://x"])
    backend = make_backend(args)
    assert isinstance(backend, RemoteBackend)
    assert backend.client.headers["authorization"] == "Bearer from-env"


def test_chat_loop_keeps_the_history(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []
    backend = RemoteBackend("http://x", None, transport=server(seen))
    monkeypatch.setattr("warmlm.terminal.make_backend", lambda args: backend)
    lines = iter(["hi", "again", ""])
    monkeypatch.setattr("builtins.input", lambda prompt: next(lines))
    args = argparse.Namespace(system="sys", temperature=0.0, max_tokens=8, sentiment=False)
    assert run_chat(args) == 0
    second = json.loads(seen[1].content)["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == "Hello 你"
