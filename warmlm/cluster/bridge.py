"""Running an ASGI app inside a process that is not an HTTP server: its lifespan, and one request
at a time given as plain data, its response streamed back as plain data.

A Ray Serve replica receives a forwarded request as a `ForwardedRequest` dict (picklable) and
yields `start` then `body` parts; the ingress turns them back into an HTTP response. The app sees
an ordinary HTTP request, so every route of warmlm (the OpenAI API, classify, metrics, health,
the web page) behaves in a replica exactly as in `warmlm serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypedDict

from starlette.types import ASGIApp, Message


class ForwardedRequest(TypedDict):
    method: str
    path: str
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    client: tuple[str, int] | None


class ResponsePart(TypedDict, total=False):
    """`kind` "start" (status, headers) or "body" (body, more)."""

    kind: str
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    more: bool


class LifespanError(RuntimeError):
    pass


class Lifespan:
    """The ASGI lifespan protocol, as uvicorn drives it: startup now, shutdown later."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.state: dict[str, Any] = {}

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self._task = asyncio.ensure_future(self._app(scope, self._inbox.get, self._outbox.put))
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await self._reply()
        if reply["type"] != "lifespan.startup.complete":
            raise LifespanError(str(reply.get("message") or reply["type"]))

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        reply = await self._reply()
        with contextlib.suppress(Exception):
            await self._task
        if reply["type"] != "lifespan.shutdown.complete":
            raise LifespanError(str(reply.get("message") or reply["type"]))

    async def _reply(self) -> Message:
        assert self._task is not None
        getter = asyncio.ensure_future(self._outbox.get())
        await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        exc = self._task.exception()
        raise LifespanError(f"the app's lifespan ended: {exc!r}")


def http_scope(request: ForwardedRequest) -> dict[str, Any]:
    path = request["path"] or "/"
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request["method"].upper(),
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": request["query_string"],
        "headers": [(bytes(k).lower(), bytes(v)) for k, v in request["headers"]],
        "client": request["client"],
        "server": ("warmlm-replica", 0),
        "state": {},
    }


async def serve_request(
    app: ASGIApp,
    request: ForwardedRequest,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator[ResponsePart]:
    """Run `request` through `app`, yielding its response as it is sent.

    Closing the iterator early (the client went away) tells the app the client disconnected and
    cancels it, as uvicorn does."""
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    disconnected = asyncio.Event()
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": request["body"], "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    task = asyncio.ensure_future(app(http_scope(request), receive, outbox.put))
    started = complete = False
    try:
        while True:
            getter = asyncio.ensure_future(outbox.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                if not outbox.empty():
                    continue
                error = task.exception()
                if error is not None:
                    raise error
                if not started:
                    raise RuntimeError("the app returned without a response")
                complete = True
                return  # the app ended without a final empty body message
            message = getter.result()
            if message["type"] == "http.response.start":
                started = True
                headers = [*message.get("headers", []), *(extra_headers or [])]
                yield {"kind": "start", "status": int(message["status"]), "headers": headers}
            elif message["type"] == "http.response.body":
                more = bool(message.get("more_body", False))
                complete = not more
                yield {"kind": "body", "body": bytes(message.get("body", b"")), "more": more}
                if complete:
                    return
    finally:
        disconnected.set()  # ends the app's wait for a disconnect, as after any response
        if not task.done() and not complete:
            task.cancel()  # the client went away mid-response: abort the generation
        with contextlib.suppress(BaseException):
            await task


def request(
    method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b""
) -> ForwardedRequest:
    return {
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": list(headers or []),
        "body": body,
        "client": None,
    }


async def call(
    app: ASGIApp, forwarded: ForwardedRequest
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A whole request through the app: (status, headers, body)."""
    status, headers, chunks = 500, [], []
    async for part in serve_request(app, forwarded):
        if part["kind"] == "start":
            status, headers = part["status"], part["headers"]
        else:
            chunks.append(part["body"])
    return status, headers, b"".join(chunks)
