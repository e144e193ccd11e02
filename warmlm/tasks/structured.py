"""Structured output: `response_format` → a llama.cpp grammar (GBNF) that the sampler enforces.

`{"type": "json_object"}` allows any JSON object; `{"type": "json_schema", "json_schema":
{"schema": ...}}` converts the schema with llama-cpp-python's `json_schema_to_gbnf`, so every
sampled token keeps the output a prefix of a document that validates. The converter silently
ignores what it cannot express (a `minimum`, `uniqueItems`, `patternProperties`...), which would
let invalid output through; `check_schema` therefore walks the schema first and rejects any
keyword outside the subset the grammar enforces exactly, naming it (HTTP 400).

Supported: type (one or a list), properties, required, additionalProperties (true, false or
a schema), items, prefixItems, minItems, maxItems, enum, const, anyOf, local `$ref` into
`$defs`/`definitions` (recursion too), string minLength/maxLength, `format` date, time,
date-time and uuid, and `pattern` anchored with ^…$ built from literals, classes ([a-z]),
groups, alternation and quantifiers. Annotations (title, description, examples…) are ignored.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

JSON_OBJECT_GRAMMAR = JSON_GBNF  # root ::= object, strings without raw control characters

# the converter's string characters allow raw control characters, which JSON forbids
_CHAR_RULE = re.compile(r"^char ::= .*$", re.MULTILINE)
_SAFE_CHAR = (
    r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] '
    r"[0-9a-fA-F] [0-9a-fA-F])"
)

ANNOTATIONS = {
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
    "readOnly", "writeOnly", "$defs", "definitions", "$anchor",
}  # fmt: skip
SUPPORTED = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems",
    "minItems", "maxItems", "enum", "const", "anyOf", "$ref", "minLength", "maxLength", "format",
    "pattern",
}  # fmt: skip
UNSUPPORTED = {
    "oneOf", "allOf", "not", "if", "then", "else", "patternProperties", "propertyNames",
    "minProperties", "maxProperties", "dependentRequired", "dependentSchemas", "dependencies",
    "unevaluatedProperties", "unevaluatedItems", "contains", "minContains", "maxContains",
    "uniqueItems", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "contentEncoding", "contentMediaType", "contentSchema", "$dynamicRef", "$recursiveRef",
    "additionalItems",
}  # fmt: skip
TYPES = {"string", "number", "integer", "boolean", "null", "object", "array"}
FORMATS = {"date", "time", "date-time", "uuid"}
_PATTERN_OK = re.compile(r"^\^[A-Za-z0-9 _\-,:;!@#%&=<>'/~`()\[\]|*+?{}]*\$$")


class UnsupportedSchema(ValueError):
    """A JSON schema uses something the grammar cannot enforce; `feature` names it."""

    def __init__(self, feature: str, where: str) -> None:
        at = where or "the root"
        super().__init__(f"unsupported JSON schema feature {feature!r} (at {at})")
        self.feature = feature
        self.where = where


def check_schema(schema: Any, where: str = "") -> None:
    """Raise UnsupportedSchema for the first keyword the grammar would not enforce."""
    root = schema
    _check(schema, where, root)


def _check(node: Any, where: str, root: Any) -> None:
    if not isinstance(node, dict):
        raise UnsupportedSchema("boolean or non-object schema", where)
    for key, value in node.items():
        here = f"{where}/{key}"
        if key in UNSUPPORTED:
            raise UnsupportedSchema(key, where)
        if key not in SUPPORTED:
            if key in ("$defs", "definitions"):
                if not isinstance(value, dict):
                    raise UnsupportedSchema(key, where)
                for name, sub in value.items():
                    _check(sub, f"{here}/{name}", root)
            continue  # annotations, and keywords no validator acts on
        _check_keyword(node, key, value, here, root)
    if "required" in node:
        props = node.get("properties", {})
        missing = [k for k in node["required"] if k not in props]
        if missing:
            raise UnsupportedSchema(f"required property {missing[0]!r} without a schema", where)
    strings = {"format", "pattern", "minLength", "maxLength"} & node.keys()
    if len(strings) > 1 and _is_string(node):
        raise UnsupportedSchema(" together with ".join(sorted(strings)), where)
    if ({"minItems", "maxItems"} & node.keys()) and "items" not in node:
        raise UnsupportedSchema("minItems/maxItems without an items schema", where)
    if "$ref" in node and len(set(node) - ANNOTATIONS) > 1:
        raise UnsupportedSchema("$ref beside other keywords", where)
    kinds = node.get("type")
    if isinstance(kinds, list) and len(set(node) - ANNOTATIONS - {"type"}) > 0:
        raise UnsupportedSchema("a list of types beside other keywords", where)


def _check_keyword(node: dict[str, Any], key: str, value: Any, here: str, root: Any) -> None:
    if key == "type":
        kinds = value if isinstance(value, list) else [value]
        for kind in kinds:
            if kind not in TYPES:
                raise UnsupportedSchema(f"type {kind!r}", here)
    elif key == "properties":
        if not isinstance(value, dict):
            raise UnsupportedSchema("properties that is not an object", here)
        for name, sub in value.items():
            _check(sub, f"{here}/{name}", root)
    elif key == "additionalProperties":
        if isinstance(value, dict):
            _check(value, here, root)
        elif not isinstance(value, bool):
            raise UnsupportedSchema("additionalProperties", here)
    elif key == "items":
        subs = value if isinstance(value, list) else [value]
        for i, sub in enumerate(subs):
            _check(sub, f"{here}/{i}" if isinstance(value, list) else here, root)
        if isinstance(value, list) and ({"minItems", "maxItems"} & node.keys()):
            raise UnsupportedSchema("a tuple of items with minItems/maxItems", here)
    elif key == "prefixItems":
        if "items" in node or not isinstance(value, list):
            raise UnsupportedSchema("prefixItems with items", here)
        for i, sub in enumerate(value):
            _check(sub, f"{here}/{i}", root)
    elif key == "anyOf":
        if not isinstance(value, list) or not value:
            raise UnsupportedSchema("anyOf that is not a non-empty list", here)
        for i, sub in enumerate(value):
            _check(sub, f"{here}/{i}", root)
    elif key == "enum":
        if not isinstance(value, list) or not value:
            raise UnsupportedSchema("enum that is not a non-empty list", here)
    elif key == "$ref":
        _check_ref(value, here, root)
    elif key == "format":
        if value not in FORMATS and _is_string(node):  # on numbers: an annotation (int32...)
            raise UnsupportedSchema(f"format {value!r}", here)
    elif key == "pattern":
        if not isinstance(value, str) or not _PATTERN_OK.match(value) or "(?" in value:
            raise UnsupportedSchema(
                "pattern (only ^…$ with literals, [classes], groups, | and quantifiers)", here
            )
    elif key in ("minItems", "maxItems", "minLength", "maxLength"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UnsupportedSchema(key, here)
        if key in ("minLength", "maxLength") and node.get("type") != "string":
            raise UnsupportedSchema(f"{key} without type string", here)
        if key == "maxItems" and node.get("minItems", 0) > value:
            raise UnsupportedSchema("maxItems below minItems", here)
    elif key == "required" and (
        not isinstance(value, list) or not all(isinstance(k, str) for k in value)
    ):
        raise UnsupportedSchema("required that is not a list of names", here)


def _is_string(node: dict[str, Any]) -> bool:
    return node.get("type") in (None, "string")


def _check_ref(ref: Any, where: str, root: Any) -> None:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise UnsupportedSchema(f"$ref to {ref!r} (only local #/... references)", where)
    target = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            raise UnsupportedSchema(f"$ref to {ref!r} (not found)", where)
        target = target[part]


def schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF for a (checked) JSON schema; raises UnsupportedSchema if the converter refuses it."""
    check_schema(schema)
    try:
        grammar = json_schema_to_gbnf(json.dumps(schema))
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise UnsupportedSchema(f"schema the grammar converter refused: {exc}", "") from exc
    return _CHAR_RULE.sub(lambda _: _SAFE_CHAR, grammar)


def response_format_grammar(fmt: dict[str, Any] | None) -> str | None:
    """The grammar of an OpenAI `response_format` (None for text)."""
    if not fmt or fmt.get("type", "text") == "text":
        return None
    if fmt["type"] == "json_object":
        return JSON_OBJECT_GRAMMAR
    if fmt["type"] == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema")
        if schema is None:
            return JSON_OBJECT_GRAMMAR  # a named format without a schema: any JSON object
        return schema_grammar(schema)
    raise UnsupportedSchema(f"response_format type {fmt['type']!r}", "")


def check_grammar(vocab: object, grammar: str) -> None:
    """Compile the grammar once for this vocabulary (a fake runner has none: skipped)."""
    if vocab is None:
        return
    import llama_cpp

    from warmlm.engine.sampler import grammar_stage

    stage = grammar_stage(vocab, grammar)
    if stage is None:
        raise UnsupportedSchema("schema whose grammar llama.cpp does not compile", "")
    llama_cpp.llama_sampler_free(stage)
