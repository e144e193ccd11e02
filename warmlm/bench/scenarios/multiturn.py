"""`multiturn`: a document, then questions, each turn resending the whole conversation."""

from __future__ import annotations

from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.prompts import chat
from warmlm.bench.scenarios._conversation import Conversation, TurnClient, document, new_codes
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.stats import ratio
from warmlm.bench.targets import Target

LAST_TO_FIRST_GOAL = 0.08
WARMUP_PROMPT = "Say hello."
DOC_SEED = 11


def new_tokens(turn: Result) -> int | None:
    """Prompt tokens the server had to prefill: those it did not have cached."""
    prompt, cached = turn.get("prompt_tokens"), turn.get("cached_tokens")
    return None if prompt is None or cached is None else prompt - cached


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
            doc = document(o.multiturn_doc_tokens, scale, DOC_SEED)
            conv = Conversation(new_codes(1)[0], doc)
            turns = []
            with ctx.progress(o.multiturn_turns, "multiturn") as bar:
                for _ in range(o.multiturn_turns):
                    turns.append((await client.turn(conv, o.multiturn_max_tokens)).to_dict())
                    bar.update()
        return {
            "doc_tokens": o.multiturn_doc_tokens,
            "tokens_per_word": scale.per_word,
            "tokens_per_word_measured": scale.measured,
            "max_tokens": o.multiturn_max_tokens,
            "turns": turns,
            "last_over_first": ratio(turns[-1]["ttft_s"], turns[0]["ttft_s"]),
        }

    def markdown(self, result: Result) -> str:
        rows = []
        for i, t in enumerate(result["turns"]):
            cached, prompt = t["cached_tokens"], t["prompt_tokens"]
            rows.append(
                [
                    i + 1,
                    "—" if prompt is None else prompt,
                    "—" if cached is None else cached,
                    "—" if new_tokens(t) is None else new_tokens(t),
                    ms(t["ttft_s"]),
                    t["completion_tokens"],
                    t["finish_reason"] or "",
                ]
            )
        head = [
            "turn",
            "prompt tokens",
            "cached",
            "prefilled",
            "TTFT ms",
            "answer tokens",
            "finish",
        ]
        estimated = "" if result["tokens_per_word_measured"] else " (length estimated)"
        return (
            f"One conversation: a document of about {result['doc_tokens']} tokens{estimated} "
            "and a question, then a new question each turn; every turn resends the whole "
            "conversation (system, questions and the streamed answers), as OpenAI clients do. "
            f"Streamed, greedy, max_tokens {result['max_tokens']}. Cached = "
            "`usage.prompt_tokens_details.cached_tokens`; prefilled = prompt − cached. Last turn "
            "÷ first turn TTFT: "
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
                note="one conversation, whole history resent each turn",
            )
        ]


SCENARIO = MultiTurn()
