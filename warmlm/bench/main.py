"""`warmlm bench`: the command line, and the run from options to JSON and docs/benchmarks.md."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from warmlm.bench.compare import (
    add_compare_args,
    compare_console,
    compare_plan,
    execute_compare,
    publish,
    record_json,
    regenerate,
)
from warmlm.bench.options import (
    DEFAULT_MODEL,
    BenchOptions,
    add_scenario_args,
    int_list,
    positive,
)
from warmlm.bench.report import console_summary, write_json
from warmlm.bench.scenarios import all_scenarios
from warmlm.bench.scenarios.classify import add_args as add_classify_args
from warmlm.bench.session import execute
from warmlm.bench.targets import all_passed

DESCRIPTION = """Measure warmlm (or any OpenAI-compatible server, with --url) against the raw
llama.cpp ceiling measured in the same run. Scenarios: {names}; `all` (the default) runs {default}.
Results go to a JSON file in --out and to sections of --docs."""


def _target_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to measure")
    g.add_argument(
        "--url",
        help="an OpenAI-compatible base URL to measure instead of starting "
        "warmlm (coldstart and rss are skipped)",
    )
    g.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="for --url")
    g.add_argument(
        "--model",
        default=os.environ.get("WARMLM_MODEL") or DEFAULT_MODEL,
        help="registry name or .gguf path (default %(default)s)",
    )
    g.add_argument("--threads", type=positive, help="llama.cpp threads (default: all cores)")
    g.add_argument("--parallel", type=positive, help="server --parallel (default: max of --levels)")
    g.add_argument("--ctx", type=positive, default=8192, help="server --ctx (default %(default)s)")
    g.add_argument("--label", help="name of this target in docs sections (default warmlm, or url)")
    g.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for /ready")


def _ceiling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ceiling")
    g.add_argument("--batches", type=int_list, default=(1, 4, 8), help="B values (default 1,4,8)")
    g.add_argument("--tokens", type=positive, default=64, help="decode steps per B (default 64)")
    g.add_argument(
        "--prompt-tokens",
        type=positive,
        default=48,
        help="tokens prefilled per sequence before decoding (default 48)",
    )
    g.add_argument(
        "--prefill",
        type=int_list,
        default=(16, 64, 256, 512),
        help="prompt lengths to time the prefill of (default 16,64,256,512)",
    )
    g.add_argument("--repeats", type=positive, default=3, help="median of how many (default 3)")


def _load_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("requests")
    g.add_argument(
        "--levels", type=int_list, default=(1, 2, 4, 8), help="concurrent streams (default 1,2,4,8)"
    )
    g.add_argument(
        "--max-tokens",
        type=positive,
        default=128,
        help="max_tokens of single, concurrency and rss requests (default 128)",
    )
    g.add_argument(
        "--single-runs", type=positive, default=3, help="single requests, median taken (default 3)"
    )
    g.add_argument("--coldstart-runs", type=positive, default=5, help="process starts (default 5)")
    g.add_argument(
        "--coldstart-prompts",
        type=positive,
        default=10,
        help="prompts after each start (default 10)",
    )
    g.add_argument("--coldstart-max-tokens", type=positive, default=16)
    g.add_argument("--rss-ctx", type=positive, default=8192, help="rss server --ctx (8192)")
    g.add_argument("--rss-streams", type=positive, default=4, help="rss streams (default 4)")
    g.add_argument(
        "--rss-prompt-words",
        type=positive,
        default=1550,
        help="words of each rss prompt (default 1550, ~1.8k tokens)",
    )


def _output_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=Path("bench-results"), help="JSON results folder")
    g.add_argument(
        "--docs",
        type=Path,
        default=Path("docs/benchmarks.md"),
        help="Markdown file whose sections are rewritten (default %(default)s)",
    )
    g.add_argument("--no-docs", action="store_true", help="do not touch the Markdown file")
    g.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")


def add_bench_parser(
    sub: argparse._SubParsersAction, handler: Callable[[argparse.Namespace], int]
) -> None:
    scenarios = all_scenarios()
    names = ", ".join(s.name for s in scenarios)
    default = " + ".join(s.name for s in scenarios if s.in_all)
    p = sub.add_parser(
        "bench",
        help="benchmark against the llama.cpp ceiling",
        description=DESCRIPTION.format(names=names, default=default),
    )
    p.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"all, {names} (or: report --from FILE)"
    )
    for add in (
        _target_args, _ceiling_args, _load_args, add_scenario_args, add_classify_args,
        add_compare_args, _output_args,
    ):  # fmt: skip
        add(p)
    p.set_defaults(func=handler)


def run_bench(args: argparse.Namespace) -> int:
    """Run the chosen scenarios; exit 1 on a failed scenario (or a missed target with --strict)."""
    if args.scenarios[:1] == ["report"]:  # `warmlm bench report --from FILE`: docs only
        return regenerate(args)
    scenarios = all_scenarios()
    default = tuple(s.name for s in scenarios if s.in_all)
    try:
        plan = compare_plan(args)  # None without --compare
        wanted = default if plan is None else plan.default
        options = BenchOptions.from_args(args, wanted, tuple(s.name for s in scenarios))
    except ValueError as exc:
        print(f"warmlm bench: {exc}", file=sys.stderr)
        return 2
    selected = [s for s in scenarios if s.name in options.scenarios]
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per /ready poll otherwise
    if plan is None:
        record = execute(options, selected)
    else:
        record = execute_compare(options, selected, plan)
    path = write_json(record, options.out)
    if options.docs is not None:
        full_run = set(default) <= set(options.scenarios)
        publish(record, selected, full_run, options.docs, path)
    print(console_summary(record))
    if plan is not None:
        print("\n" + compare_console(record_json(record)))
    print(f"\nresults: {path}" + (f"; docs: {options.docs}" if options.docs else ""))
    if any("error" in r for r in record.results.values()):
        return 1
    return 1 if options.strict and not all_passed(record.all_targets()) else 0
