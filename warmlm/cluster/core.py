"""One engine replica without Ray: a whole warmlm app, started in-process and ready only when warm.

`deployments.EngineReplica` is this class behind Ray Serve's replica interface: its constructor
waits for `start` (so Serve routes to a replica only after its warm-up), `check_health` calls
`check`, and its destructor calls `stop` (which saves cached KV like a graceful `warmlm serve`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypedDict

from warmlm.cluster.bridge import ForwardedRequest, Lifespan, ResponsePart, call, serve_request
from warmlm.config import ServerConfig
from warmlm.server.app import create_app
from warmlm.service import Service, State, build_service

log = logging.getLogger("warmlm.cluster")
REPLICA_HEADER = "x-warmlm-replica"
STAT_FIELDS = ("status", "model", "threads", "parallel", "running", "waiting", "startup_s", "error")


class Visit(TypedDict):
    replica: str
    pid: int
    ready_at: float | None
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class ReplicaFailed(RuntimeError):
    """The replica's engine failed to start or died: Ray should replace this replica."""


class ReplicaCore:
    def __init__(
        self,
        config: ServerConfig,
        replica_id: str,
        service_factory: Callable[[ServerConfig], Service] = build_service,
    ) -> None:
        self.config = config
        self.replica_id = replica_id
        self.fatal: str | None = None
        self.app = create_app(config, on_fatal=self._on_fatal, service_factory=service_factory)
        self._lifespan = Lifespan(self.app)
        self._header = (REPLICA_HEADER.encode(), replica_id.encode())
        self.ready_at: float | None = None

    def _on_fatal(self, reason: str) -> None:
        self.fatal = reason

    @property
    def service(self) -> Service:
        service = getattr(self.app.state, "service", None)
        assert isinstance(service, Service), "the app's lifespan has started"
        return service

    async def start(self, timeout: float) -> None:
        """Start the app's lifespan (which loads the model in the background) and wait until
        the engine is warm; raise ReplicaFailed if it fails or takes longer than `timeout`."""
        await self._lifespan.startup()
        deadline = time.monotonic() + timeout
        while self.service.state not in (State.READY, State.FAILED):
            if time.monotonic() > deadline:
                await self.stop()
                raise ReplicaFailed(f"not warm after {timeout:.0f}s ({self.service.state.value})")
            await asyncio.sleep(0.02)
        if self.service.state is State.FAILED:
            reason = self.service.error or self.fatal or "unknown error"
            await self.stop()
            raise ReplicaFailed(f"the engine failed to start: {reason}")
        self.ready_at = time.time()
        log.info("replica %s ready (pid %d)", self.replica_id, os.getpid())

    def check(self) -> None:
        """Raise unless the engine is ready and its thread is serving."""
        service = self.service
        if self.fatal is not None or service.state is State.FAILED:
            raise ReplicaFailed(f"engine failed: {self.fatal or service.error}")
        if service.state is not State.READY:
            raise ReplicaFailed(f"engine is {service.state.value}")

    def handle(self, request: ForwardedRequest) -> AsyncIterator[ResponsePart]:
        """One forwarded HTTP request, its response tagged with this replica's id."""
        return serve_request(self.app, request, [self._header])

    def stats(self) -> dict[str, Any]:
        """What the ingress's /health shows of this replica (sent as Ray Serve routing stats:
        collected by the controller every few seconds, off the request path)."""
        health = self.service.health()
        stats = {k: health.get(k) for k in STAT_FIELDS if health.get(k) is not None}
        return {**stats, "pid": os.getpid(), "ready_at": self.ready_at}

    async def visit(self, request: ForwardedRequest) -> Visit:
        """A whole request through the app, with who answered (for the ingress's `/health` and
        `/metrics`, which ask every replica the client's own request)."""
        status, headers, body = await call(self.app, request)
        return Visit(
            replica=self.replica_id,
            pid=os.getpid(),
            ready_at=self.ready_at,
            status=status,
            headers=headers,
            body=body,
        )

    async def stop(self) -> None:
        try:
            await self._lifespan.shutdown()
        except Exception:  # shutting down anyway; the reason is in the log
            log.exception("replica %s: shutdown failed", self.replica_id)


def configure_replica_logging(level: str) -> None:
    """warmlm's log lines (startup steps, requests) in the replica's log."""
    logger = logging.getLogger("warmlm")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
