"""Security defaults (docs/security.md): API key, constant-time compare, CORS, Host check, body
and head limits, static-file traversal, log redaction; on the scripted engine, over real HTTP
where the transport matters."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.test_app import CHAT, factory
from tests.test_battery_support import LiveApp, get, raw_http
from warmlm.cli import build_parser, main, server_config
from warmlm.config import ConfigError, ServerConfig
from warmlm.logformat import SafeTextFormatter
from warmlm.server import security
from warmlm.server.app import create_app

KEY = "sk-test-0123456789"
APP_ORIGIN = "https://app.example"


@contextmanager
def client_for(**config: object) -> Iterator[TestClient]:
    """A test client of the scripted-engine app, once ready."""
    cfg = ServerConfig(model="fake", ctx=1024, **config)  # type: ignore[arg-type]
    with TestClient(create_app(cfg, service_factory=factory())) as client:
        deadline = time.monotonic() + 10
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.01)
        yield client


@pytest.fixture
def keyed() -> Iterator[TestClient]:
    with client_for(api_key=KEY) as c:
        yield c


def is_error(r: httpx.Response, status: int, code: str | None = None) -> bool:
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return r.status_code == status and (code is None or err["code"] == code)


def test_api_key_guards_every_route_but_health_ready_and_the_page(keyed: TestClient) -> None:
    for path in ("/health", "/ready", "/", "/app.js"):
        assert keyed.get(path).status_code == 200, path
    r = keyed.post("/v1/chat/completions", json=CHAT)
    assert is_error(r, 401, "invalid_api_key") and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "authentication_error"
    for path in ("/v1/models", "/metrics", "/openapi.json", "/docs", "/v1/nope"):
        assert is_error(keyed.get(path), 401), path
    for auth in ("Bearer wrong", f"Basic {KEY}", KEY, f"Bearer {KEY}x", "Bearer "):
        r = keyed.post("/v1/chat/completions", json=CHAT, headers={"Authorization": auth})
        assert is_error(r, 401), auth
    for auth in (f"Bearer {KEY}", f"bearer {KEY}"):
        r = keyed.post("/v1/chat/completions", json=CHAT, headers={"Authorization": auth})
        assert r.status_code == 200, auth
    assert keyed.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_key_is_compared_with_hmac_compare_digest(
    keyed: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return False

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    r = keyed.post("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 401  # the verdict is compare_digest's, even for the right key
    assert calls == [(KEY.encode(), KEY.encode())]
    keyed.get("/v1/models")  # no header at all: compared too, so timing does not tell
    assert calls[-1] == (b"", KEY.encode())


def test_api_key_file_and_config_errors(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    assert security.resolve_api_key(ServerConfig(api_key_file=key_file)) == KEY
    assert security.resolve_api_key(ServerConfig(api_key=KEY)) == KEY
    assert security.resolve_api_key(ServerConfig()) is None
    (tmp_path / "two").write_text(f"  {KEY}  \nsecond line\n")
    assert security.resolve_api_key(ServerConfig(api_key_file=tmp_path / "two")) == KEY
    assert security.resolve_api_key(ServerConfig(api_key=f" {KEY}\n")) == KEY
    (tmp_path / "empty").write_text("\n")
    bad = [
        ServerConfig(api_key=KEY, api_key_file=key_file),
        ServerConfig(api_key_file=tmp_path / "empty"),
        ServerConfig(api_key_file=tmp_path / "missing"),
        ServerConfig(api_key="key with\nnewline"),
        ServerConfig(api_key=" "),
    ]
    for cfg in bad:
        with pytest.raises(ConfigError):
            security.resolve_api_key(cfg)
    assert KEY not in repr(ServerConfig(api_key=KEY))
    assert main(["serve", "--model", "x", "--api-key-file", str(tmp_path / "missing")]) == 2


def test_flags_and_environment_map_onto_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["serve", "--cors-origin", "https://a", "--cors-origin", "https://b"]
    argv += ["--allowed-host", "proxy.example", "--max-body-bytes", "4096"]
    argv += ["--max-header-bytes", "8192", "--drain-timeout", "3"]
    cfg = server_config(build_parser().parse_args(argv))
    assert cfg.cors_origin == ("https://a", "https://b") and cfg.allowed_host == ("proxy.example",)
    assert (cfg.max_body_bytes, cfg.max_header_bytes, cfg.drain_timeout) == (4096, 8192, 3.0)
    monkeypatch.setenv("WARMLM_CORS_ORIGIN", "https://x, https://y")
    monkeypatch.setenv("WARMLM_API_KEY", KEY)
    cfg = ServerConfig.from_env()
    assert cfg.cors_origin == ("https://x", "https://y") and cfg.api_key == KEY
    defaults = ServerConfig()
    assert defaults.host == "127.0.0.1" and defaults.max_body_bytes == 2 << 20
    assert defaults.cors_origin == () and defaults.api_key is None


def test_public_bind_without_key_warns() -> None:
    for host in ("0.0.0.0", "::", "192.168.1.5"):
        warning = security.bind_warning(ServerConfig(host=host), has_key=False)
        assert warning and "without an API key" in warning
        assert security.bind_warning(ServerConfig(host=host), has_key=True) is None
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        assert security.bind_warning(ServerConfig(host=host), has_key=False) is None


def test_cors_is_off_by_default_and_same_origin_still_works() -> None:
    with client_for() as c:
        r = c.post("/v1/chat/completions", json=CHAT, headers={"Origin": APP_ORIGIN})
        assert is_error(r, 403, "origin_not_allowed")
        assert "access-control-allow-origin" not in r.headers
        same = c.post("/v1/chat/completions", json=CHAT, headers={"Origin": "http://testserver"})
        assert same.status_code == 200 and "access-control-allow-origin" not in same.headers
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200  # no Origin: curl


def test_cors_allow_list_never_echoes_an_arbitrary_origin() -> None:
    with client_for(cors_origin=(APP_ORIGIN,), api_key=KEY) as c:
        auth = {"Authorization": f"Bearer {KEY}"}
        r = c.post("/v1/chat/completions", json=CHAT, headers={"Origin": APP_ORIGIN, **auth})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == APP_ORIGIN
        assert r.headers["vary"] == "Origin"
        assert "access-control-allow-credentials" not in r.headers
        r = c.post("/v1/chat/completions", json=CHAT, headers={"Origin": APP_ORIGIN})
        assert is_error(r, 401) and r.headers["access-control-allow-origin"] == APP_ORIGIN
        evil = {"Origin": "https://evil.example", **auth}
        r = c.post("/v1/chat/completions", json=CHAT, headers=evil)
        assert is_error(r, 403) and "access-control-allow-origin" not in r.headers
        ask = {"Access-Control-Request-Method": "POST"}
        ask["Access-Control-Request-Headers"] = "authorization, content-type"
        pre = c.options("/v1/chat/completions", headers={"Origin": APP_ORIGIN, **ask})
        assert pre.status_code == 204 and "POST" in pre.headers["access-control-allow-methods"]
        assert "authorization" in pre.headers["access-control-allow-headers"]
        pre = c.options("/v1/chat/completions", headers={"Origin": "https://evil.example", **ask})
        assert is_error(pre, 403)
    with client_for(cors_origin=("*",)) as c:
        r = c.get("/v1/models", headers={"Origin": "https://any.example"})
        assert r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers


def test_host_check_against_dns_rebinding_on_loopback() -> None:
    with LiveApp() as live:
        for host in ("evil.example", f"evil.example:{live.port}", "10.0.0.1", "localhost.evil"):
            status, _, body = raw_http(live.port, get("/v1/models", host))
            assert status == 403 and b"host_not_allowed" in body, host
        for host in (
            "localhost",
            f"localhost:{live.port}",
            "127.0.0.1:1",
            "[::1]:8000",
            "LocalHost",
        ):
            assert raw_http(live.port, get("/v1/models", host))[0] == 200, host
    with LiveApp(allowed_host=("proxy.example",)) as live:
        assert raw_http(live.port, get("/v1/models", "proxy.example"))[0] == 200
        assert raw_http(live.port, get("/v1/models", "evil.example"))[0] == 403


def test_body_and_head_limits() -> None:
    with LiveApp(max_body_bytes=4096) as live:
        big = {"messages": [{"role": "user", "content": "x" * 5000}]}
        r = httpx.post(live.url + "/v1/chat/completions", json=big)
        assert is_error(r, 413, "body_too_large")
        chunks = b"".join(b"400\r\n" + b" " * 1024 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
        head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        head += "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        head += "Connection: close\r\n\r\n"
        status, _, body = raw_http(live.port, head.encode() + chunks)
        assert status == 413 and b'"error"' in body
        assert httpx.post(live.url + "/v1/chat/completions", json=CHAT).status_code == 200
        huge_header = get("/health", extra=f"X-Filler: {'a' * 20000}\r\n")
        status, _, body = raw_http(live.port, huge_header)
        assert status == 431 and b"head_too_large" in body  # over 16 KiB of head
        many = get("/health", extra="".join(f"X-{i}: a\r\n" for i in range(3000)))
        assert raw_http(live.port, many)[0] == 431
        endless = get("/health", extra=f"X-Filler: {'a' * 300_000}\r\n")
        assert raw_http(live.port, endless)[0] == 400  # h11 gives up while it is still arriving
        assert raw_http(live.port, get("/health", extra=f"X-Ok: {'a' * 4000}\r\n"))[0] == 200


TRAVERSALS = [
    "/../pyproject.toml",
    "/../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/..%2f..%2fpyproject.toml",
    "/.%2e/server/app.py",
    "/%2fetc%2fpasswd",
    "//etc/passwd",
    "/index.html/..%2f..%2f..%2fpyproject.toml",
    "/..%5c..%5cpyproject.toml",
    "/%00",
    "/index.html%00.js",
    "/%ff",
    "/web/../../pyproject.toml",
    "/etc/passwd",
]


def test_static_path_traversal_is_404() -> None:
    with LiveApp() as live:
        assert raw_http(live.port, get("/index.html"))[0] == 200
        for path in TRAVERSALS:
            status, headers, body = raw_http(live.port, get(path))
            assert status == 404 and b"not_found_error" in body, path
            assert b"root:" not in body and b"[project]" not in body


def test_request_log_has_ids_no_text_and_no_forged_lines(caplog: pytest.LogCaptureFixture) -> None:
    secret = "SECRET-PROMPT-7731"
    user = "mallory\r\nINFO warmlm.request: request id=forged status=200"
    with caplog.at_level(logging.INFO), LiveApp() as live:
        body = {**CHAT, "messages": [{"role": "user", "content": secret}], "user": user}
        assert httpx.post(live.url + "/v1/chat/completions", json=body).status_code == 200
    lines = [r for r in caplog.records if r.name.startswith("warmlm")]
    assert not any(secret in r.getMessage() for r in lines)
    (line,) = [r for r in lines if r.name == "warmlm.request"]
    text = SafeTextFormatter("%(message)s").format(line)
    assert "\n" not in text and "\r" not in text and "id=req-" in text
    assert "mallory\\r\\nINFO" in text
