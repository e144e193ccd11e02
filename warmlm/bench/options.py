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

# Sizes of the conversation scenarios: (default, with --quick); an explicit option wins over both.
SCENARIO_SIZES: dict[str, tuple[int, int]] = {
    "multiturn_doc_tokens": (800, 400),
    "multiturn_turns": (8, 8),
    "multiturn_max_tokens": (48, 32),
    "multiturn_conversations": (3, 1),
    "sessions_conversations": (16, 12),
    "sessions_doc_tokens": (500, 200),
    "sessions_turns": (3, 2),
    "sessions_max_tokens": (24, 16),
    "restart_doc_tokens": (8000, 2000),
    "restart_conversations": (2, 2),
    "fairness_prompt_tokens": (4096, 1024),
    "fairness_streams": (3, 3),
    "fairness_max_tokens": (1024, 512),
    "soak_minutes": (30, 1),
}


def _full(name: str) -> int:
    return SCENARIO_SIZES[name][0]


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
    # the conversation scenarios (multiturn, sessions, restart, fairness); see SCENARIO_SIZES
    quick: bool = False
    multiturn_doc_tokens: int = _full("multiturn_doc_tokens")
    multiturn_turns: int = _full("multiturn_turns")
    multiturn_max_tokens: int = _full("multiturn_max_tokens")
    multiturn_conversations: int = _full("multiturn_conversations")
    sessions_conversations: int = _full("sessions_conversations")
    sessions_doc_tokens: int = _full("sessions_doc_tokens")
    sessions_turns: int = _full("sessions_turns")
    sessions_max_tokens: int = _full("sessions_max_tokens")
    restart_doc_tokens: int = _full("restart_doc_tokens")
    restart_conversations: int = _full("restart_conversations")
    fairness_prompt_tokens: int = _full("fairness_prompt_tokens")
    fairness_streams: int = _full("fairness_streams")
    fairness_max_tokens: int = _full("fairness_max_tokens")
    classify_data: Path | None = None  # classify: {text, label} JSONL (None: the shipped sample)
    classify_items: int | None = None  # classify: items timed one by one (None: all)
    soak_minutes: int = _full("soak_minutes")

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
        values.update(scenario_sizes(args))
        values["classify_data"] = getattr(args, "data", None)
        values["classify_items"] = getattr(args, "classify_items", None)
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


def scenario_sizes(args: argparse.Namespace) -> dict[str, Any]:
    """`--quick` and the size options of the conversation scenarios, resolved to numbers.

    Tolerates a parser without these options (every size then takes its default)."""
    quick = bool(getattr(args, "quick", False))
    values: dict[str, Any] = {"quick": quick}
    for name, (full, small) in SCENARIO_SIZES.items():
        given = getattr(args, name, None)
        values[name] = given if given is not None else (small if quick else full)
    return values


def add_scenario_args(p: argparse.ArgumentParser) -> None:
    """The options of the multiturn, sessions, restart and fairness scenarios."""
    g = p.add_argument_group("conversations (multiturn, sessions, restart, fairness)")
    g.add_argument(
        "--quick",
        action="store_true",
        help="smaller documents and fewer conversations for these scenarios "
        "(an explicit size option below still wins)",
    )

    def size(flag: str, text: str) -> None:
        full, small = SCENARIO_SIZES[flag.removeprefix("--").replace("-", "_")]
        g.add_argument(
            flag, type=positive, default=None, help=f"{text} (default {full}; {small} with --quick)"
        )

    size("--multiturn-doc-tokens", "tokens of the multiturn document")
    size("--multiturn-turns", "turns of the multiturn conversation")
    size("--multiturn-max-tokens", "max_tokens of each multiturn answer")
    size("--multiturn-conversations", "multiturn conversations, median per turn (none after 2 min)")
    size("--sessions-conversations", "conversations of sessions, over --parallel 4")
    size("--sessions-doc-tokens", "tokens of each sessions conversation's first document")
    size("--sessions-turns", "turns of each sessions conversation (first + returning)")
    size("--sessions-max-tokens", "max_tokens of each sessions answer")
    size("--restart-doc-tokens", "tokens of the restart document")
    size("--restart-conversations", "restart conversations over that document")
    size("--fairness-prompt-tokens", "tokens of the long prompt that arrives in fairness")
    size("--fairness-streams", "running streams in fairness")
    size("--fairness-max-tokens", "max_tokens of the fairness streams (stopped once measured)")
    g.add_argument(
        "--minutes",
        dest="soak_minutes",
        type=positive,
        default=None,
        help="minutes of the soak scenario (default 30; 1 with --quick)",
    )
