"""Request log lines: one per API request, text or JSON, escaped, and never the prompt's text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeTextRunner
from tests.test_app import CHAT, _wait_status, factory
from warmlm.cli import build_parser, server_config
from warmlm.config import ConfigError, ServerConfig
from warmlm.engine.detokenizer import Detokenizer
from warmlm.engine.request import Request as EngineRequest
from warmlm.engine.request import SamplingParams
from warmlm.logformat import JsonFormatter, SafeTextFormatter, logfmt, sanitize
from warmlm.server.app import create_app
from warmlm.server.reqlog import RequestLog, configure_logging

SECRET = "zebra-7431-secret"
FORGED = "bob\r\n2026-01-01 INFO warmlm.request: request id=forged status=200"


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_app(ServerConfig(model="fake", ctx=1024), service_factory=factory())
    with TestClient(app) as c:
        _wait_status(c, "ready")
        yield c


def request_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "warmlm.request"]


def test_sanitize_and_logfmt_keep_one_line() -> None:
    assert sanitize("a\r\nb\x00c\u2028d\x85") == "a\\r\\nb\\x00c\\u2028d\\x85"
    line = logfmt({"id": "r1", "n": 3, "ok": True, "skip": None, "user": FORGED, "q": 'a"b\\'})
    assert "\n" not in line and "\r" not in line and "skip" not in line
    assert line.startswith('id=r1 n=3 ok=true user="bob\\r\\n2026-01-01 INFO')
    assert line.endswith('q="a\\"b\\\\"')


def test_one_text_line_per_request_with_engine_figures(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    chat = {**CHAT, "messages": [{"role": "user", "content": f"tell me {SECRET}"}]}
    assert client.post("/v1/chat/completions", json={**chat, "user": FORGED}).status_code == 200
    with client.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as r:
        list(r.iter_lines())
    client.get("/health")
    records = request_records(caplog)
    assert len(records) == 2  # /health is not an API request
    first, second = (r.getMessage() for r in records)
    for part in ("id=req-", "endpoint=/v1/chat/completions", "status=200", "tokens_in="):
        assert part in first
    assert "tokens_out=4 " in first and "cached_tokens=" in first and "ttft_ms=" in first
    assert "duration_ms=" in first and "finish=length" in first and "stream=false" in first
    assert "stream=true" in second
    text = SafeTextFormatter("%(message)s").format(records[0])
    assert "\n" not in text and "\r" not in text and 'user="bob\\r\\n2026' in text
    assert SECRET not in caplog.text  # nothing anywhere logs the prompt (at any level)


def test_json_lines_carry_fields_and_are_escaped(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="warmlm.request")
    client.post("/v1/chat/completions", json={**CHAT, "user": FORGED})
    line = JsonFormatter().format(request_records(caplog)[-1])
    assert "\n" not in line and "\r" not in line and "\\u2028" not in line
    body = json.loads(line)
    assert body["msg"] == "request" and body["logger"] == "warmlm.request"
    assert body["status"] == 200 and body["tokens_out"] == 4 and body["finish"] == "length"
    assert body["user"].startswith("bob\\r\\n") and body["id"].startswith("req-")
    assert isinstance(body["ttft_ms"], float) and body["stream"] is False


def test_rejected_request_is_logged_with_escaped_model(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="warmlm.request")
    r = client.post("/v1/chat/completions", json={**CHAT, "model": "gpt\r\nINFO fake line"})
    assert r.status_code == 404
    (record,) = request_records(caplog)
    message = record.getMessage()
    assert "status=404" in message and 'model="gpt\\r\\nINFO fake line"' in message
    assert "tokens_in" not in message and "id=" not in message


def test_configure_logging_installs_the_format() -> None:
    logger = logging.getLogger("warmlm.test-configure")
    logger.propagate = False
    stream = io.StringIO()
    logger.addHandler(logging.StreamHandler(stream))
    try:
        assert configure_logging("json", logger) is None  # uvicorn logs propagate to ours
        logger.warning("hello\nworld")
        assert json.loads(stream.getvalue())["msg"] == "hello\nworld"
        assert configure_logging("text", logger) is not None
        logger.warning("two\r\nlines")
        assert stream.getvalue().splitlines()[-1].endswith("two\\r\\nlines")
    finally:
        logger.handlers.clear()


def test_pending_engine_summaries_are_bounded() -> None:
    def req() -> EngineRequest:
        runner = FakeTextRunner()
        return EngineRequest([1, 2], SamplingParams(), lambda ev: None, Detokenizer(runner.piece))

    log = RequestLog(max_pending=2)
    reqs = [req() for _ in range(3)]
    for r in reqs:
        log.engine_done(r, "stop")
    assert log.take(reqs[0].request_id) is None  # pushed out by the bound
    summary = log.take(reqs[2].request_id)
    assert summary is not None and summary.prompt_tokens == 2 and summary.ttft_s is None
    log.ttl = -1.0
    log.engine_done(req(), "stop")  # an expired entry goes as soon as anything arrives
    assert log.take(reqs[1].request_id) is None


def test_log_format_flag_and_config_check() -> None:
    args = build_parser().parse_args(["serve", "--log-format", "json"])
    assert server_config(args).log_format == "json"
    assert ServerConfig().log_format == "text"
    with pytest.raises(ConfigError):
        ServerConfig(log_format="xml")
