"""End to end: /v1/classify, `warmlm classify`, `chat --sentiment` and structured output on real
models (SmolLM2 for English, Qwen for Chinese and JSON schemas)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import ROOT, SMOLLM
from warmlm.bench.scenarios.classify import SCHEMAS

pytestmark = pytest.mark.e2e

POSITIVE = [
    "I absolutely love this phone. The screen is gorgeous and the battery lasts for days.",
    "Wonderful hotel, friendly staff and a spotless room. I would happily stay again.",
]
NEGATIVE = [
    "Terrible product. It broke after two days and support never answered my emails.",
    "The food was cold, the waiter was rude and we waited an hour. Never again.",
]
CHINESE = {
    "这家餐厅的菜非常好吃，服务也很热情，下次还会再来。": "positive",
    "手机用了三天就坏了，客服也不理人，太失望了。": "negative",
    "酒店房间干净整洁，位置很方便，住得很舒服。": "positive",
    "质量太差了，衣服洗一次就变形，再也不买了。": "negative",
}


def classify(url: str, **body: Any) -> httpx.Response:
    return httpx.post(url + "/v1/classify", json=body, timeout=120)


def test_english_reviews_in_one_batched_call(smol_url: str) -> None:
    r = classify(smol_url, input=POSITIVE + NEGATIVE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == SMOLLM
    labels = [d["label"] for d in body["data"]]
    assert labels == ["positive"] * len(POSITIVE) + ["negative"] * len(NEGATIVE)
    for i, item in enumerate(body["data"]):
        assert item["index"] == i
        assert sum(item["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert all(lp < 0 for lp in item["logprobs"].values())
    usage = body["usage"]
    assert usage["total_tokens"] >= usage["prompt_tokens"] > usage["cached_tokens"] > 0


def test_the_instruction_prefix_stays_cached_across_calls(smol_url: str) -> None:
    first = classify(smol_url, input=POSITIVE[0], task="Is this review happy?", labels=["a", "b"])
    again = classify(smol_url, input=NEGATIVE[0], task="Is this review happy?", labels=["a", "b"])
    assert first.status_code == again.status_code == 200
    usage = again.json()["usage"]
    assert usage["cached_tokens"] > 0 and usage["cached_tokens"] < usage["prompt_tokens"]


def test_multi_token_labels(smol_url: str) -> None:
    labels = ["sports and athletics", "cooking recipes", "computer programming"]
    task = "Which topic is this text about?"
    texts = [
        "The striker scored twice and the team won the championship final.",
        "Whisk the eggs with sugar, fold in the flour and bake for thirty minutes.",
    ]
    r = classify(smol_url, input=texts, labels=labels, task=task)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["label"] for d in data] == labels[:2]
    for item in data:
        assert set(item["probabilities"]) == set(labels)
        assert sum(item["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)


def test_multi_label_judges_each_label_alone(smol_url: str) -> None:
    r = classify(smol_url, input=POSITIVE[0], labels=["phone", "food"], multi_label=True)
    assert r.status_code == 200, r.text
    item = r.json()["data"][0]
    assert all(0.0 <= p <= 1.0 for p in item["probabilities"].values())
    assert item["labels"] == [k for k, p in item["probabilities"].items() if p >= 0.5]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": "ok", "labels": ["x", "x"]}, "labels"),
        ({"input": "ok", "labels": [f"l{i}" for i in range(65)]}, "labels"),
        ({"input": ["ok"] * 257}, "input"),
        ({"input": "word " * 5000}, "input"),
    ],
)
def test_bad_requests_get_the_error_object(smol_url: str, body: dict, param: str) -> None:
    r = classify(smol_url, **body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"]


def warmlm(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warmlm.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_classify_against_a_server(smol_url: str) -> None:
    out = warmlm("classify", POSITIVE[0], NEGATIVE[0], "--url", smol_url, "--json")
    assert out.returncode == 0, out.stderr
    assert [d["label"] for d in json.loads(out.stdout)["data"]] == ["positive", "negative"]


def test_cli_classify_in_process_with_labels() -> None:
    args = ("classify", NEGATIVE[1], "--labels", "negative", "positive")
    out = warmlm(*args, "--model", SMOLLM, "--threads", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("negative 0.")


def test_cli_classify_bad_labels_exit_2() -> None:
    out = warmlm("classify", "text", "--labels", "a", "a")
    assert out.returncode == 2 and "duplicate label" in out.stderr


def test_chat_shows_the_sentiment_before_the_reply(smol_url: str) -> None:
    args = ("chat", "--url", smol_url, "--sentiment", "--max-tokens", "4", "--temperature", "0")
    out = warmlm(*args, stdin=POSITIVE[1] + "\n\n")
    assert out.returncode == 0, out.stderr
    sentiment = out.stdout.index("[sentiment: positive")
    assert sentiment < out.stdout.index("bot> ")


# -- Qwen: Chinese, and JSON schemas ---------------------------------------------------------------
@pytest.mark.qwen
def test_chinese_reviews(qwen_url: str) -> None:
    r = classify(qwen_url, input=list(CHINESE))
    assert r.status_code == 200, r.text
    assert [d["label"] for d in r.json()["data"]] == list(CHINESE.values())


@pytest.mark.qwen
def test_chinese_labels(qwen_url: str) -> None:
    texts = list(CHINESE)[:2]
    r = classify(qwen_url, input=texts, labels=["正面", "负面"], task="判断这条评论的情感。")
    assert r.status_code == 200, r.text
    assert [d["label"] for d in r.json()["data"]] == ["正面", "负面"]


def chat(url: str, prompt: str, fmt: dict[str, Any]) -> httpx.Response:
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": 160,
        "response_format": fmt,
    }
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=120)


@pytest.mark.qwen
@pytest.mark.parametrize(
    ("prompt", "schema"), [s[1:] for s in SCHEMAS], ids=[s[0] for s in SCHEMAS]
)
def test_json_schema_output_parses_and_validates(
    qwen_url: str, prompt: str, schema: dict[str, Any]
) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    r = chat(qwen_url, prompt, fmt)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    jsonschema.validate(json.loads(choice["message"]["content"]), schema)


@pytest.mark.qwen
def test_json_object_output_parses(qwen_url: str) -> None:
    r = chat(qwen_url, "Describe a cat in JSON.", {"type": "json_object"})
    assert r.status_code == 200, r.text
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)


@pytest.mark.qwen
def test_unsupported_schema_is_400_naming_the_feature(qwen_url: str) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}}
    r = chat(
        qwen_url, "hi", {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    )
    assert r.status_code == 400 and "minimum" in r.json()["error"]["message"]
