"""The two Ray Serve deployments: engine replicas, and the ingress behind Serve's HTTP proxy."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from warmlm.cluster.affinity import affinity_key
from warmlm.cluster.bridge import ForwardedRequest, ResponsePart, request
from warmlm.cluster.core import ReplicaCore, Visit, configure_replica_logging
from warmlm.cluster.metrics import merge
from warmlm.cluster.options import ENGINE
from warmlm.cluster.registry import live_replicas
from warmlm.cluster.router import ROUTE_KWARG
from warmlm.config import ServerConfig

log = logging.getLogger("warmlm.cluster")
POW2_PREFIX = "/pow2"  # the same API, routed by Ray Serve's default policy (for comparison)
ATTEMPTS = 3  # tries of a request that fails before its response starts (a replica died)
VISIT_TIMEOUT = 10.0  # seconds a replica's /metrics may take (a saturated one: until a slot frees)
STATUS_CACHE_S = 1.0


class EngineReplica:
    """One warmlm app per replica; routable only once warm (Serve awaits this constructor and a
    first `check_health` before it sends the replica any request)."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self, config: ServerConfig, ready_timeout: float = 600.0
    ) -> None:
        configure_replica_logging(config.log_level)
        replica_id = serve.get_replica_context().replica_id.unique_id
        self.core = ReplicaCore(config, replica_id)
        self._stopped = False
        await self.core.start(ready_timeout)

    async def http(
        self, request: ForwardedRequest, route: dict[str, Any] | None = None
    ) -> AsyncIterator[ResponsePart]:
        """A forwarded HTTP request (`route` is the router's hint, unused here)."""
        async for part in self.core.handle(request):
            yield part

    async def visit(self, request: ForwardedRequest, route: dict[str, Any] | None = None) -> Visit:
        """A whole request and who answered it (the ingress's /metrics visits)."""
        return await self.core.visit(request)

    def record_routing_stats(self) -> dict[str, Any]:
        return self.core.stats()

    def check_health(self) -> None:
        """Ray's health check: raising makes Serve replace this replica."""
        self.core.check()

    async def __del__(self) -> None:
        if not getattr(self, "_stopped", True):
            self._stopped = True
            await self.core.stop()  # saves cached KV to the host tiers, like `warmlm serve`


class ForwardedResponse(Response):
    """A replica's response, replayed as it streams in (status and headers as the replica sent)."""

    def __init__(self, start: ResponsePart, parts: Any, keep: set[asyncio.Task[None]]) -> None:
        self.status_code = start["status"]
        self.raw_headers = list(start["headers"])
        self.background = None
        self._parts = parts
        self._keep = keep
        self._sse = any(
            k.lower() == b"content-type" and v.startswith(b"text/event-stream")
            for k, v in self.raw_headers
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        done = False
        try:
            async for part in self._parts:
                if part["kind"] != "body":
                    continue
                done = not part["more"]
                await send({"type": "http.response.body", "body": part["body"], "more_body": True})
                if done:
                    break
        except Exception as exc:  # the replica died mid-response: end it with an error event
            log.warning("replica failed mid-response: %r", exc)
            if self._sse:
                error = {"error": {"message": "the replica serving this stream failed",
                                   "type": "server_error", "code": "replica_failed"}}  # fmt: skip
                chunk = f"data: {json.dumps(error)}\n\n".encode()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            if done:  # let the replica finish its side (request log) without holding the client
                task = asyncio.ensure_future(_drain(self._parts))
                self._keep.add(task)
                task.add_done_callback(self._keep.discard)
            else:
                self._parts.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _drain(parts: Any) -> None:
    try:
        async for _ in parts:
            pass
    except Exception:  # the response is complete; nothing left to tell anyone
        pass


def _error(status: int, message: str, code: str, retry_after: int | None = None) -> Response:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse(body, status_code=status, headers=headers)


class Ingress:
    """Every HTTP request of the application: forwarded to an engine replica chosen by the
    affinity router, except `/health`, `/ready` and `/metrics`, which answer for all replicas."""

    def __init__(self, engine: DeploymentHandle) -> None:
        configure_replica_logging("info")
        self._app = serve.get_replica_context().app_name
        # options() initializes the handle: its router starts following the replicas now
        self._http = engine.options(stream=True, method_name="http")
        self._visit = engine.options(method_name="visit")
        self._keep: set[asyncio.Task[None]] = set()
        self._states: tuple[float, dict[str, int]] = (0.0, {})

    async def __call__(self, request: Request) -> Response:
        path = request.scope["path"]
        policy = "affinity"
        if path == POW2_PREFIX or path.startswith(POW2_PREFIX + "/"):
            policy, path = "pow2", path[len(POW2_PREFIX) :] or "/"
        if path in ("/health", "/ready", "/metrics") and request.method in ("GET", "HEAD"):
            return await self.whole_application(path, request)
        body = await request.body()
        key = affinity_key(path, request.headers, body) if policy == "affinity" else None
        forwarded: ForwardedRequest = {
            "method": request.method,
            "path": path,
            "query_string": request.scope.get("query_string", b""),
            "headers": list(request.scope.get("headers", [])),
            "body": body,
            "client": tuple(request.scope["client"]) if request.scope.get("client") else None,
        }
        return await self.forward(forwarded, {"key": key, "policy": policy})

    async def forward(self, request: ForwardedRequest, hint: dict[str, Any]) -> Response:
        error: Exception | None = None
        for attempt in range(ATTEMPTS):
            route = {**hint, "failover": attempt > 0}
            parts: Any = self._http.remote(request, **{ROUTE_KWARG: route})
            try:
                start = await parts.__anext__()
            except (Exception, StopAsyncIteration) as exc:  # the replica died before answering
                error = exc if isinstance(exc, Exception) else RuntimeError("empty response")
                log.warning("attempt %d of %s failed: %r", attempt + 1, request["path"], exc)
                continue
            if start["status"] == 503 and attempt + 1 < ATTEMPTS:
                parts.cancel()  # that replica's engine failed; Ray is replacing it
                continue
            return ForwardedResponse(start, parts, self._keep)
        return _error(503, f"no replica could serve the request: {error!r}", "no_replica", 1)

    # -- the application as a whole --------------------------------------------------------
    async def whole_application(self, path: str, client: Request) -> Response:
        """`/health`, `/ready` or `/metrics` for all replicas."""
        if path != "/metrics":
            health = await self.health()
            if path == "/ready":
                ready = health["status"] == "ready"
                return JSONResponse({"status": health["status"]}, status_code=200 if ready else 503)
            return JSONResponse(health)
        # every replica's /metrics, asked with the client's headers so that each replica's own
        # guards (API key, Host) apply: a refusal is returned as it is
        headers = [(k, v) for k, v in client.scope.get("headers", []) if k != b"content-length"]
        visits = await self._visit_all(request("GET", "/metrics", headers))
        refused = next((v for v in visits if v["status"] != 200), None)
        if refused is not None:
            return Response(refused["body"], refused["status"], _plain(refused["headers"]))
        texts = {v["replica"]: v["body"].decode("utf-8", "replace") for v in visits}
        merged = await asyncio.to_thread(merge, texts, await self.replica_states())
        return Response(merged, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _visit_all(self, probe: ForwardedRequest) -> list[Visit]:
        """`probe` on every replica, one after the other: Serve gives the calls a request makes
        the request's own internal id, which the router matches replies on, so a request must
        not have two engine calls being routed at once. (Replicas keep headroom above their
        saturation point for these visits.)"""
        found: list[Visit] = []
        for replica in live_replicas(self._app, ENGINE):
            try:
                call = self._visit.remote(probe, **{ROUTE_KWARG: {"target": replica}})
                found.append(await asyncio.wait_for(call, VISIT_TIMEOUT))
            except Exception as exc:
                log.warning("replica %s did not answer: %r", replica, exc)
        return list({v["replica"]: v for v in found}.values())

    async def replica_states(self) -> dict[str, int]:
        """Engine replicas by Serve state (RUNNING, STARTING, ...), cached for a second."""
        at, states = self._states
        if time.monotonic() - at > STATUS_CACHE_S:
            try:
                states = await asyncio.to_thread(self._serve_states)
            except Exception:
                log.debug("serve.status() failed", exc_info=True)
            self._states = (time.monotonic(), states)
        return states

    def _serve_states(self) -> dict[str, int]:
        counts = serve.status().applications[self._app].deployments[ENGINE].replica_states
        return {getattr(k, "value", str(k)): int(v) for k, v in counts.items()}

    async def health(self) -> dict[str, Any]:
        """One /health for the application: warmlm's fields (status, model, running, waiting)
        over the routable replicas (Serve routes only to warm ones), and each replica's own
        state as it last reported it (every few seconds)."""
        replicas = [
            {"replica": rid, "status": "ready", **stats}
            for rid, stats in live_replicas(self._app, ENGINE).items()
        ]
        ready = [r for r in replicas if r["status"] == "ready"]
        first = (ready or replicas or [{}])[0]
        status = "ready" if ready else ("failed" if first.get("status") == "failed" else "loading")
        body: dict[str, Any] = {
            "status": status,
            "model": first.get("model"),
            "parallel": first.get("parallel"),
            "threads": first.get("threads"),
            "running": sum(int(r.get("running") or 0) for r in replicas),
            "waiting": sum(int(r.get("waiting") or 0) for r in replicas),
            "replicas": {"ready": len(ready), "states": await self.replica_states()},
            "replica": replicas,
        }
        if status == "failed":
            body["error"] = first.get("error")
        return body


def _plain(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    skip = {"content-length", "transfer-encoding"}
    return {
        k.decode("latin-1"): v.decode("latin-1")
        for k, v in headers
        if k.decode("latin-1").lower() not in skip
    }
