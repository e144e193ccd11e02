"""Helpers of the battery (test_battery_*, test_security, test_e2e_faults): the scripted-engine
app behind a real loopback HTTP server, raw requests, SSE events, and greedy agreement up to the
first divergence after a near-tie; plus the tests of those helpers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx
import numpy as np
import uvicorn

from tests.conftest import free_port, model_path
from tests.test_app import factory
from warmlm.config import ServerConfig
from warmlm.server.app import create_app

CHAT = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 4}


class LiveApp:
    """`create_app` on the scripted engine, served by uvicorn on 127.0.0.1 in a thread, with the
    HTTP settings of `run_server` (h11 and its head limit)."""

    def __init__(self, **config: object) -> None:
        self.port = free_port()
        self.config = ServerConfig(model="fake", ctx=1024, port=self.port, **config)  # type: ignore[arg-type]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(self.config, service_factory=factory())
        uv = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            log_level="warning",
            ws="none",
            http="h11",
            h11_max_incomplete_event_size=self.config.max_header_bytes,
        )
        self.server = uvicorn.Server(uv)
        self.thread = threading.Thread(target=self.server.run, name="live-app", daemon=True)

    def __enter__(self) -> LiveApp:
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise TimeoutError("the live app did not become ready")

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def raw_http(port: int, request: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no URL normalisation); status, headers, body of the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


def get(path: str, host: str = "127.0.0.1", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()


def sse_payloads(raw: bytes) -> list[bytes]:
    """The `data:` payloads of an SSE body, as bytes (so their UTF-8 can be checked)."""
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    assert all(e.startswith(b"data: ") for e in events), events
    return [e[len(b"data: ") :] for e in events]


def stream_text(payloads: list[bytes], chat: bool = True) -> tuple[str, list[str]]:
    """Joined content and every non-null finish_reason of decoded SSE chunks."""
    parts: list[str] = []
    reasons: list[str] = []
    for p in payloads:
        if p == b"[DONE]":
            continue
        body = json.loads(p.decode("utf-8"))
        for choice in body.get("choices", []):
            text = choice["delta"].get("content") if chat else choice.get("text")
            parts.append(text or "")
            if choice.get("finish_reason"):
                reasons.append(choice["finish_reason"])
    return "".join(parts), reasons


def health(url: str) -> dict:
    return dict(httpx.get(url + "/health", timeout=5).json())


def wait_for(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> float:
    """Seconds until `pred()` holds; fails after `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout}s")


class Hold(threading.Thread):
    """A streamed request read as it arrives, kept open until `drop` is set (then the connection
    is closed) or the server ends it; `first` is set once bytes (or an error) came back."""

    def __init__(
        self, url: str, body: dict, path: str = "/v1/completions", timeout: float = 120
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.body, self.path = url, {**body, "stream": True}, path
        self.timeout = timeout
        self.drop = threading.Event()
        self.first = threading.Event()
        self.raw = b""
        self.status = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            with (
                httpx.Client(timeout=self.timeout) as c,
                c.stream("POST", self.url + self.path, json=self.body) as r,
            ):
                self.status = r.status_code
                for chunk in r.iter_bytes():
                    self.raw += chunk
                    self.first.set()
                    if self.drop.is_set():
                        return
        except httpx.HTTPError as exc:
            self.error = type(exc).__name__
        finally:
            self.first.set()


NEAR_TIE = 1.0


@dataclass(frozen=True)
class Solo:
    """A greedy reply computed alone, in-process: its text, the text after each token, and the
    top-2 logit margin of the step that chose each token."""

    text: str
    prefixes: list[str]
    margins: list[float]

    def matches(self, other: str) -> bool:
        """Equal, or diverging only at or after a step whose top-2 logits were within NEAR_TIE
        (batched kernels round differently across batch shapes)."""
        if other == self.text:
            return True
        d = next(
            (i for i, (a, b) in enumerate(zip(self.text, other, strict=False)) if a != b),
            min(len(self.text), len(other)),
        )
        j = next((k for k, p in enumerate(self.prefixes) if len(p) > d), len(self.prefixes) - 1)
        return min(self.margins[: j + 1], default=NEAR_TIE) < NEAR_TIE

    def confident_tokens(self) -> int:
        """How many leading tokens were chosen by a top-2 margin of at least NEAR_TIE: a server
        reproduces those whatever batch shapes or reused KV its request runs with."""
        first_tie = next((i for i, m in enumerate(self.margins) if m < NEAR_TIE), len(self.margins))
        return min(first_tie, len(self.prefixes))


class Oracle:
    """The model loaded in the test process: solo greedy references with their margins."""

    def __init__(self, model: str) -> None:
        from warmlm.engine.runner import ModelRunner
        from warmlm.tasks.chat import ChatTemplate

        # one thread: no OpenMP team to stall when the machine is busy with the servers
        self.runner = ModelRunner(
            model_path(model), n_ctx=2048, n_seq_max=2, n_batch=512, threads=1
        )
        self.template = ChatTemplate(self.runner.chat_template(), **self.runner.special_tokens())

    def chat_tokens(self, user: str) -> list[int]:
        from warmlm.tasks.chat import Message

        text = self.template.strip_leading_bos(self.template.render([Message("user", user)]))
        return self.runner.tokenize(text, add_special=True, parse_special=True)

    def text_tokens(self, text: str) -> list[int]:
        return self.runner.tokenize(text, add_special=True, parse_special=False)

    def solo(self, tokens: list[int], max_tokens: int) -> Solo:
        from warmlm.config import EngineConfig
        from warmlm.engine.engine import Engine
        from warmlm.engine.request import SamplingParams

        self.runner.clear()
        cfg = EngineConfig(Path("oracle.gguf"), n_ctx=2048, parallel=1, cache_slots=0)
        engine = Engine(self.runner, cfg)
        engine.kv.reuse = False
        margins: list[float] = []

        def probe(req: object, index: int) -> None:
            top2 = np.sort(self.runner.logits(index))[-2:]
            margins.append(float(top2[1] - top2[0]))

        engine.logits_probe = probe
        out = engine.generate(tokens, SamplingParams(max_tokens=max_tokens, temperature=0.0))
        pieces = b""
        prefixes = []
        for tok in out.token_ids:
            pieces += self.runner.piece(tok)
            prefixes.append(pieces.decode("utf-8", errors="ignore"))
        return Solo(out.text, prefixes or [""], margins)

    def close(self) -> None:
        self.runner.close()


def test_solo_matches_only_after_a_near_tie() -> None:
    solo = Solo("ab cd", ["ab", "ab cd"], [3.0, 0.5])
    assert solo.matches("ab cd") and solo.matches("ab xy") and not solo.matches("xy")
    assert not Solo("ab cd", ["ab", "ab cd"], [3.0, 2.0]).matches("ab xy")


def test_confident_tokens_end_at_the_first_near_tie() -> None:
    assert Solo("ab cd ef", ["ab", "ab cd", "ab cd ef"], [3.0, 0.5, 4.0]).confident_tokens() == 1
    assert Solo("ab", ["ab"], [3.0, 2.0]).confident_tokens() == 1  # the end-of-turn step too


def test_sse_helpers_split_events() -> None:
    raw = b'data: {"choices": [{"delta": {"content": "a"}, "finish_reason": null}]}\n\n'
    raw += b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'
    payloads = sse_payloads(raw)
    assert payloads[-1] == b"[DONE]" and stream_text(payloads) == ("a", ["stop"])


def test_live_app_serves_real_http() -> None:
    with LiveApp() as live:
        r = httpx.post(live.url + "/v1/chat/completions", json=CHAT)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "abcd"
        status, headers, _ = raw_http(live.port, get("/health"))
        assert status == 200 and headers["content-type"] == "application/json"


def test_hold_reads_a_stream_and_drops_it_on_demand() -> None:
    with LiveApp() as live:
        done = Hold(live.url, CHAT, path="/v1/chat/completions")
        done.start()
        done.join(10)
        assert done.status == 200 and stream_text(sse_payloads(done.raw))[0] == "abcd"
        dropped = Hold(live.url, {**CHAT, "max_tokens": 500}, path="/v1/chat/completions")
        dropped.drop.set()
        dropped.start()
        dropped.join(10)
        assert not dropped.is_alive() and b"[DONE]" not in dropped.raw
        assert wait_for(lambda: health(live.url)["running"] == 0, 5.0) < 5.0
