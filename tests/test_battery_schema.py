"""Schemathesis against the server's own OpenAPI schema, over real HTTP on the scripted engine:
no 5xx, every status and content type documented, every body matching its documented schema
(errors included: FastAPI documents the OpenAI error object), invalid input rejected with 4xx.
Examples per operation are bounded so the whole run takes well under a minute."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.test_app import factory
from tests.test_battery_support import LiveApp
from warmlm.config import ServerConfig
from warmlm.server.app import create_app

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# /metrics is Prometheus text (documented as JSON by FastAPI's default); /v1/classify needs a
# real model to score labels (the scripted runner cannot), see test_e2e_classify.
SKIP_PATHS = ("/metrics", "/v1/classify")


@pytest.fixture(scope="module")
def live() -> Iterator[LiveApp]:
    with LiveApp() as app:
        yield app


# The schema as the app generates it (no server needed to build it); cases go to `live`.
DOC = create_app(ServerConfig(model="fake"), service_factory=factory()).openapi()
schema = schemathesis.openapi.from_dict(DOC).exclude(path=list(SKIP_PATHS))


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_matches_its_own_schema(live: LiveApp, case: schemathesis.Case) -> None:
    case.call_and_validate(base_url=live.url, checks=CHECKS, timeout=10)


def test_error_responses_are_documented(live: LiveApp) -> None:
    doc = httpx.get(live.url + "/openapi.json").json()
    assert doc == DOC
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert "422" not in chat and {"400", "401", "413", "429", "503", "default"} <= set(chat)
    assert "text/event-stream" in chat["200"]["content"]
    error = doc["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["error"]
