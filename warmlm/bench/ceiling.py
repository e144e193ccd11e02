"""The ceiling probe: raw `llama_decode` throughput, no HTTP, no sampling, no detokenizing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warmlm.bench.prompts import filler_text
from warmlm.bench.stats import median, rate

if TYPE_CHECKING:
    from warmlm.engine.runner import BatchToken, ModelRunner

WARMUP_STEPS = 2
CTX_ALIGN = 256


@dataclass(frozen=True)
class CeilingPlan:
    """What to measure: decode at each batch size B, and prefill of each prompt length."""

    batches: tuple[int, ...]
    tokens: int
    prompt_tokens: int
    prefill: tuple[int, ...]
    repeats: int
    n_batch: int = 512

    def n_ctx(self, wanted: int) -> int:
        """A context at least `wanted` and large enough for every measurement of the plan."""
        decode = max(self.batches) * (self.prompt_tokens + self.tokens + WARMUP_STEPS)
        need = max(wanted, decode, max(self.prefill, default=0))
        return -(-need // CTX_ALIGN) * CTX_ALIGN


def filler_tokens(runner: ModelRunner, n: int, seed: int) -> list[int]:
    """n tokens of `filler_text` (repeated if the text tokenizes shorter)."""
    tokens = runner.tokenize(filler_text(n, seed), add_special=False, parse_special=False) or [0]
    return (tokens * (n // len(tokens) + 1))[:n]


def _chunks(items: list[BatchToken], size: int) -> Iterator[list[BatchToken]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def prefill(runner: ModelRunner, tokens: list[int], n: int, seq_ids: range, n_batch: int) -> None:
    """tokens[:n] at positions 0..n-1 of each sequence, in batches of n_batch, logits last."""
    from warmlm.engine.runner import BatchToken

    batch = [BatchToken(tokens[p], p, s, p == n - 1) for s in seq_ids for p in range(n)]
    for chunk in _chunks(batch, n_batch):
        runner.decode(chunk)


class CeilingProbe:
    """A ModelRunner with a context made like the server's: unified KV, n_seq_max ≥ max(B)."""

    def __init__(self, model_path: Path, threads: int, n_ctx: int, plan: CeilingPlan) -> None:
        from warmlm.engine.runner import ModelRunner

        self.plan = plan
        self.runner: ModelRunner = ModelRunner(
            model_path, n_ctx, max(plan.batches), plan.n_batch, threads
        )
        need = max(plan.prompt_tokens, max(plan.prefill, default=0)) + 1
        self.text_tokens = filler_tokens(self.runner, need, seed=7)

    def close(self) -> None:
        self.runner.close()

    def warm_up(self) -> None:
        """The first call's one-off costs, not measured."""
        self.prefill_seconds(min(16, self.plan.prompt_tokens))

    def _prefill(self, n: int, seq_ids: range) -> None:
        prefill(self.runner, self.text_tokens, n, seq_ids, self.plan.n_batch)

    def decode_tps(self, batch: int) -> float | None:
        """Tokens/s of `tokens` steps that each decode one token of each of `batch` sequences."""
        from warmlm.engine.runner import BatchToken

        self.runner.clear()
        n = self.plan.prompt_tokens
        self._prefill(n, range(batch))
        token = self.text_tokens[n]
        t0 = 0.0
        for step in range(WARMUP_STEPS + self.plan.tokens):
            if step == WARMUP_STEPS:
                t0 = time.perf_counter()
            self.runner.decode([BatchToken(token, n + step, s, True) for s in range(batch)])
        return rate(batch * self.plan.tokens, time.perf_counter() - t0)

    def prefill_seconds(self, n: int) -> float:
        """Seconds to prefill n tokens of one sequence, in batches of n_batch tokens."""
        self.runner.clear()
        t0 = time.perf_counter()
        self._prefill(n, range(1))
        return time.perf_counter() - t0


def _repeat(fn: Callable[[], float | None], times: int, tick: Callable[[], None]) -> list[float]:
    out = []
    for _ in range(times):
        value = fn()
        tick()
        if value is not None:
            out.append(value)
    return out


def measure(probe: CeilingProbe, tick: Callable[[], None]) -> dict[str, Any]:
    """Every measurement of the plan; each figure is the median of `repeats` runs."""
    plan = probe.plan
    probe.warm_up()
    decode = []
    for b in plan.batches:
        samples = _repeat(partial(probe.decode_tps, b), plan.repeats, tick)
        decode.append({"batch": b, "tps": median(samples), "samples": samples})
    prefill = []
    for n in plan.prefill:
        samples = _repeat(partial(probe.prefill_seconds, n), plan.repeats, tick)
        seconds = median(samples)
        prefill.append(
            {"tokens": n, "seconds": seconds, "tps": rate(n, seconds), "samples": samples}
        )
    return {"decode": decode, "prefill": prefill}


def steps_of(plan: CeilingPlan) -> int:
    return plan.repeats * (len(plan.batches) + len(plan.prefill))
