"""The options of one `warmlm bench` run, checked once and then read-only."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmlm.config import default_threads

DEFAULT_MODEL = "qwen2.5-coder-0.5b"


def int_list(text: str) -> tuple[int, ...]:
    """`1,4,8` → (1, 4, 8); every entry a positive integer (an argparse `type`)."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def positive(text: str) -> int:
    """A single positive integer (an argparse `type`)."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


@dataclass(frozen=True)
class BenchOptions:
    """Everything a scenario may read: what to start or target, and how much to measure."""

    scenarios: tuple[str, ...]
    model: str
    threads: int
    parallel: int
    ctx: int
    url: str | None
    api_key: str | None
    out: Path
    docs: Path | None
    label: str
    batches: tuple[int, ...]
    tokens: int
    prompt_tokens: int
    prefill: tuple[int, ...]
    repeats: int
    levels: tuple[int, ...]
    max_tokens: int
    single_runs: int
    coldstart_runs: int
    coldstart_prompts: int
    coldstart_max_tokens: int
    rss_ctx: int
    rss_streams: int
    rss_prompt_words: int
    ready_timeout: float
    strict: bool
    command: str

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, default: tuple[str, ...], known: tuple[str, ...]
    ) -> BenchOptions:
        values: dict[str, Any] = {k: v for k, v in vars(args).items() if k in _FIELDS}
        values["scenarios"] = expand_scenarios(tuple(args.scenarios or ()), default, known)
        values["threads"] = args.threads or default_threads()
        values["parallel"] = args.parallel or max(args.levels)
        values["docs"] = None if args.no_docs else args.docs
        values["label"] = args.label or ("warmlm" if args.url is None else "url")
        values["command"] = shlex.join(["warmlm", *sys.argv[1:]]) if sys.argv[1:] else "warmlm"
        return cls(**values)

    @property
    def own_server(self) -> bool:
        """True when the bench starts warmlm itself (no `--url`)."""
        return self.url is None


def expand_scenarios(
    names: tuple[str, ...], default: tuple[str, ...], known: tuple[str, ...]
) -> tuple[str, ...]:
    """The scenarios to run, in `known` order; `all` (also when none is named) adds `default`."""
    unknown = [n for n in names if n != "all" and n not in known]
    if unknown:
        choices = ", ".join(("all", *known))
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; choose from {choices}")
    wanted = set(names)
    if not names or "all" in wanted:
        wanted |= set(default)
    return tuple(n for n in known if n in wanted)


_FIELDS = {
    "model",
    "ctx",
    "url",
    "api_key",
    "out",
    "batches",
    "tokens",
    "prompt_tokens",
    "prefill",
    "repeats",
    "levels",
    "max_tokens",
    "single_runs",
    "coldstart_runs",
    "coldstart_prompts",
    "coldstart_max_tokens",
    "rss_ctx",
    "rss_streams",
    "rss_prompt_words",
    "ready_timeout",
    "strict",
}
