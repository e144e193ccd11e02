"""One structured log line per API request: human `key=value` text by default, JSON for collectors.

The line joins what HTTP knows (endpoint, status, duration, the client's `model` and `user`)
with what the engine knows (tokens in/out, cached tokens, TTFT, finish reason): the engine
observer leaves a summary under the engine request id, and the middleware picks it up when the
response is done. Prompt and completion text are never logged; every user-provided value has
its control characters (CR, LF, ...) escaped so a client cannot forge log lines.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn.config
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warmlm.engine.request import Request as EngineRequest
from warmlm.logformat import logfmt, set_log_format

log = logging.getLogger("warmlm.request")
STATE_KEY = "warmlm_request"  # where routes note per-request fields, in the ASGI scope's state
MAX_FIELD = 200


def configure_logging(fmt: str, logger: logging.Logger | None = None) -> dict[str, Any] | None:
    """Put the `text` or `json` formatter on the logger's handlers (root by default); returns
    the uvicorn `log_config` to use: in JSON mode uvicorn's records propagate here too."""
    set_log_format(fmt, logger)
    return None if fmt == "json" else uvicorn.config.LOGGING_CONFIG


@dataclass(frozen=True)
class EngineSummary:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    ttft_s: float | None
    finish: str
    at: float


class RequestLog:
    """Engine summaries waiting for their HTTP response to finish (bounded, short-lived)."""

    def __init__(self, logger: logging.Logger = log, max_pending: int = 1024) -> None:
        self.logger = logger
        self.max_pending = max_pending
        self.ttl = 600.0  # summaries nobody collects (warm-up, aborted streams) expire
        self._pending: OrderedDict[str, EngineSummary] = OrderedDict()
        self._lock = threading.Lock()

    def engine_done(self, req: EngineRequest, reason: str) -> None:
        """On the engine thread: remember what the engine knows about the request."""
        first = req.first_token_at
        now = time.monotonic()
        summary = EngineSummary(
            len(req.prompt_tokens),
            len(req.output_tokens),
            req.cached_tokens,
            None if first is None else first - req.arrival,
            reason,
            now,
        )
        with self._lock:
            self._pending[req.request_id] = summary
            while self._pending and (
                len(self._pending) > self.max_pending
                or next(iter(self._pending.values())).at < now - self.ttl
            ):
                self._pending.popitem(last=False)

    def take(self, request_id: str) -> EngineSummary | None:
        with self._lock:
            return self._pending.pop(request_id, None)

    def http_done(self, endpoint: str, status: int, seconds: float, noted: Mapping) -> None:
        """Log the request's line, with the engine's figures when it reached the engine."""
        request_id = noted.get("id")
        summary = self.take(request_id) if isinstance(request_id, str) else None
        fields: dict[str, Any] = {"id": request_id, "endpoint": endpoint, "status": status}
        if summary is not None:
            fields.update(
                tokens_in=summary.prompt_tokens,
                tokens_out=summary.completion_tokens,
                cached_tokens=summary.cached_tokens,
                ttft_ms=None if summary.ttft_s is None else round(summary.ttft_s * 1000, 1),
                finish=summary.finish,
            )
        fields["duration_ms"] = round(seconds * 1000, 1)
        for key in ("stream", "model", "user"):  # user-provided: bounded; formatters escape
            value = noted.get(key)
            fields[key] = value[:MAX_FIELD] if isinstance(value, str) else value
        level = logging.WARNING if status >= 500 else logging.INFO
        if self.logger.isEnabledFor(level):
            extra = {"warmlm_fields": fields}
            self.logger.log(level, "request %s", logfmt(fields), extra=extra)


class LatencyWindow:
    """The last `size` latencies within `seconds` (recent TTFTs, for percentiles in /health)."""

    def __init__(self, size: int = 256, seconds: float = 300.0) -> None:
        self.seconds = seconds
        self._items: deque[tuple[float, float]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._items.append((time.monotonic(), value))

    def percentiles(self) -> tuple[float | None, float | None, int]:
        """(p50, p95, n) by nearest rank over the recent window; None when it is empty."""
        since = time.monotonic() - self.seconds
        with self._lock:
            values = sorted(v for t, v in self._items if t >= since)
        if not values:
            return None, None, 0

        def rank(q: float) -> float:
            return round(values[max(0, math.ceil(q * len(values)) - 1)], 4)

        return rank(0.5), rank(0.95), len(values)


def note_request(request: Request, **fields: object) -> None:
    """Routes call this with the engine request `id` and the body's `model`, `user`, `stream`."""
    noted = request.scope.setdefault("state", {}).setdefault(STATE_KEY, {})
    noted.update(fields)


def _endpoint(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and getattr(route, "methods", None) else "other"


class RequestMiddleware:
    """Counts every HTTP request by endpoint and status; logs one line per `/v1/` request."""

    def __init__(
        self, app: ASGIApp, requests: RequestLog, count: Callable[[str, int], None]
    ) -> None:
        self.app = app
        self.requests = requests
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        state = scope.setdefault("state", {})
        status = 500  # an exception escapes before any response: the server answers 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._done(scope, status, time.perf_counter() - t0, state.get(STATE_KEY, {}))

    def _done(self, scope: Scope, status: int, seconds: float, noted: Mapping) -> None:
        try:
            endpoint = _endpoint(scope)
            self.count(endpoint, status)
            if scope.get("path", "").startswith("/v1/"):
                self.requests.http_done(endpoint, status, seconds, noted)
        except Exception:  # observability must not turn a served request into an error
            log.debug("request accounting failed", exc_info=True)
