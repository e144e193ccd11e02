"""`multiturn`: a document, then questions, each turn resending the whole conversation.

The conversation is repeated over other documents (each its own, so none finds another's prompt
cached) and each turn's TTFT is the median over them: one sample of a 400 ms turn on a noisy
machine says little. A slow server runs fewer: no conversation starts after BUDGET_S.

The conversations run twice: back to back (each question sent the moment the answer ends, as
a program would) and with a reader's pause before each question (PAUSE_S; people take
longer), which a server may use to prepare for the next turn.
"""

from __future__ import annotations

import asyncio
import time

from tqdm import tqdm

from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.prompts import chat
from warmlm.bench.scenarios._conversation import (
    Conversation,
    TokenScale,
    TurnClient,
    document,
    new_codes,
)
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.stats import median, ratio
from warmlm.bench.targets import Target

LAST_TO_FIRST_GOAL = 0.08
WARMUP_PROMPT = "Say hello."
DOC_SEED = 11
PAUSED_DOC_SEED = 111
BUDGET_S = 120.0
PAUSE_S = 1.0


def new_tokens(turn: Result) -> int | None:
    """Prompt tokens the server had to prefill: those it did not have cached."""
    prompt, cached = turn.get("prompt_tokens"), turn.get("cached_tokens")
    return None if prompt is None or cached is None else prompt - cached


def median_turns(conversations: list[list[Result]]) -> list[Result]:
    """Turn k of the first conversation, its TTFT the median of every conversation's turn k."""
    out = []
    for k, first in enumerate(conversations[0]):
        ttfts = [c[k]["ttft_s"] for c in conversations if c[k]["ttft_s"] is not None]
        out.append(
            {
                **first,
                "ttft_s": median(ttfts),
                "ttft_each_s": [c[k]["ttft_s"] for c in conversations],
            }
        )
    return out


async def _conversation(
    ctx: BenchContext, client: TurnClient, code: str, doc: str, pause: float, bar: tqdm
) -> list[Result]:
    conv = Conversation(code, doc)
    turns = []
    for i in range(ctx.options.multiturn_turns):
        if i and pause:
            await asyncio.sleep(pause)
        turns.append((await client.turn(conv, ctx.options.multiturn_max_tokens)).to_dict())
        bar.update()
    return turns


async def _conversations(
    ctx: BenchContext, client: TurnClient, scale: TokenScale, seed: int, pause: float, bar: tqdm
) -> list[list[Result]]:
    """The conversations of one pass, each over its own document; none starts after BUDGET_S."""
    out: list[list[Result]] = []
    started = time.perf_counter()
    for i, code in enumerate(new_codes(ctx.options.multiturn_conversations)):
        if out and time.perf_counter() - started > BUDGET_S:
            break
        doc = document(ctx.options.multiturn_doc_tokens, scale, seed + i)
        out.append(await _conversation(ctx, client, code, doc, pause, bar))
    return out


class MultiTurn(Scenario):
    name = "multiturn"
    title = "Multi-turn conversation"
    order = 60
    needs = Needs.SERVER

    async def run(self, ctx: BenchContext) -> Result:
        o = ctx.options
        if o.multiturn_turns < 2:
            raise ValueError("multiturn needs at least 2 turns")
        url = await ctx.server_url()
        async with TurnClient(url, api_key=o.api_key) as client:
            await client.discover_model()
            await client.reply(chat(WARMUP_PROMPT), 4)  # untimed: a peer may start lazily
            scale = await client.token_scale()
            total = 2 * o.multiturn_conversations * o.multiturn_turns
            with ctx.progress(total, "multiturn") as bar:
                conversations = await _conversations(ctx, client, scale, DOC_SEED, 0.0, bar)
                paused = await _conversations(ctx, client, scale, PAUSED_DOC_SEED, PAUSE_S, bar)
        turns, paused_turns = median_turns(conversations), median_turns(paused)
        return {
            "doc_tokens": o.multiturn_doc_tokens,
            "tokens_per_word": scale.per_word,
            "tokens_per_word_measured": scale.measured,
            "max_tokens": o.multiturn_max_tokens,
            "conversations": conversations,
            "turns": turns,
            "last_over_first": ratio(turns[-1]["ttft_s"], turns[0]["ttft_s"]),
            "paused": {"pause_s": PAUSE_S, "conversations": paused, "turns": paused_turns},
        }

    def markdown(self, result: Result) -> str:
        n = len(result.get("conversations") or [result["turns"]])
        paused = result.get("paused") or {}
        pause = paused.get("pause_s")
        after = paused.get("turns") or []
        rows = []
        for i, t in enumerate(result["turns"]):
            each = t.get("ttft_each_s") or [t["ttft_s"]]
            rows.append(
                [
                    i + 1,
                    _count(t["prompt_tokens"]),
                    _count(t["cached_tokens"]),
                    _count(new_tokens(t)),
                    ms(t["ttft_s"]),
                    " · ".join(ms(x) for x in each),
                    t["completion_tokens"],
                    t["finish_reason"] or "",
                    *_paused_cells(after[i] if i < len(after) else None),
                ]
            )
        head = ["turn", "prompt tokens", "cached", "prefilled", "TTFT ms (median)"]
        head += ["TTFT ms of each conversation", "answer tokens", "finish"]
        if after:
            head += [f"after a {pause:g} s pause: prefilled", "TTFT ms (median)"]
        estimated = "" if result["tokens_per_word_measured"] else " (length estimated)"
        pass_note = (
            f" The same runs again over other documents with a {pause:g} s pause before each "
            "question (a reader's pause; people take longer), in the last two columns."
            if after
            else ""
        )
        return (
            f"{n} conversation(s), one after another, each over its own document of about "
            f"{result['doc_tokens']} tokens{estimated}: the document and a question, then a new "
            "question each turn; every turn resends the whole conversation (system, questions "
            "and the streamed answers), as OpenAI clients do, the moment the answer ends. No "
            f"conversation starts after {BUDGET_S:.0f} s.{pass_note} Streamed, greedy, "
            f"max_tokens {result['max_tokens']}. Token columns are the first conversation's; "
            "cached = `usage.prompt_tokens_details.cached_tokens`; prefilled = prompt − cached. "
            "Last turn ÷ first turn TTFT (medians, back to back): "
            f"{fmt(result['last_over_first'])}.\n\n" + table(head, rows)
        )

    def targets(self, results: Results) -> list[Target]:
        result = ok(results, self.name)
        n = len(result["turns"]) if result else 8
        return [
            Target(
                f"turn {n} TTFT ÷ turn 1 TTFT",
                result["last_over_first"] if result else None,
                LAST_TO_FIRST_GOAL,
                at_most=True,
                note="median over conversations, whole history resent each turn",
            )
        ]


SCENARIO = MultiTurn()


def _count(value: int | None) -> str | int:
    return "—" if value is None else value


def _paused_cells(turn: Result | None) -> list[str | int]:
    if turn is None:
        return []
    return [_count(new_tokens(turn)), ms(turn["ttft_s"])]
