"""Eight greedy prompts in flight at once: no cross-talk, and each equals its solo run up to a
near-tie (llama.cpp's batched kernels round differently from single-sequence ones)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.conftest import QWEN, installed, model_path
from warmlm.config import EngineConfig
from warmlm.engine.engine import Engine
from warmlm.engine.kvstore import KVStore, model_fingerprint
from warmlm.engine.request import Request, SamplingParams, StreamEvent
from warmlm.engine.runner import ModelRunner
from warmlm.tasks.chat import ChatTemplate, Message

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not installed(QWEN), reason="Qwen not installed")]

WORDS = ["PELICAN", "ZEBRA", "MANGO", "TORNADO", "VIOLIN", "GLACIER", "CACTUS", "LANTERN"]
NEAR_TIE = 1.0


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    path = model_path(QWEN)
    runner = ModelRunner(path, n_ctx=4096, n_seq_max=8, n_batch=512, threads=2)
    yield Engine(runner, EngineConfig(model_path=path, n_ctx=4096, parallel=8))
    runner.close()


def prompt(engine: Engine, word: str) -> list[int]:
    tpl = ChatTemplate(engine.runner.chat_template(), **engine.runner.special_tokens())
    text = tpl.render([Message("user", f"Repeat this code word three times, nothing else: {word}")])
    return engine.runner.tokenize(text)


def run(engine: Engine, prompts: list[list[int]]) -> tuple[list[Request], dict[str, list[float]]]:
    margins: dict[str, list[float]] = {}

    def observe(req: Request, index: int) -> None:
        top2 = np.sort(engine.runner.logits(index))[-2:]
        margins.setdefault(req.request_id, []).append(float(top2[1] - top2[0]))

    engine.logits_probe = observe
    done: list[StreamEvent] = []
    params = SamplingParams(max_tokens=20, temperature=0.0)
    reqs = [
        engine.new_request(p, params, lambda ev: done.append(ev) if ev.finished else None)
        for p in prompts
    ]
    for r in reqs:
        engine.add_request(r)
    while len(done) < len(reqs):
        engine.step()
    engine.logits_probe = None
    return reqs, margins


def test_eight_concurrent_prompts_match_solo_runs(engine: Engine) -> None:
    prompts = [prompt(engine, w) for w in WORDS]
    solo = [run(engine, [p]) for p in prompts]
    batched, _ = run(engine, prompts)
    for word, (solo_reqs, margins), got in zip(WORDS, solo, batched, strict=True):
        want = solo_reqs[0]
        text = engine.runner.detokenize(got.output_tokens)
        assert word in text.upper(), f"{word!r} missing from {text!r}"
        others = [w for w in WORDS if w != word and w in text.upper()]
        assert not others, f"reply for {word} holds {others}: {text!r}"
        k = first_difference(want.output_tokens, got.output_tokens)
        if k is not None:
            m = margins[want.request_id][k]
            assert m < NEAR_TIE, f"{word}: diverged from its solo run at {k}, margin {m:.2f}"


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def test_interleaved_sessions_with_eviction_never_see_each_other() -> None:
    """Eight conversations, three turns each, interleaved over 2 running + 2 cached slots, so
    sessions are evicted to RAM and restored between turns; no reply holds a foreign word."""
    path = model_path(QWEN)
    cfg = EngineConfig(model_path=path, n_ctx=4096, parallel=2, cache_slots=2)
    runner = ModelRunner(path, n_ctx=4096, n_seq_max=cfg.n_seq_max, n_batch=512, threads=2)
    try:
        store = KVStore(model_fingerprint(path), 64 << 20)
        engine = Engine(runner, cfg, store=store)
        tpl = ChatTemplate(runner.chat_template(), **runner.special_tokens())
        history = {w: [Message("system", f"Your secret code word is {w}.")] for w in WORDS}
        for turn in range(3):
            for word in WORDS:
                history[word].append(Message("user", f"Turn {turn}: what is your code word?"))
                tokens = runner.tokenize(tpl.render(history[word]))
                out = engine.generate(tokens, SamplingParams(max_tokens=12, temperature=0.0))
                others = [w for w in WORDS if w != word and w in out.text.upper()]
                assert not others, f"{word} session saw {others}: {out.text!r}"
                if turn:
                    assert out.cached_tokens > 0
                history[word].append(Message("assistant", out.text))
        assert engine.kv.stats["restores"] > 0 and engine.kv.stats["evictions"] > 0
    finally:
        runner.close()
