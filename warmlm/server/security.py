"""Request guards in front of every route: Host check, CORS, API key, body size (docs/security.md).

One ASGI middleware, in this order: a Host header that is not ours (DNS rebinding against a
loopback server) is a 403; a browser Origin that is neither same-origin nor allow-listed is a
403, and an allowed one gets CORS headers (never `*` with credentials, never an arbitrary echo);
with an API key, every route but `/health`, `/ready` and the static page needs
`Authorization: Bearer KEY`, compared in constant time; a body over the limit is a 413.
Every refusal is the OpenAI error object.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Iterable

from fastapi import FastAPI, HTTPException
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warmlm.config import ConfigError, ServerConfig
from warmlm.server.errors import error_body

PUBLIC_PATHS = frozenset({"/health", "/ready"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
CORS_METHODS = "GET, POST, OPTIONS"
CORS_MAX_AGE = "600"


def resolve_api_key(config: ServerConfig) -> str | None:
    """`--api-key`/`WARMLM_API_KEY`, or the first line of `--api-key-file`; never both."""
    if config.api_key and config.api_key_file:
        raise ConfigError("give either an API key or an API key file, not both")
    if config.api_key_file is None:
        key = None if config.api_key is None else config.api_key.strip()
    else:
        try:
            lines = config.api_key_file.read_text(encoding="utf-8").strip().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the API key file: {exc}") from exc
        key = lines[0].strip() if lines else ""
    if key is not None and (not key or not key.isprintable() or not key.isascii()):
        raise ConfigError("the API key must be non-empty printable ASCII")
    return key


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_warning(config: ServerConfig, has_key: bool) -> str | None:
    """The warning to print when anyone on the network could use the server."""
    if has_key or is_loopback(config.host):
        return None
    return (
        f"listening on {config.host} without an API key: anyone who can reach port "
        f"{config.port} can use the model; set --api-key-file, --api-key or WARMLM_API_KEY"
    )


def host_name(value: str) -> str:
    """`[::1]:8000` → `::1`, `LocalHost:80` → `localhost`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class SecurityMiddleware:
    """The guards of the module docstring; pure ASGI, so streaming responses pass untouched."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None,
        cors_origins: Iterable[str],
        hosts: Iterable[str] | None,
        max_body: int,
        hosts_always: bool = False,
        max_head: int = 16 << 10,
    ) -> None:
        self.app = app
        self.key = api_key.encode() if api_key is not None else None
        self.origins = frozenset(o.rstrip("/").lower() for o in cors_origins)
        self.hosts = None if hosts is None else frozenset(h.lower() for h in hosts)
        self.hosts_always = hosts_always
        self.max_body = max_body
        self.max_head = max_head

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        head += sum(len(k) + len(v) + 4 for k, v in scope["headers"])
        if head > self.max_head:  # h11 bounds a head still arriving; this, one that arrived whole
            await _refuse(
                send, 431, f"the request head is over {self.max_head} bytes", "head_too_large"
            )
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if host and self._check_host(scope) and host_name(host) not in (self.hosts or ()):
            await _refuse(send, 403, "this Host is not served here", "host_not_allowed")
            return
        origin = headers.get("origin")
        cors: list[tuple[bytes, bytes]] = []
        if origin is not None and not _same_origin(origin, host):
            if not self._origin_allowed(origin):
                await _refuse(send, 403, "this Origin is not allowed", "origin_not_allowed")
                return
            cors = self._cors_headers(origin)
            if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
                await _preflight(send, cors, headers.get("access-control-request-headers"))
                return
        send = _with_headers(send, cors) if cors else send
        if self.key is not None and _protected(scope) and not self._authorized(headers):
            await _refuse(send, 401, "a valid API key is required", "invalid_api_key")
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            await _refuse(send, 413, self._too_large(), "body_too_large")
            return
        await self.app(scope, self._limited(receive), send)

    def _check_host(self, scope: Scope) -> bool:
        """With a loopback bind, on requests that came in over a loopback socket (not, say, a
        test client or a Ray replica's bridge); everywhere once `--allowed-host` is given."""
        if self.hosts is None:
            return False
        server = scope.get("server") or ("", 0)
        return self.hosts_always or is_loopback(str(server[0]))

    def _authorized(self, headers: dict[str, str]) -> bool:
        assert self.key is not None
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token.strip().encode("latin-1") if scheme.lower() == "bearer" else b""
        return hmac.compare_digest(given, self.key)  # constant time, whatever `given` is

    def _origin_allowed(self, origin: str) -> bool:
        return "*" in self.origins or origin.rstrip("/").lower() in self.origins

    def _cors_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        allow = b"*" if "*" in self.origins else origin.encode("latin-1")
        return [
            (b"access-control-allow-origin", allow),
            (b"access-control-expose-headers", b"Retry-After"),
            (b"vary", b"Origin"),
        ]

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_body} bytes"

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:  # a chunked body; FastAPI turns this into the 413
                    raise HTTPException(413, self._too_large())
            return message

        return receive_limited


def _protected(scope: Scope) -> bool:
    """Every API route and anything under /v1/; not /health, /ready or the static page."""
    path = scope["path"]
    if path in PUBLIC_PATHS:
        return False
    if path == "/v1" or path.startswith("/v1/"):
        return True
    app = scope.get("app")
    routes = getattr(getattr(app, "router", None), "routes", [])
    return any(
        not isinstance(route, Mount) and route.matches(scope)[0] is not Match.NONE
        for route in routes
    )


def _same_origin(origin: str, host: str) -> bool:
    netloc = origin.partition("://")[2].rstrip("/").lower()
    return bool(netloc) and netloc == host.strip().lower()


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def send_with(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return send_with


async def _preflight(send: Send, cors: list[tuple[bytes, bytes]], asked: str | None) -> None:
    headers = [
        *cors,
        (b"access-control-allow-methods", CORS_METHODS.encode()),
        (b"access-control-allow-headers", (asked or "Authorization, Content-Type").encode()),
        (b"access-control-max-age", CORS_MAX_AGE.encode()),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _refuse(send: Send, status: int, message: str, code: str) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if status in (403, 413, 431):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install_security(app: FastAPI, config: ServerConfig) -> str | None:
    """Add the guards to `app`; returns the API key in force (None: no key)."""
    key = resolve_api_key(config)
    hosts: set[str] | None = None
    if is_loopback(config.host) or config.allowed_host:
        hosts = {*LOOPBACK_NAMES, host_name(config.host), *map(host_name, config.allowed_host)}
    app.add_middleware(
        SecurityMiddleware,
        api_key=key,
        cors_origins=config.cors_origin,
        hosts=hosts,
        max_body=config.max_body_bytes,
        hosts_always=bool(config.allowed_host),
        max_head=config.max_header_bytes,
    )
    return key
