"""Classification: request checks, prompts, label scoring math, metrics, and the /v1/classify
route on a simulated model (no real model needed)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.test_app import _wait_status
from tests.test_scoring import SimRunner, true_logprob
from warmlm.config import EngineConfig, ServerConfig
from warmlm.engine.engine import Engine
from warmlm.engine.scoring import LAST, ScoreResult
from warmlm.server.app import create_app
from warmlm.service import Service
from warmlm.tasks.chat import ChatTemplate
from warmlm.tasks.classify import (
    DEFAULT_LABELS,
    MAX_INPUTS,
    MAX_LABELS,
    SENTIMENT_PROMPT,
    Classifier,
    ClassifyError,
    ClassifyRequest,
    Confusion,
    casings,
    format_item,
    instruction,
    item_result,
    label_branches,
    softmax,
)

VOCAB = 97
SPECIALS = {"<|im_start|>": 90, "<|im_end|>": 91}


@dataclass
class TextSimRunner(SimRunner):
    """SimRunner plus a tokenizer: one token per character, ChatML markers as single tokens."""

    n_vocab: int = VOCAB
    n_seq_max: int = 40

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list:
        out = [1] if add_special else []
        i = 0
        while i < len(text):
            for mark, tok in SPECIALS.items():
                if parse_special and text.startswith(mark, i):
                    out.append(tok)
                    i += len(mark)
                    break
            else:
                out.append(2 + ord(text[i]) % 85)
                i += 1
        return out

    def chat_template(self) -> None:
        return None

    def special_tokens(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        pass


def tok(runner: TextSimRunner):
    return lambda text, add, parse: runner.tokenize(text, add, parse)


# -- the request ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "param", "match"),
    [
        ({"inputs": []}, "input", "must not be empty"),
        ({"inputs": ""}, "input", "empty"),
        ({"inputs": ["ok", "  "]}, "input[1]", "empty"),
        ({"inputs": ["x"] * (MAX_INPUTS + 1)}, "input", "at most 256"),
        ({"inputs": "x", "labels": []}, "labels", "must not be empty"),
        ({"inputs": "x", "labels": ["a", "b", "a"]}, "labels", "duplicate"),
        ({"inputs": "x", "labels": [f"l{i}" for i in range(MAX_LABELS + 1)]}, "labels", "64"),
        ({"inputs": "x", "labels": ["a", ""]}, "labels[1]", "empty"),
        ({"inputs": "x", "task": " "}, "task", "empty"),
    ],
)
def test_bad_requests_are_rejected_naming_the_field(kwargs: dict, param: str, match: str) -> None:
    with pytest.raises(ClassifyError, match=match) as info:
        ClassifyRequest.build(**kwargs)
    assert info.value.param == param


def test_defaults_are_sentiment_with_positive_and_negative() -> None:
    req = ClassifyRequest.build("fine")
    assert req.inputs == ("fine",) and req.labels == DEFAULT_LABELS and req.task == "sentiment"
    assert not req.multi_label


def test_instructions() -> None:
    assert instruction("sentiment", DEFAULT_LABELS, False) == SENTIMENT_PROMPT
    assert "中文" in SENTIMENT_PROMPT and "English" in SENTIMENT_PROMPT
    custom = instruction("Which topic is this news about?", ["sports", "tech"], False)
    assert custom.startswith("Which topic") and "sports, tech" in custom
    assert "yes" in instruction("Tag it.", ["a"], True)


# -- label forms and math -------------------------------------------------------------------------
def test_label_branches_decode_all_but_the_last_token() -> None:
    one, two = label_branches([[5], [6, 7, 8]], eot=99)
    assert one.tokens == () and one.picks == ((LAST, 5),)
    assert two.tokens == (6, 7) and two.picks == ((LAST, 6), (0, 7), (1, 8))


def test_a_label_that_starts_another_is_scored_to_the_end_of_turn() -> None:
    short, long = label_branches([[5], [5, 6]], eot=99)
    assert short.picks == ((LAST, 5), (0, 99))
    assert long.picks == ((LAST, 5), (0, 6), (1, 99))


def test_casings_count_as_the_same_label() -> None:
    def split(text: str, add: bool, parse: bool) -> list[int]:
        return [ord(c) for c in text]

    forms, groups = casings(["positive", "Sports"], split)
    names = ["".join(map(chr, f)) for f in forms]
    assert [[names[i] for i in g] for g in groups] == [
        ["positive", "Positive"],
        ["Sports", "sports"],
    ]
    forms, groups = casings(["yes", "Yes"], split)
    assert groups == ((0,), (1,)), "labels that differ only in case keep their exact forms"


def test_probabilities_are_the_softmax_of_summed_logprobs() -> None:
    runner = TextSimRunner()
    clf = Classifier(ChatTemplate(None), tok(runner), 4096)
    req = ClassifyRequest.build("x", labels=["ab", "c"])
    prompt = clf.prompt(req.task, req.labels, False)
    # forms: ab, Ab, c, C; sums -1.0, -2.0, -0.5, -3.0
    scores = [[-0.4, -0.6], [-1.5, -0.5], [-0.5], [-3.0]]
    item = item_result(0, req, prompt, scores)
    ab = math.log(math.exp(-1.0) + math.exp(-2.0))
    c = math.log(math.exp(-0.5) + math.exp(-3.0))
    assert item["logprobs"] == pytest.approx({"ab": ab, "c": c})
    assert item["probabilities"] == pytest.approx(
        dict(zip(["ab", "c"], softmax([ab, c]), strict=True))
    )
    assert item["label"] == "c" and sum(item["probabilities"].values()) == pytest.approx(1.0)


def test_multi_label_is_yes_against_no_per_label() -> None:
    runner = TextSimRunner()
    clf = Classifier(ChatTemplate(None), tok(runner), 4096)
    req = ClassifyRequest.build("x", labels=["a", "b"], multi_label=True)
    prompt = clf.prompt(req.task, req.labels, True)
    n_yes, n_no = prompt.yes_no
    assert (n_yes, n_no) == (2, 2)
    scores = [[math.log(0.6), math.log(0.1), math.log(0.2), math.log(0.1)], [-5, -5, -1, -1]]
    item = item_result(0, req, prompt, scores)
    assert item["probabilities"]["a"] == pytest.approx(0.7 / 1.0)
    assert item["logprobs"]["a"] == pytest.approx(math.log(0.7))
    assert item["labels"] == ["a"] and item["label"] == "a"


# -- the classifier on a simulated model ----------------------------------------------------------
def test_prompt_prefix_is_everything_before_the_input() -> None:
    runner = TextSimRunner()
    clf = Classifier(ChatTemplate(None), tok(runner), 4096)
    prepared = clf.prepare(ClassifyRequest.build(["hi", "there"]))
    text_of = {v: k for k, v in SPECIALS.items()}
    tail = "".join(text_of.get(t, "?") for t in prepared.prompt.tail)
    assert tail == "<|im_end|>?<|im_start|>??????????"  # end of turn, \n, assistant header
    assert list(prepared.task.items[0].tokens) == runner.tokenize("hi", False, False) + list(
        prepared.prompt.tail
    )
    assert prepared.prompt.prefix[-1] == runner.tokenize("\n", False, False)[0]


def test_classify_on_a_simulated_model_matches_brute_force() -> None:
    runner = TextSimRunner()
    engine = Engine(runner, EngineConfig(Path("f.gguf"), parallel=1, cache_slots=1))  # type: ignore[arg-type]
    clf = Classifier(ChatTemplate(None), tok(runner), runner.n_ctx)
    labels = ["yes", "no", "maybe so"]
    prepared = clf.prepare(ClassifyRequest.build(["one input", "two"], labels, task="Answer."))
    result = engine.run_task(prepared.task)
    assert isinstance(result, ScoreResult)
    body = prepared.response(result, "sim")
    assert [d["index"] for d in body["data"]] == [0, 1]
    for i in range(2):
        context = tuple(prepared.prompt.prefix) + tuple(prepared.task.items[i].tokens)
        want = {}
        for name in labels:
            forms = {name, name.capitalize()}
            lps = [
                true_logprob(context, tuple(runner.tokenize(f, False, False)), VOCAB) for f in forms
            ]
            want[name] = math.log(sum(math.exp(x) for x in lps))
        assert body["data"][i]["logprobs"] == pytest.approx(want, abs=1e-5)
    n_prefix = len(prepared.prompt.prefix)
    assert body["usage"]["cached_tokens"] == n_prefix  # computed once, reused by the second
    assert body["usage"]["prompt_tokens"] == 2 * n_prefix + sum(prepared.item_tokens)


def test_an_input_over_the_context_is_rejected_before_any_work() -> None:
    runner = TextSimRunner()
    clf = Classifier(ChatTemplate(None), tok(runner), 400)
    with pytest.raises(ClassifyError, match="context") as info:
        clf.prepare(ClassifyRequest.build(["short", "long " * 80], task="Answer."))
    assert info.value.param == "input[1]" and info.value.code == "context_length_exceeded"


# -- metrics and formatting -----------------------------------------------------------------------
def test_confusion_accuracy_and_macro_f1() -> None:
    c = Confusion(["pos", "neg"])
    for truth, pred in [("pos", "pos")] * 3 + [("pos", "neg")] + [("neg", "neg")] * 2:
        c.add(truth, pred)
    assert c.accuracy() == pytest.approx(5 / 6)
    f1_pos, f1_neg = 2 * 3 / (2 * 3 + 0 + 1), 2 * 2 / (2 * 2 + 1 + 0)
    assert c.macro_f1() == pytest.approx((f1_pos + f1_neg) / 2)
    assert c.rows() == [["pos", 3, 1], ["neg", 0, 2]]


def test_format_item() -> None:
    item = {"label": "positive", "probabilities": {"positive": 0.9, "negative": 0.1}}
    assert format_item(item) == "positive 0.90 (negative 0.10)"


# -- the route ------------------------------------------------------------------------------------
def _service(cfg: ServerConfig) -> Service:
    def locate(name: str) -> tuple[Path, str | None]:
        return Path("fake.gguf"), None

    def runner(config: EngineConfig) -> TextSimRunner:
        return TextSimRunner(n_ctx=config.n_ctx, n_seq_max=config.n_seq_max)

    def config(path: Path) -> EngineConfig:
        return EngineConfig(path, n_ctx=cfg.ctx, parallel=1, cache_slots=2, score_slots=8)

    return Service(cfg.model, locate, config, runner)


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_app(ServerConfig(model="fake", ctx=2048), service_factory=_service)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        _wait_status(c, "ready")
        yield c


def test_route_answers_every_input(client: TestClient) -> None:
    r = client.post("/v1/classify", json={"input": ["good", "bad", "meh"], "model": "fake"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "fake" and len(body["data"]) == 3
    for i, item in enumerate(body["data"]):
        assert item["index"] == i and item["label"] in DEFAULT_LABELS
        assert set(item["probabilities"]) == set(DEFAULT_LABELS) == set(item["logprobs"])
        assert sum(item["probabilities"].values()) == pytest.approx(1.0)
    usage = body["usage"]
    assert usage["total_tokens"] >= usage["prompt_tokens"] > usage["cached_tokens"] > 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": "x", "labels": []}, "labels"),
        ({"input": "x", "labels": ["a", "a"]}, "labels"),
        ({"input": "x", "labels": [str(i) for i in range(65)]}, "labels"),
        ({"input": ["x"] * 257}, "input"),
        ({"input": "word " * 500}, "input"),
        ({"input": "x", "multi_label": "perhaps"}, "multi_label"),
        ({"input": "x", "bogus": 1}, "bogus"),
    ],
)
def test_route_rejects_bad_input_with_the_error_object(
    client: TestClient, body: dict, param: str
) -> None:
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"]


def test_route_unknown_model_is_404(client: TestClient) -> None:
    r = client.post("/v1/classify", json={"input": "x", "model": "other"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
