"""The app's readiness contract and error contract, on a scripted engine (no model)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeTextRunner
from warmlm.config import EngineConfig, ServerConfig
from warmlm.server.app import create_app
from warmlm.service import Service

CHAT = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 4}


class Gate:
    """Blocks a startup step until the test opens it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def wait(self) -> None:
        self.entered.set()
        assert self.opened.wait(10)


def factory(
    locate_gate: Gate | None = None, warm_gate: Gate | None = None, fail: str | None = None
) -> Callable[[ServerConfig], Service]:
    def locate(name: str) -> tuple[Path, str | None]:
        if locate_gate:
            locate_gate.wait()
        if fail:
            raise RuntimeError(fail)
        return Path("fake.gguf"), "Q4_K_M"

    def runner(config: EngineConfig) -> FakeTextRunner:
        r = FakeTextRunner(n_ctx=config.n_ctx)
        if warm_gate:
            real = r.decode
            r.decode = lambda toks: (warm_gate.wait(), real(toks))[1]  # type: ignore[method-assign]
        return r

    return lambda cfg: Service(cfg.model, locate, lambda p: EngineConfig(p, n_ctx=cfg.ctx), runner)


@pytest.fixture
def ready_client() -> Iterator[TestClient]:
    app = create_app(ServerConfig(model="fake", ctx=1024), service_factory=factory())
    with TestClient(app) as client:
        _wait_status(client, "ready")
        yield client


def _wait_status(client: TestClient, status: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get("/health").json()
        if body["status"] == status:
            return dict(body)
        time.sleep(0.01)
    raise AssertionError(f"never reached {status}")


def test_states_loading_warming_ready() -> None:
    loc, warm = Gate(), Gate()
    app = create_app(ServerConfig(model="fake"), service_factory=factory(loc, warm))
    with TestClient(app) as client:
        assert loc.entered.wait(5)
        loading = client.get("/health")
        assert loading.status_code == 200 and loading.json()["status"] == "loading"
        r = client.get("/ready")
        assert r.status_code == 503
        r = client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 503 and r.headers["Retry-After"]
        assert r.json()["error"]["code"] == "not_ready"
        loc.opened.set()
        assert warm.entered.wait(5)
        assert client.get("/health").json()["status"] == "warming"
        assert client.get("/ready").status_code == 503
        warm.opened.set()
        _wait_status(client, "ready")
        assert client.get("/ready").status_code == 200
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_failed_load_reports_failed_and_calls_on_fatal() -> None:
    fatal: list[str] = []
    app = create_app(
        ServerConfig(model="fake"),
        on_fatal=fatal.append,
        service_factory=factory(fail="no such model"),
    )
    with TestClient(app) as client:
        body = _wait_status(client, "failed")
        assert "no such model" in body["error"]
        assert client.get("/health").status_code == 503  # a supervisor restarts the process
        assert client.get("/ready").status_code == 503
    assert fatal and "no such model" in fatal[0]


def test_health_reports_engine_figures(ready_client: TestClient) -> None:
    body = ready_client.get("/health").json()
    assert body["running"] == 0 and body["waiting"] == 0 and body["parallel"] == 4
    assert body["model"]["quantization"] == "Q4_K_M" and body["rss_bytes"] > 0


def test_chat_and_completion_shapes(ready_client: TestClient) -> None:
    body = ready_client.post("/v1/chat/completions", json=CHAT).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "abcd"}
    assert body["usage"]["completion_tokens"] == 4
    cached = body["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 0 <= cached < body["usage"]["prompt_tokens"]
    body = ready_client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).json()
    assert body["choices"][0]["text"] == "ab" and body["object"] == "text_completion"


def test_stream_chunks_and_done(ready_client: TestClient) -> None:
    payload = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with ready_client.stream("POST", "/v1/chat/completions", json=payload) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert '"role": "assistant"' in lines[0]
    assert '"finish_reason": "length"' in lines[-3] and '"usage"' in lines[-2]


BAD = [
    ({"messages": []}, 400),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400),
    ({"messages": [{"role": "user", "content": 5}]}, 400),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, 400),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -5}, 400),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, 400),
    ({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}, 400),
    ({"messages": [{"role": "user", "content": "x"}], "stop": [""]}, 400),
    ({"messages": [{"role": "user", "content": "x"}], "bogus": 1}, 400),
    ({"messages": [{"role": "user", "content": "x"}], "model": "gpt-9"}, 404),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}, 400),
    ({"messages": [{"role": "system", "content": "only system"}]}, 400),
    ({"messages": None}, 400),
    ([1, 2, 3], 400),
]


@pytest.mark.parametrize(("body", "status"), BAD)
def test_bad_input_gets_the_openai_error_object(
    ready_client: TestClient, body: object, status: int
) -> None:
    r = ready_client.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]


def test_malformed_json_is_400(ready_client: TestClient) -> None:
    r = ready_client.post(
        "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_lone_surrogate_is_400(ready_client: TestClient) -> None:
    raw = b'{"messages": [{"role": "user", "content": "\\ud800"}]}'
    r = ready_client.post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400


def test_unknown_route_is_404_error_object(ready_client: TestClient) -> None:
    r = ready_client.get("/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
