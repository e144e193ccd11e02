"""A generation request as the engine sees it: parameters, state and what it has produced."""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from warmlm.engine.detokenizer import Detokenizer
from warmlm.engine.stops import StopMatcher


class RequestError(ValueError):
    """The request cannot be served as asked (user input)."""


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling; `temperature == 0` means greedy."""

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    grammar: str | None = None  # GBNF (root rule `root`), the first stage of the sampler chain

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise RequestError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise RequestError(f"temperature must be in [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise RequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise RequestError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.top_k < 0:
            raise RequestError(f"top_k must be >= 0, got {self.top_k}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise RequestError(f"{name} must be in [-2, 2], got {getattr(self, name)}")
        if self.repeat_penalty <= 0:
            raise RequestError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")
        if any(not s for s in self.stop):
            raise RequestError("stop strings must be non-empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Status(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    FINISHED = "finished"


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class StreamEvent:
    """What one engine step produced for one request."""

    request_id: str
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None
    usage: Usage
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None or self.error is not None


Sink = Callable[[StreamEvent], None]
_ids = itertools.count()


def new_request_id(prefix: str = "req") -> str:
    return f"{prefix}-{next(_ids):06d}-{time.time_ns() % 1_000_000_000:09d}"


@dataclass(eq=False)
class Request:
    """Mutable engine-side state of one generation; owned by the engine thread once added."""

    prompt_tokens: list[int]
    params: SamplingParams
    sink: Sink
    detokenizer: Detokenizer
    request_id: str = field(default_factory=new_request_id)
    status: Status = Status.WAITING
    seq_id: int | None = None
    n_past: int = 0
    cached_tokens: int = 0
    output_tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    arrival: float = field(default_factory=time.monotonic)
    admitted_at: float | None = None
    first_token_at: float | None = None
    last_token_at: float = 0.0
    sampler: Any = None
    next_turn: tuple[int, ...] = ()  # a chat's next-turn opener (engine/opener.py), if known
    stops: StopMatcher = field(init=False)

    def __post_init__(self) -> None:
        if not self.prompt_tokens:
            raise RequestError("the prompt is empty")
        self.stops = StopMatcher(self.params.stop)

    @property
    def prompt_remaining(self) -> int:
        return len(self.prompt_tokens) - self.n_past

    @property
    def kv_reserve(self) -> int:
        """KV cells this request may occupy at most: prompt, every token it may generate, and
        its next-turn opener (so the opener finds room when the reply ends in a full KV)."""
        return len(self.prompt_tokens) + self.params.max_tokens + len(self.next_turn)

    def usage(self) -> Usage:
        return Usage(len(self.prompt_tokens), len(self.output_tokens), self.cached_tokens)
