"""What the conversation scenarios share: conversations that resend their history, prompts of a
target token length, a client that also reads `cached_tokens` and the server's KV counters, and
servers with cache flags.

Not a scenario (the leading underscore keeps it out of `all_scenarios`).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import httpx

from warmlm.bench.client import ChatClient, Messages, StreamResult, _Recorder
from warmlm.bench.prompts import SYSTEM, filler_text
from warmlm.bench.serverproc import ServerSpec
from warmlm.bench.sse import SSEEvent

T = TypeVar("T")
R = TypeVar("R")

CODE_DIGITS = 8
DEFAULT_TOKENS_PER_WORD = 1.3  # filler prose in common small-model tokenizers, when unmeasured
PROBE_WORDS = (48, 240)
CTX_ALIGN = 1024

QUESTIONS = (
    "In two sentences, what is this document about?",
    "Which three words appear most often in the document?",
    "Quote the first sentence of the document exactly.",
    "Does the document mention a river? Answer briefly and say where.",
    "Rewrite the last sentence of the document as a question.",
    "Which words of the document name places or buildings?",
    "Give the document a short title and explain your choice.",
    "List five words from the document in alphabetical order.",
    "Which word of the document would you remove to make it clearer, and why?",
    "Summarize our conversation so far in one sentence.",
)


# -- prompts --------------------------------------------------------------------------------
def new_codes(n: int, rng: random.Random | None = None) -> list[str]:
    """n different fixed-width digit strings. Each opens a conversation's system prompt, so no two
    conversations (nor two bench runs against one long-lived server) share more than the chat
    template's first tokens, and swapping the code keeps the prompt's token length."""
    rng = rng or random.Random(time.time_ns())
    low = 10 ** (CODE_DIGITS - 1)
    return [str(c) for c in rng.sample(range(low, 10 * low), n)]


def system_prompt(code: str) -> str:
    return f"{code} is the id of this conversation. {SYSTEM}"


@dataclass
class Conversation:
    """A document, then questions about it; every turn resends the whole history (as OpenAI
    clients do), with the assistant's earlier answers as they were streamed."""

    code: str
    document: str
    questions: Sequence[str] = QUESTIONS
    answers: list[str] = field(default_factory=list)

    @property
    def turn(self) -> int:
        """The number (from 0) of the next turn."""
        return len(self.answers)

    def question(self, turn: int) -> str:
        return self.questions[turn % len(self.questions)]

    def user(self, turn: int) -> str:
        if turn == 0:
            return f"Here is a document:\n\n{self.document}\n\n{self.question(0)}"
        return self.question(turn)

    def messages(self, code: str | None = None) -> Messages:
        """The next turn's prompt; another `code` makes a cold twin of exactly the same length."""
        out: Messages = [{"role": "system", "content": system_prompt(code or self.code)}]
        for turn, answer in enumerate(self.answers):
            out.append({"role": "user", "content": self.user(turn)})
            out.append({"role": "assistant", "content": answer})
        out.append({"role": "user", "content": self.user(self.turn)})
        return out

    def answered(self, text: str) -> None:
        self.answers.append(text)


@dataclass(frozen=True)
class TokenScale:
    """Tokens per word of the filler prose, as the server under test tokenizes it."""

    per_word: float
    measured: bool = True

    def words(self, tokens: int) -> int:
        """Filler words that make about `tokens` tokens."""
        return max(1, round(tokens / self.per_word))

    @classmethod
    def from_probes(
        cls, words: tuple[int, int], prompt_tokens: tuple[int | None, int | None]
    ) -> TokenScale:
        """From two prompts that differ only in their number of filler words."""
        (w0, w1), (t0, t1) = words, prompt_tokens
        if t0 is None or t1 is None or w1 <= w0 or t1 <= t0:
            return cls(DEFAULT_TOKENS_PER_WORD, measured=False)
        return cls((t1 - t0) / (w1 - w0))


def document(tokens: int, scale: TokenScale, seed: int) -> str:
    """Filler prose of about `tokens` tokens."""
    return filler_text(scale.words(tokens), seed)


def ctx_for(tokens: int, floor: int) -> int:
    """A server --ctx that holds `tokens` with a quarter to spare, at least `floor`."""
    need = tokens + tokens // 4
    return max(floor, -(-need // CTX_ALIGN) * CTX_ALIGN)


# -- client -----------------------------------------------------------------------------------
@dataclass
class TurnRecorder(_Recorder):
    """The stream recorder, also keeping `usage.prompt_tokens_details.cached_tokens`."""

    cached_tokens: int | None = None

    def absorb(self, event: SSEEvent, now: float) -> None:
        super().absorb(event, now)
        if "prompt_tokens_details" not in event.data:
            return
        try:
            details = json.loads(event.data)["usage"]["prompt_tokens_details"]
            self.cached_tokens = int(details["cached_tokens"])
        except (ValueError, KeyError, TypeError):
            pass

    def snapshot(self) -> Reply:
        """What has arrived so far (all of it once the request is over)."""
        return Reply(self.result(time.perf_counter()), self.cached_tokens)


@dataclass(frozen=True)
class Reply:
    """One streamed reply and how much of its prompt the server had cached."""

    stream: StreamResult
    cached_tokens: int | None

    @property
    def ttft(self) -> float | None:
        return self.stream.ttft

    @property
    def error(self) -> str | None:
        return self.stream.error

    @property
    def text(self) -> str:
        return self.stream.text

    def to_dict(self) -> dict[str, Any]:
        return {**self.stream.to_dict(), "cached_tokens": self.cached_tokens}


class TurnClient(ChatClient):
    """The bench's streaming client (greedy), replying with `cached_tokens` too."""

    async def __aenter__(self) -> TurnClient:
        return self

    async def fill(self, rec: TurnRecorder, messages: Messages, max_tokens: int) -> None:
        """Stream into `rec`, which the caller may read while it fills (or after cancelling)."""
        try:
            await self._stream(rec, self.body(messages, max_tokens, 0.0))
        except httpx.HTTPError as exc:
            rec.error = f"{type(exc).__name__}: {exc}"

    async def reply(self, messages: Messages, max_tokens: int) -> Reply:
        rec = TurnRecorder(sent_at=time.perf_counter())
        await self.fill(rec, messages, max_tokens)
        return rec.snapshot()

    async def turn(self, conv: Conversation, max_tokens: int) -> Reply:
        """Send the conversation's next turn and append the answer to it."""
        reply = await self.reply(conv.messages(), max_tokens)
        if reply.error is not None:
            raise RuntimeError(f"turn {conv.turn + 1} failed: {reply.error}")
        conv.answered(reply.text)
        return reply

    async def cache_counters(self) -> dict[str, float]:
        """warmlm's KV eviction and restore counters from `/metrics` (empty for other servers)."""
        try:
            resp = await self._http.get("/metrics")
        except httpx.HTTPError:
            return {}
        return parse_counters(resp.text) if resp.status_code == 200 else {}

    async def token_scale(self) -> TokenScale:
        """Measure tokens per filler word from two small prompts (an estimate when the server
        does not report `usage.prompt_tokens`)."""
        counts = []
        for i, words in enumerate(PROBE_WORDS):
            text = f"{new_codes(1)[0]} Count the words: {filler_text(words, 900 + i)}"
            reply = await self.reply([{"role": "user", "content": text}], 1)
            counts.append(reply.stream.prompt_tokens if reply.error is None else None)
        return TokenScale.from_probes(PROBE_WORDS, (counts[0], counts[1]))


async def in_order(items: Sequence[T], workers: int, work: Callable[[T], Awaitable[R]]) -> list[R]:
    """`work` on every item, at most `workers` at once, started in order; results in order."""
    results: dict[int, R] = {}
    cursor = iter(range(len(items)))

    async def worker() -> None:
        for i in cursor:
            results[i] = await work(items[i])

    await asyncio.gather(*(worker() for _ in range(min(workers, len(items)))))
    return [results[i] for i in range(len(items))]


def spread(items: Sequence[T], n: int) -> list[T]:
    """n items evenly spaced over the sequence (all of them when there are not more than n)."""
    if n >= len(items):
        return list(items)
    if n <= 0:
        return []
    step = len(items) / n
    return [items[int(i * step + step / 2)] for i in range(n)]


async def wait_for(check: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
    """Poll until `check()` holds; False on timeout."""
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


# -- servers ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CacheSpec(ServerSpec):
    """A warmlm server with KV-cache flags as well."""

    cache_slots: int | None = None
    kv_ram_mb: int | None = None
    kv_cache_dir: Path | None = None
    prefix_cache: bool = True

    @classmethod
    def of(cls, base: ServerSpec, **settings: Any) -> CacheSpec:
        own = {f.name: getattr(base, f.name) for f in fields(ServerSpec)}
        return cls(**own, **settings)

    def flags(self) -> list[str]:
        """The serve flags these settings add."""
        out = []
        if self.cache_slots is not None:
            out += ["--cache-slots", str(self.cache_slots)]
        if self.kv_ram_mb is not None:
            out += ["--kv-ram-mb", str(self.kv_ram_mb)]
        if self.kv_cache_dir is not None:
            out += ["--kv-cache-dir", str(self.kv_cache_dir)]
        if not self.prefix_cache:
            out.append("--no-prefix-cache")
        return out

    def command(self, port: int) -> list[str]:
        return [*super().command(port), *self.flags()]


CACHE_COUNTERS = {
    "evictions": "warmlm:kv_evictions_total",
    "restores": "warmlm:kv_restores_total",
}


def parse_counters(text: str) -> dict[str, float]:
    """The KV cache counters of a Prometheus text exposition (those present)."""
    wanted = {metric: key for key, metric in CACHE_COUNTERS.items()}
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            try:
                out[wanted[name]] = float(value.split()[0])
            except (ValueError, IndexError):
                continue
    return out


def counter_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, int | None]:
    """How much each counter rose (None where the server does not expose it)."""
    return {
        key: int(after[key] - before[key]) if key in before and key in after else None
        for key in CACHE_COUNTERS
    }
