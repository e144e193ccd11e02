"""`multiturn`: a document, then questions, each turn resending the whole conversation.

The conversation is repeated over other documents (each its own, so none finds another's prompt
cached) and each turn's TTFT is the median over them: one sample of a 400 ms turn on a noisy
machine says little. A slow server runs fewer: no conversation starts after BUDGET_S.
"""

from __future__ import annotations

import time

from tqdm import tqdm

from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.prompts import chat
from warmlm.bench.scenarios._conversation import Conversation, TurnClient, document, new_codes
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.stats import median, ratio
from warmlm.bench.targets import Target

LAST_TO_FIRST_GOAL = 0.08
WARMUP_PROMPT = "Say hello."
DOC_SEED = 11
BUDGET_S = 120.0


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
    ctx: BenchContext, client: TurnClient, code: str, doc: str, bar: tqdm
) -> list[Result]:
    conv = Conversation(code, doc)
    turns = []
    for _ in range(ctx.options.multiturn_turns):
        turns.append((await client.turn(conv, ctx.options.multiturn_max_tokens)).to_dict())
        bar.update()
    return turns


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
            codes = new_codes(o.multiturn_conversations)
            conversations: list[list[Result]] = []
            started = time.perf_counter()
            total = o.multiturn_conversations * o.multiturn_turns
            with ctx.progress(total, "multiturn") as bar:
                for i, code in enumerate(codes):
                    if conversations and time.perf_counter() - started > BUDGET_S:
                        break
                    doc = document(o.multiturn_doc_tokens, scale, DOC_SEED + i)
                    conversations.append(await _conversation(ctx, client, code, doc, bar))
        turns = median_turns(conversations)
        return {
            "doc_tokens": o.multiturn_doc_tokens,
            "tokens_per_word": scale.per_word,
            "tokens_per_word_measured": scale.measured,
            "max_tokens": o.multiturn_max_tokens,
            "conversations": conversations,
            "turns": turns,
            "last_over_first": ratio(turns[-1]["ttft_s"], turns[0]["ttft_s"]),
        }

    def markdown(self, result: Result) -> str:
        n = len(result.get("conversations") or [result["turns"]])
        rows = []
        for i, t in enumerate(result["turns"]):
            cached, prompt = t["cached_tokens"], t["prompt_tokens"]
            each = t.get("ttft_each_s") or [t["ttft_s"]]
            rows.append(
                [
                    i + 1,
                    "—" if prompt is None else prompt,
                    "—" if cached is None else cached,
                    "—" if new_tokens(t) is None else new_tokens(t),
                    ms(t["ttft_s"]),
                    " · ".join(ms(x) for x in each),
                    t["completion_tokens"],
                    t["finish_reason"] or "",
                ]
            )
        head = ["turn", "prompt tokens", "cached", "prefilled", "TTFT ms (median)"]
        head += ["TTFT ms of each conversation", "answer tokens", "finish"]
        estimated = "" if result["tokens_per_word_measured"] else " (length estimated)"
        return (
            f"{n} conversation(s), one after another, each over its own document of about "
            f"{result['doc_tokens']} tokens{estimated}: the document and a question, then a new "
            "question each turn; every turn resends the whole conversation (system, questions "
            "and the streamed answers), as OpenAI clients do. No conversation starts after "
            f"{BUDGET_S:.0f} s. Streamed, greedy, max_tokens {result['max_tokens']}. Token "
            "columns are the first conversation's; cached = "
            "`usage.prompt_tokens_details.cached_tokens`; prefilled = prompt − cached. Last turn "
            "÷ first turn TTFT (medians): "
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
