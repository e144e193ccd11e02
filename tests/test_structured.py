"""Structured output: schema checks name unsupported features; grammars compile and are safe."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from typing import Any

import llama_cpp
import pytest
from fastapi.testclient import TestClient

from tests.conftest import SMOLLM, installed, model_path
from tests.test_app import _wait_status, factory
from warmlm.config import ServerConfig
from warmlm.server.app import create_app
from warmlm.tasks.structured import (
    JSON_OBJECT_GRAMMAR,
    UnsupportedSchema,
    check_grammar,
    check_schema,
    response_format_grammar,
    schema_grammar,
)

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "mood": {"enum": ["happy", "sad"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "nickname": {"type": ["string", "null"]},
        "born": {"type": "string", "format": "date"},
        "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
    },
    "required": ["name", "age", "mood"],
}

SUPPORTED: list[dict[str, Any]] = [
    PERSON,
    {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 4},
    {"enum": ["red", "green", 3, None]},
    {"anyOf": [{"type": "string"}, {"type": "object", "properties": {"x": {"type": "boolean"}}}]},
    {
        "$defs": {"node": {"type": "object", "properties": {"kids": {"$ref": "#/$defs/list"}}}},
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/node"}},
        "definitions": {},
    },
    {"type": "object", "additionalProperties": {"type": "integer"}},
    {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}}},
    {"type": "object", "properties": {"n": {"type": "integer", "format": "int64"}}},
    {"type": "object", "properties": {"t": {"const": "fixed"}}, "title": "T", "x-extra": 1},
]

UNSUPPORTED: list[tuple[dict[str, Any], str]] = [
    ({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties"),
    ({"$ref": "https://example.com/schema.json"}, "$ref to"),
    ({"if": {"type": "string"}, "then": {"maxLength": 3}}, "if"),
    ({"type": "string", "format": "email"}, "format 'email'"),
    ({"type": "integer", "minimum": 0}, "minimum"),
    ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
    ({"oneOf": [{"type": "string"}, {"type": "number"}]}, "oneOf"),
    ({"type": "object", "properties": {"a": {"not": {"type": "null"}}}}, "not"),
    ({"type": "string", "pattern": "^\\d+$"}, "pattern"),
    ({"type": "string", "pattern": "abc"}, "pattern"),
    ({"type": "object", "required": ["ghost"]}, "required property 'ghost'"),
    ({"type": "object", "properties": {"a": True}}, "boolean or non-object schema"),
    ({"type": "date"}, "type 'date'"),
    ({"type": "array", "minItems": 2}, "minItems/maxItems without an items schema"),
    ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 3}, "maxLength together with"),
]


@pytest.mark.parametrize("schema", SUPPORTED)
def test_supported_schemas_convert(schema: dict[str, Any]) -> None:
    if "$defs" in schema:  # the recursive one refers to a list schema: add it
        schema["$defs"]["list"] = {"type": "array", "items": {"$ref": "#/$defs/node"}}
    check_schema(schema)
    grammar = schema_grammar(schema)
    assert grammar.startswith("") and "root ::=" in grammar


@pytest.mark.parametrize(("schema", "feature"), UNSUPPORTED)
def test_unsupported_features_are_named(schema: dict[str, Any], feature: str) -> None:
    with pytest.raises(UnsupportedSchema) as info:
        schema_grammar(schema)
    assert feature in str(info.value)


def test_nested_unsupported_feature_says_where() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "object", "minProperties": 1}}}
    with pytest.raises(UnsupportedSchema) as info:
        check_schema(schema)
    assert info.value.feature == "minProperties" and info.value.where == "/properties/a"


def test_strings_in_schema_grammars_exclude_raw_control_characters() -> None:
    grammar = schema_grammar({"type": "object", "properties": {"s": {"type": "string"}}})
    char = next(line for line in grammar.splitlines() if line.startswith("char ::="))
    assert "\\x00-\\x1F" in char


def test_response_formats() -> None:
    assert response_format_grammar(None) is None
    assert response_format_grammar({"type": "text"}) is None
    assert response_format_grammar({"type": "json_object"}) == JSON_OBJECT_GRAMMAR
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
    assert response_format_grammar(fmt) == schema_grammar(PERSON)


@pytest.fixture(scope="module")
def vocab() -> Iterator[Any]:
    if not installed(SMOLLM):
        pytest.skip("SmolLM2 is not installed")
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    llama_cpp.llama_log_set(_quiet, ctypes.c_void_p(0))
    model = llama_cpp.llama_model_load_from_file(str(model_path(SMOLLM)).encode(), params)
    assert model
    yield llama_cpp.llama_model_get_vocab(model)
    llama_cpp.llama_model_free(model)


@llama_cpp.llama_log_callback  # type: ignore[misc]
def _quiet(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    pass


@pytest.mark.parametrize("schema", SUPPORTED[:4] + SUPPORTED[5:])
def test_grammars_compile_for_a_real_vocabulary(vocab: Any, schema: dict[str, Any]) -> None:
    check_grammar(vocab, schema_grammar(schema))
    check_grammar(vocab, JSON_OBJECT_GRAMMAR)


def test_a_broken_grammar_is_refused(vocab: Any) -> None:
    with pytest.raises(UnsupportedSchema, match="does not compile"):
        check_grammar(vocab, "root ::= missing-rule")


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_app(ServerConfig(model="fake", ctx=1024), service_factory=factory())
    with TestClient(app, base_url="http://127.0.0.1") as c:
        _wait_status(c, "ready")
        yield c


def _chat(fmt: dict[str, Any]) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "response_format": fmt,
    }


def test_route_rejects_unsupported_schema_naming_it(client: TestClient) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": UNSUPPORTED[0][0]}}
    r = client.post("/v1/chat/completions", json=_chat(fmt))
    assert r.status_code == 400
    error = r.json()["error"]
    assert "patternProperties" in error["message"] and error["param"] == "response_format"
    assert error["type"] == "invalid_request_error" and error["code"] == "unsupported_schema"


@pytest.mark.parametrize(
    "fmt", [{"type": "xml"}, {"type": "json_schema"}, {"type": "json_object", "extra": 1}]
)
def test_route_rejects_malformed_response_format(client: TestClient, fmt: dict) -> None:
    r = client.post("/v1/chat/completions", json=_chat(fmt))
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("response_format")


def test_route_passes_the_grammar_to_the_sampler(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = client.app.state.service.engine.runner  # type: ignore[attr-defined]
    seen: list[Any] = []
    real = runner.make_sampler
    monkeypatch.setattr(runner, "make_sampler", lambda p: (seen.append(p), real(p))[1])
    r = client.post("/v1/chat/completions", json=_chat({"type": "json_object"}))
    assert r.status_code == 200 and seen[-1].grammar == JSON_OBJECT_GRAMMAR
    client.post("/v1/chat/completions", json=_chat({"type": "text"}))
    assert seen[-1].grammar is None
