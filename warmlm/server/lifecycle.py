"""Graceful shutdown: on SIGTERM (or Ctrl-C) drain, then exit 0.

Draining keeps the port open: new API requests get 503 + `Retry-After` (a load balancer or
an OpenAI SDK retries elsewhere), `/ready` turns 503, and the requests in flight, streams
included, finish for up to `--drain-timeout` seconds. Then uvicorn stops: idle keep-alive
connections are closed, anything still running is cancelled (its engine request aborted), the
engine thread is joined and the KV cache saved. A second signal exits at once. An engine
failure skips the drain: the process exits 1 so that a supervisor restarts it.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from warmlm.server.errors import error_body

log = logging.getLogger("warmlm.server")
RETRY_AFTER_S = 2
CANCEL_GRACE_S = 1  # after the drain: how long uvicorn waits before cancelling what is left


class Drain:
    """Counts API requests in flight; once begun, knows when the drain is over."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.in_flight = 0  # touched only on the event loop
        self.since: float | None = None

    @property
    def draining(self) -> bool:
        return self.since is not None

    def begin(self) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.info("draining: %d request(s) in flight, up to %.0fs", self.in_flight, self.timeout)

    def over(self) -> bool:
        if self.since is None:
            return False
        if self.in_flight == 0:
            return True
        if time.monotonic() - self.since >= self.timeout:
            log.warning("drain timeout: cancelling %d request(s)", self.in_flight)
            return True
        return False


def drain_of(app: object) -> Drain | None:
    drain = getattr(getattr(app, "state", None), "drain", None)
    return drain if isinstance(drain, Drain) else None


def _is_api(path: str) -> bool:
    return path.startswith("/v1/")


class DrainMiddleware:
    """Counts `/v1/` requests until their response is sent; refuses new ones while draining."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if self.drain.draining and (_is_api(path) or path == "/ready"):
            await _shutting_down(send, path == "/ready")
            return
        if not _is_api(path):
            await self.app(scope, receive, send)
            return
        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.in_flight -= 1


async def _shutting_down(send: Send, ready: bool) -> None:
    payload = (
        {"status": "draining"}
        if ready
        else error_body(503, "the server is shutting down", code="shutting_down")
    )
    body = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install_drain(app: FastAPI, timeout: float) -> Drain:
    drain = Drain(timeout)
    app.state.drain = drain
    app.add_middleware(DrainMiddleware, drain=drain)
    return drain


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains and the process then exits normally (0)
    instead of re-raising the signal; a second signal forces the exit."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain.draining or self.should_exit:
            log.warning("second %s: exiting now", signal.Signals(sig).name)
            self.should_exit = self.force_exit = True
            return
        self.drain.begin()

    async def on_tick(self, counter: int) -> bool:
        if not self.should_exit and self.drain.over():
            self.should_exit = True
        return await super().on_tick(counter)


def leftover_threads() -> list[str]:
    """Threads other than the main one still alive (at exit there should be none of ours)."""
    main = threading.main_thread()
    return sorted(t.name for t in threading.enumerate() if t is not main and t.is_alive())
