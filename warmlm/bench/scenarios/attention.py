"""`attention`: llama.cpp's two attention paths on the work a server does, raw `llama_decode`.

`--flash-attn auto` (warmlm's default; llama.cpp turns flash attention on for the CPU) against
`off` (llama-cpp-python's default), and `auto` with upstream llama.cpp's choice of attention
kernel (`GGML_FA_TILED_MIN_ROWS=64`, which undoes warmlm's engine patch: scripts/engine):
a returning turn's short prefill after a long history, alone in the KV and beside other cached
conversations, and decode steps of several long sequences. Each mode runs in its own process,
since the patched llama.cpp reads its variable once. Not part of `all`: it has no target, it
shows what `--flash-attn` and the patch trade.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from warmlm.bench.ceiling import CTX_ALIGN, filler_tokens, prefill
from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.scenarios.base import Needs, Result, Scenario
from warmlm.bench.stats import median, rate

# name → (--flash-attn, environment of the measuring process)
MODES: dict[str, tuple[str, dict[str, str]]] = {
    "auto": ("auto", {}),
    "auto, upstream kernel choice": ("auto", {"GGML_FA_TILED_MIN_ROWS": "64"}),
    "off": ("off", {}),
}
N_BATCH = 512


@dataclass(frozen=True)
class AttentionPlan:
    history: int = 1100  # tokens already in KV when the turn arrives
    turn: int = 21  # the turn's new tokens, prefilled in one step
    others: int = 3  # other conversations of `history` tokens cached beside it
    batches: tuple[int, ...] = (4, 8)  # sequences decoded at once
    depth: int = 1000  # tokens of each decoded sequence before the timed steps
    steps: int = 16
    repeats: int = 5

    @classmethod
    def from_json(cls, data: dict) -> AttentionPlan:
        return cls(**{**data, "batches": tuple(data["batches"])})

    def n_ctx(self) -> int:
        need = max(
            (self.others + 1) * (self.history + self.turn),
            max(self.batches) * (self.depth + self.steps + 1),
        )
        return -(-need // CTX_ALIGN) * CTX_ALIGN


class AttentionProbe:
    """A ModelRunner with a server-like context (unified KV) and the given flash attention."""

    def __init__(self, path: Path, threads: int, plan: AttentionPlan, flash_attn: str) -> None:
        from warmlm.engine.runner import ModelRunner

        self.plan = plan
        n_seq = max(plan.others + 1, *plan.batches)
        self.runner = ModelRunner(
            path, plan.n_ctx(), n_seq, N_BATCH, threads, flash_attn=flash_attn
        )
        need = max(plan.history, plan.depth) + plan.turn + plan.steps
        self.tokens = filler_tokens(self.runner, need, seed=5)

    def close(self) -> None:
        self.runner.close()

    def _turn(self) -> float:
        """Seconds of one `turn`-token step after `history` in sequence 0, then undone."""
        from warmlm.engine.runner import BatchToken

        p = self.plan
        positions = range(p.history, p.history + p.turn)
        batch = [BatchToken(self.tokens[q], q, 0, q == positions[-1]) for q in positions]
        t0 = time.perf_counter()
        self.runner.decode(batch)
        seconds = time.perf_counter() - t0
        self.runner.seq_rm(0, p.history, -1)
        return seconds

    def turn_seconds(self) -> tuple[float, float]:
        """Median seconds of the turn with its history alone in KV, then with `others` cached
        beside it (the history is prefilled once; a first, untimed turn pays one-off costs)."""
        p = self.plan
        self.runner.clear()
        prefill(self.runner, self.tokens, p.history, range(1), N_BATCH)
        self._turn()
        alone = median([self._turn() for _ in range(p.repeats)]) or 0.0
        prefill(self.runner, self.tokens, p.history, range(1, p.others + 1), N_BATCH)
        beside = median([self._turn() for _ in range(p.repeats)]) or 0.0
        return alone, beside

    def decode_tps(self, batch: int) -> float | None:
        """Tokens/s of `steps` steps of one token for each of `batch` sequences at `depth`."""
        from warmlm.engine.runner import BatchToken

        p = self.plan
        self.runner.clear()
        prefill(self.runner, self.tokens, p.depth, range(batch), N_BATCH)
        t0 = time.perf_counter()
        for step in range(p.steps):
            pos = p.depth + step
            self.runner.decode([BatchToken(self.tokens[pos], pos, s, True) for s in range(batch)])
        return rate(batch * p.steps, time.perf_counter() - t0)


def measure(path: Path, threads: int, plan: AttentionPlan, mode: str) -> Result:
    flash_attn, _ = MODES[mode]
    probe = AttentionProbe(path, threads, plan, flash_attn)
    try:
        alone, beside = probe.turn_seconds()
        return {
            "flash_attn": mode,
            "turn_alone_s": alone,
            "turn_beside_others_s": beside,
            "decode": [{"batch": b, "tps": probe.decode_tps(b)} for b in plan.batches],
        }
    finally:
        probe.close()


def measure_in_process(path: Path, threads: int, plan: AttentionPlan, mode: str) -> Result:
    """`measure` in a fresh Python process with the mode's environment."""
    args = json.dumps([str(path), threads, asdict(plan), mode])
    code = "from warmlm.bench.scenarios.attention import child; child()"
    env = {k: v for k, v in os.environ.items() if k != "GGML_FA_TILED_MIN_ROWS"}
    env.update(MODES[mode][1])  # a variable set in the shell must not turn every mode into one
    done = subprocess.run(
        [sys.executable, "-c", code, args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"attention probe '{mode}' failed: {done.stderr.strip()[-2000:]}")
    result: Result = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def child() -> None:
    """The measuring process: arguments as JSON in argv[1], the result as JSON on stdout."""
    path, threads, plan, mode = json.loads(sys.argv[1])
    print(json.dumps(measure(Path(path), threads, AttentionPlan.from_json(plan), mode)))


class Attention(Scenario):
    name = "attention"
    title = "Flash attention on and off"
    order = 95  # by name only (not in `all`)
    in_all = False
    needs = Needs.NOTHING

    async def run(self, ctx: BenchContext) -> Result:
        plan = AttentionPlan()
        path = ctx.model_path()
        modes = []
        with ctx.progress(len(MODES), "attention") as bar:
            for mode in MODES:
                modes.append(measure_in_process(path, ctx.options.threads, plan, mode))
                bar.update()
        return {"threads": ctx.options.threads, "plan": asdict(plan), "modes": modes}

    def markdown(self, result: Result) -> str:
        p = result["plan"]
        head = [
            "--flash-attn",
            f"turn after {p['history']} tokens, alone: ms",
            f"the same, {p['others']} other conversations cached: ms",
            *(f"decode B={b} at {p['depth']} tokens: tok/s" for b in p["batches"]),
        ]
        rows = [
            [
                m["flash_attn"],
                ms(m["turn_alone_s"]),
                ms(m["turn_beside_others_s"]),
                *(fmt(d["tps"]) for d in m["decode"]),
            ]
            for m in result["modes"]
        ]
        return (
            f"Raw `llama_decode`, {result['threads']} threads, unified KV of "
            f"{AttentionPlan.from_json(p).n_ctx()} cells. A turn = "
            f"{p['turn']} new tokens prefilled in one step after a {p['history']}-token history "
            f"(median of {p['repeats']}); beside it, {p['others']} other conversations of as many "
            "tokens cached in the KV, as a server keeps them. Decode = "
            f"{p['steps']} steps of one token for each of B sequences of {p['depth']} tokens. "
            "`auto` turns flash attention on for the CPU; *upstream kernel choice* runs it with "
            "`GGML_FA_TILED_MIN_ROWS=64`, llama.cpp's own choice of attention kernel without "
            "warmlm's engine patch (scripts/engine/README.md). Each mode runs in its own "
            "process.\n\n" + table(head, rows)
        )


SCENARIO = Attention()
