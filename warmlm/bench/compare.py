"""`warmlm bench --compare`: the same scenarios against peers, pair by pair, and their ratios.

For each selected scenario, warmlm runs it first, then each peer in turn (only one server is
alive at a time); a scenario that needs a server sees the peer as a `--url` target, one that
starts processes (coldstart) gets the peer's launcher instead of warmlm's. Only the scenarios of
`COMPARABLE` run against peers; the others (ceiling, rss, restart, classify, soak) are warmlm's.

Ratios are always put as warmlm's advantage: peer ÷ warmlm for times (lower is better),
warmlm ÷ peer for rates, so a figure above 1 reads "warmlm is N× faster" (or "has N× the
throughput"). Everything here works from the JSON record, so `warmlm bench report --from FILE`
rewrites the docs and plots without measuring again.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from warmlm.bench.context import BenchContext
from warmlm.bench.machine import describe, machine_info
from warmlm.bench.markdown import fmt, table, update_doc
from warmlm.bench.options import BenchOptions
from warmlm.bench.peers import PeerSpec, make_peer, peer_names
from warmlm.bench.report import RunRecord, write_docs
from warmlm.bench.scenarios.base import Needs, Result, Scenario
from warmlm.bench.scenarios.multiturn import PAUSE_S
from warmlm.bench.serverproc import ServerFailed, ServerProcess, ServerSpec
from warmlm.bench.session import run_one
from warmlm.bench.stats import median
from warmlm.bench.targets import Target

log = logging.getLogger("warmlm.bench")

# Scenarios that run against peers too, and those `--compare` runs when none is named.
COMPARABLE = ("coldstart", "single", "concurrency", "multiturn", "sessions", "fairness")
DEFAULT_COMPARE = ("coldstart", "single", "concurrency", "multiturn")
HEADLINE_LEVELS = (4, 8)
COMPARE_SECTION = "compare"


# -- command line -------------------------------------------------------------------------------
def add_compare_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("compare with other servers (peers)")
    g.add_argument(
        "--compare",
        nargs="?",
        const="all",
        default=None,
        metavar="PEERS",
        help="also run the scenarios (default: coldstart, single, concurrency, multiturn) "
        "against peers started the same way, pair by pair: llama-cpp-python, llama-server "
        "(with --llama-server), flask; comma-separated names pick some",
    )
    g.add_argument(
        "--llama-server", type=Path, default=None, metavar="PATH", help="a llama-server binary"
    )
    g.add_argument(
        "--from",
        dest="from_json",
        type=Path,
        default=None,
        metavar="FILE",
        help="with `warmlm bench report`: the JSON result to rewrite --docs and plots from",
    )


@dataclass(frozen=True)
class ComparePlan:
    """Which peers to start, and the scenarios run when none is named."""

    peers: tuple[str, ...]
    llama_server: Path | None = None
    default: tuple[str, ...] = DEFAULT_COMPARE


def compare_plan(args: argparse.Namespace) -> ComparePlan | None:
    """The plan of `--compare`, or None without it; ValueError for an impossible one."""
    wanted = getattr(args, "compare", None)
    llama_server = getattr(args, "llama_server", None)
    if wanted is None:
        if llama_server is not None:
            raise ValueError("--llama-server is only used with --compare")
        return None
    if getattr(args, "url", None):
        raise ValueError("--compare starts warmlm and every peer itself; drop --url")
    if llama_server is not None and not os.access(llama_server, os.X_OK):
        raise ValueError(f"--llama-server {llama_server} is not an executable file")
    return ComparePlan(peer_names(wanted, llama_server), llama_server)


# -- running ------------------------------------------------------------------------------------
class PeerContext(BenchContext):
    """The run's context with a peer in warmlm's place: every server a scenario starts (whatever
    spec it builds) is the peer, with that spec's --ctx and --parallel."""

    def __init__(self, base: BenchContext, peer: PeerSpec) -> None:
        super().__init__(dataclasses.replace(base.options, label=peer.label), base.run_id)
        self.base = base
        self.peer = peer

    def model_path(self) -> Path:
        return self.base.model_path()

    def spec(self, ctx: int | None = None, parallel: int | None = None) -> ServerSpec:
        return self.peer.like(super().spec(ctx, parallel))

    def new_server(self, spec: ServerSpec, tag: str) -> ServerProcess:
        return self.base.new_server(self.peer.like(spec), f"{self.peer.label}-{tag}")


async def run_peer(base: BenchContext, peer: PeerSpec, scenario: Scenario) -> Result:
    """One scenario against one peer; the peer is stopped when it returns."""
    if scenario.needs is not Needs.SERVER:
        pctx = PeerContext(base, peer)
        try:
            return await run_one(pctx, scenario)
        finally:
            pctx.close()
    server = base.new_server(peer, f"{peer.label}-{scenario.name}")
    try:
        server.start()
        ready = await server.wait_ready(base.options.ready_timeout)
    except (ServerFailed, OSError) as exc:
        server.stop()
        log.error("%s did not start: %s", peer.label, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}
    try:
        options = dataclasses.replace(base.options, url=server.url, label=peer.label)
        url_ctx = BenchContext(options, base.run_id)
        try:
            result = await run_one(url_ctx, scenario)
        finally:
            url_ctx.close()
    finally:
        server.stop()
    result["peer_ready_s"] = ready
    return result


async def run_pairs(
    ctx: BenchContext, scenarios: Sequence[Scenario], peers: Sequence[PeerSpec]
) -> tuple[dict[str, Result], dict[str, dict[str, Result]]]:
    """Each scenario against warmlm, then against each peer in turn."""
    results: dict[str, Result] = {}
    by_peer: dict[str, dict[str, Result]] = {p.label: {} for p in peers}
    try:
        for scenario in scenarios:
            results[scenario.name] = await run_one(ctx, scenario)
            if scenario.name not in COMPARABLE or "skipped" in results[scenario.name]:
                continue
            ctx.release_server()  # one server at a time
            for peer in peers:
                log.info("%s against %s ...", scenario.name, peer.label)
                by_peer[peer.label][scenario.name] = await run_peer(ctx, peer, scenario)
    finally:
        ctx.close()
    return results, by_peer


def execute_compare(
    options: BenchOptions, scenarios: Sequence[Scenario], plan: ComparePlan
) -> RunRecord:
    """Like `session.execute`, with every comparable scenario also run against the peers."""
    now = datetime.now().astimezone()
    run_id = now.strftime("%Y%m%d-%H%M%S")
    ctx = BenchContext(options, run_id)
    gguf = ctx.model_path()
    peers = [make_peer(name, ctx.spec(), gguf, plan.llama_server) for name in plan.peers]
    results, by_peer = asyncio.run(run_pairs(ctx, scenarios, peers))
    targets: dict[str, list[Target]] = {
        s.name: s.targets(results)
        for s in scenarios
        if s.name in results and "skipped" not in results[s.name]
    }
    described: dict[str, Any] = {}
    for p in peers:
        ratios = comparisons(results, by_peer[p.label], p.label)
        described[p.label] = {
            **p.describe(),
            "results": by_peer[p.label],
            "ratios": [r.to_dict() for r in ratios],
        }
    return RunRecord(
        run_id=run_id,
        date=now.strftime("%Y-%m-%d %H:%M %Z"),
        options=options,
        machine=machine_info(),
        results=results,
        targets=targets,
        peers=described,
    )


# -- ratios -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """A figure both sides of a pair report, and which way is better."""

    scenario: str
    label: str
    unit: str  # "s", "ms", "tok/s", "MiB": how to show it
    higher_is_better: bool
    get: Callable[[Result], float | None]
    headline: bool = False

    @property
    def better(self) -> str:
        if self.unit == "MiB":
            return "less memory"
        return "the throughput" if self.higher_is_better else "faster"


def advantage(metric: Metric, warm: float | None, peer: float | None) -> float | None:
    """warmlm's advantage: > 1 when warmlm is better (peer ÷ warmlm for times, warmlm ÷ peer for
    rates); None when either side is missing or not positive."""
    if warm is None or peer is None or warm <= 0 or peer <= 0:
        return None
    return warm / peer if metric.higher_is_better else peer / warm


def _path(*keys: str | int) -> Callable[[Result], float | None]:
    def get(result: Result) -> float | None:
        value: Any = result
        for key in keys:
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError):
                return None
        return float(value) if isinstance(value, int | float) else None

    return get


def _start_to_first_token(result: Result) -> float | None:
    """Median over starts of ready + the first request's TTFT (process start → first token,
    whatever the server does lazily)."""
    sums = []
    for run in result.get("runs") or []:
        first = (run.get("ttft_s") or [None])[0]
        if run.get("ready_s") is not None and first is not None:
            sums.append(run["ready_s"] + first)
    return median(sums)


def _peak_rss_mib(result: Result) -> float | None:
    values = [
        r["peak_rss_bytes"] / 2**20 for r in result.get("runs") or [] if r.get("peak_rss_bytes")
    ]
    return median(values)


def _turn_ttfts(result: Result) -> list[float | None]:
    return [t.get("ttft_s") for t in result.get("turns") or []]


def _later_turns_mean(result: Result) -> float | None:
    later = [t for t in _turn_ttfts(result)[1:] if t is not None]
    return sum(later) / len(later) if later else None


def _last_turn(result: Result) -> float | None:
    turns = _turn_ttfts(result)
    return turns[-1] if turns else None


def _paused(figure: Callable[[Result], float | None]) -> Callable[[Result], float | None]:
    """The figure of multiturn's second pass, with a reader's pause before each question."""
    return lambda result: figure(result.get("paused") or {})


def _level(n: int, key: str) -> Callable[[Result], float | None]:
    def get(result: Result) -> float | None:
        for level in result.get("levels") or []:
            if level.get("level") == n:
                return _path(key)(level)
        return None

    return get


def metrics_for(scenario: str, result: Result | None) -> list[Metric]:
    """The compared figures of a scenario (the levels of concurrency as warmlm ran them)."""
    if scenario == "coldstart":
        return [
            Metric(
                scenario, "cold start: process start → ready", "s", False, _path("ready_s"), True,
            ),
            Metric(
                scenario, "cold start: first-request TTFT", "ms", False, _path("ttft_first_s"),
                True,
            ),
            Metric(
                scenario, "cold start: process start → first token", "s", False,
                _start_to_first_token, True,
            ),
            Metric(scenario, "cold start: last-request TTFT", "ms", False, _path("ttft_last_s")),
            Metric(scenario, "cold start: peak RSS", "MiB", False, _peak_rss_mib),
        ]  # fmt: skip
    if scenario == "single":
        return [
            Metric(scenario, "single stream: TTFT (warm)", "ms", False, _path("ttft_s")),
            Metric(scenario, "single stream: decode", "tok/s", True, _path("decode_tps")),
        ]
    if scenario == "concurrency":
        levels = [lv.get("level") for lv in (result or {}).get("levels") or []]
        out = []
        for n in [lv for lv in levels if isinstance(lv, int)] or list(HEADLINE_LEVELS):
            out += [
                Metric(
                    scenario, f"{n} streams: aggregate throughput", "tok/s", True,
                    _level(n, "aggregate_tps"), n in HEADLINE_LEVELS,
                ),
                Metric(scenario, f"{n} streams: TTFT p95", "ms", False, _level(n, "ttft_p95_s")),
                Metric(scenario, f"{n} streams: ITL p50", "ms", False, _level(n, "itl_p50_s")),
            ]  # fmt: skip
        return out
    if scenario == "multiturn":
        return [
            Metric(scenario, "multi-turn: turn 1 TTFT", "ms", False, _path("turns", 0, "ttft_s")),
            Metric(
                scenario, "multi-turn: mean TTFT of turns 2…n", "ms", False, _later_turns_mean,
                True,
            ),
            Metric(scenario, "multi-turn: last-turn TTFT", "ms", False, _last_turn, True),
            Metric(
                scenario, f"multi-turn, {PAUSE_S:g} s pauses: mean TTFT of turns 2…n", "ms", False,
                _paused(_later_turns_mean), True,
            ),
            Metric(
                scenario, f"multi-turn, {PAUSE_S:g} s pauses: last-turn TTFT", "ms", False,
                _paused(_last_turn), True,
            ),
        ]  # fmt: skip
    if scenario == "sessions":
        return [
            Metric(
                scenario, "sessions: first-turn TTFT p50", "ms", False,
                _path("variants", 0, "first_ttft_p50_s"),
            ),
            Metric(
                scenario, "sessions: returning-turn TTFT p50", "ms", False,
                _path("variants", 0, "returning_ttft_p50_s"),
            ),
        ]  # fmt: skip
    if scenario == "fairness":
        return [
            Metric(
                scenario, "fairness: long prompt's TTFT while streams decode", "ms", False,
                _path("long_prompt", "ttft_s"),
            ),
            Metric(
                scenario, "fairness: streams' ITL p95 during that prefill", "ms", False,
                _path("prefill", "p95_s"),
            ),
        ]  # fmt: skip
    return []


@dataclass(frozen=True)
class Comparison:
    """One metric of one pair: warmlm's figure, the peer's, and warmlm's advantage."""

    metric: Metric
    peer: str
    warmlm: float | None
    other: float | None
    note: str = ""

    @property
    def advantage(self) -> float | None:
        return advantage(self.metric, self.warmlm, self.other)

    @property
    def ahead(self) -> bool | None:
        adv = self.advantage
        return None if adv is None else adv > 1.0

    def verdict(self) -> str:
        """E.g. "warmlm 3.2× faster", "flask 1.4× the throughput", or "n/a" (with why)."""
        adv = self.advantage
        if adv is None:
            return f"n/a ({self.note})" if self.note else "n/a"
        who, by = ("warmlm", adv) if adv >= 1.0 else (self.peer, 1.0 / adv)
        return f"{who} {_times(by)} {self.metric.better}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.metric.scenario,
            "metric": self.metric.label,
            "unit": self.metric.unit,
            "higher_is_better": self.metric.higher_is_better,
            "headline": self.metric.headline,
            "warmlm": self.warmlm,
            "peer": self.other,
            "advantage": self.advantage,
            "warmlm_ahead": self.ahead,
            "verdict": self.verdict(),
        }


def _times(x: float) -> str:
    return f"{x:.0f}×" if x >= 100 else f"{x:.3g}×"


def _why(result: Result | None) -> str:
    if result is None:
        return "not run"
    if "error" in result:
        return "failed"
    if "skipped" in result:
        return "skipped"
    return "not reported"


def comparisons(
    warm: dict[str, Result], peer_results: dict[str, Result], peer: str
) -> list[Comparison]:
    """Every compared metric of the scenarios both sides ran, in scenario order."""
    out = []
    for scenario in COMPARABLE:
        w, p = warm.get(scenario), peer_results.get(scenario)
        if w is None and p is None:
            continue
        for metric in metrics_for(scenario, w):
            wv = metric.get(w) if w and "error" not in w and "skipped" not in w else None
            pv = metric.get(p) if p and "error" not in p and "skipped" not in p else None
            note = "" if wv is not None and pv is not None else (
                f"{peer}: {_why(p)}" if pv is None else f"warmlm: {_why(w)}"
            )  # fmt: skip
            out.append(Comparison(metric, peer, wv, pv, note))
    return out


# -- Markdown -----------------------------------------------------------------------------------
def show(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return f"{fmt(value * 1000.0)} ms"
    return f"{fmt(value)} {unit}"


def _peer_table(data: dict[str, Any]) -> str:
    rows = []
    for label, peer in data.get("peers", {}).items():
        rows.append([f"`{label}`", peer.get("what", ""), peer.get("ready", "")])
    rows.insert(0, ["`warmlm`", "`warmlm serve` (this project)", "first 200 on /ready"])
    return table(["server", "what", "ready (end of cold start) ="], rows)


def _rows(data: dict[str, Any], headline: bool) -> list[list[str]]:
    peers = data.get("peers", {})
    per_peer = {
        label: comparisons(data["results"], peer.get("results", {}), label)
        for label, peer in peers.items()
    }
    by_label = {label: {c.metric.label: c for c in cs} for label, cs in per_peer.items()}
    order = list(dict.fromkeys(c.metric.label for cs in per_peer.values() for c in cs))
    rows = []
    for name in order:
        some = next(by_label[label][name] for label in peers if name in by_label[label])
        if headline and not some.metric.headline:
            continue
        row = [name, show(some.warmlm, some.metric.unit)]
        for label in peers:
            c = by_label[label].get(name)
            row += (
                ["—", "n/a (not run)"] if c is None else [show(c.other, c.metric.unit), c.verdict()]
            )
        rows.append(row)
    return rows


def _head(data: dict[str, Any]) -> list[str]:
    head = ["metric", "warmlm"]
    for label in data.get("peers", {}):
        head += [label, f"warmlm vs {label}"]
    return head


def _sizes(data: dict[str, Any]) -> str:
    """The options both sides of every pair ran with (those of the scenarios that ran)."""
    o = data.get("options", {})
    ran = set(data.get("results") or {})
    parts = [
        f"--threads {o.get('threads')}, --ctx {o.get('ctx')}, --parallel {o.get('parallel')} "
        "(warmlm and llama-server)"
    ]
    if "coldstart" in ran:
        parts.append(
            f"coldstart {o.get('coldstart_runs')} starts × {o.get('coldstart_prompts')} prompts "
            f"× max_tokens {o.get('coldstart_max_tokens')}"
        )
    if ran & {"single", "concurrency"}:
        levels = ",".join(str(n) for n in o.get("levels") or [])
        parts.append(f"single and concurrency max_tokens {o.get('max_tokens')}, streams {levels}")
    if "multiturn" in ran:
        parts.append(
            f"multiturn up to {o.get('multiturn_conversations', 1)} conversations × "
            f"{o.get('multiturn_turns')} turns on ~{o.get('multiturn_doc_tokens')}"
            f"-token documents × max_tokens {o.get('multiturn_max_tokens')} (median per turn)"
        )
    return "; ".join(parts)


def _headline_table(data: dict[str, Any]) -> str:
    rows = _rows(data, headline=True)
    if rows:
        return table(_head(data), rows)
    return (
        "(none in this run: they come from coldstart, multiturn and concurrency at "
        f"{' and '.join(map(str, HEADLINE_LEVELS))} streams)"
    )


def _peer_details(data: dict[str, Any], scenarios: dict[str, Scenario]) -> str:
    parts = []
    for label, peer in data.get("peers", {}).items():
        for name, result in peer.get("results", {}).items():
            scenario = scenarios.get(name)
            if scenario is None or "skipped" in result:
                continue
            if "error" in result:
                body = f"The scenario failed: `{result['error']}`"
            else:
                try:
                    body = scenario.markdown(result)
                except Exception as exc:  # a result of another version: say so, keep the rest
                    body = f"(cannot render: {type(exc).__name__}: {exc})"
            parts.append(
                f"<details><summary>{scenario.title} — {label}</summary>\n\n{body}\n\n</details>"
            )
    return "\n\n".join(parts)


def compare_section(data: dict[str, Any], scenarios: Sequence[Scenario], source: str) -> str:
    """The `compare` section of docs/benchmarks.md, from a JSON record with peers."""
    o = data.get("options", {})
    model = Path(str(o.get("model", "?"))).name
    headline = _headline_table(data)
    full = table(_head(data), _rows(data, headline=False))
    commands = "\n".join(
        f"- `{label}`: `{' '.join(str(a) for a in p.get('command', []))}`"
        for label, p in data.get("peers", {}).items()
    )
    return f"""## Compared with other servers

_Measured {data.get("date")} on {describe(data.get("machine", {}))}; model {model}; command
`{data.get("command")}`. Regenerate this page from the JSON: `warmlm bench report --from
{source}`._

Every scenario ran against warmlm and then against each peer, back to back, one server alive
at a time, on the same GGUF file with the same sizes: {_sizes(data)}. Each "warmlm vs" cell is
warmlm's advantage: peer ÷ warmlm for times, warmlm ÷ peer for throughput (so "warmlm 3× faster"
means the peer took three times as long). Peers report no `cached_tokens` and have no
`/metrics`, so those columns read — in their tables.

{_peer_table(data)}

Headline figures:

{headline}

Every compared figure:

{full}

Peer commands (port 0 stands for the free port picked at start):

{commands}

{_peer_details(data, {s.name: s for s in scenarios})}
"""


def compare_console(data: dict[str, Any]) -> str:
    """The headline comparison, for the terminal."""
    if not data.get("peers"):
        return ""
    rows = _rows(data, headline=True)
    if rows:
        return "compared with peers (headline figures):\n\n" + table(_head(data), rows)
    return "compared with peers:\n\n" + table(_head(data), _rows(data, headline=False))


# -- docs ---------------------------------------------------------------------------------------
def record_json(record: RunRecord) -> dict[str, Any]:
    """The record as its JSON file holds it (tuples as lists, paths as strings)."""
    return dict(json.loads(json.dumps(record.to_json(), default=str)))


def _plot_sections(data: dict[str, Any], docs: Path) -> dict[str, str]:
    """One section per plot this record has the data for (the others keep their old figure)."""
    try:
        from warmlm.bench.plots import write_plots
    except ImportError:  # matplotlib is the `bench` extra
        log.warning("plots skipped: matplotlib is not installed (pip install 'warmlm[bench]')")
        return {}
    # warmlm's own runs draw NAME.png; a run of another target (--url, --label) keeps apart,
    # and so does a comparison (NAME-compare.png), which a later run of warmlm alone would
    # otherwise redraw without its peers
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", str(data.get("options", {}).get("label", "warmlm")))
    suffix = "" if label == "warmlm" else f"-{label}"
    if data.get("peers"):
        suffix += "-compare"
    sections = {}
    for plot in write_plots(data, docs.parent / "bench", suffix):
        rel = os.path.relpath(plot.path, docs.parent).replace(os.sep, "/")
        sections[f"plot-{plot.name}{suffix}"] = (
            f"### Plot: {plot.title}\n\n_From the run of {data.get('date')} "
            f"(`{data.get('command')}`)._ {plot.caption}\n\n![{plot.title}]({rel})"
        )
    return sections


def publish(
    record: RunRecord,
    scenarios: Sequence[Scenario],
    full_run: bool,
    docs: Path,
    source: Path | None = None,
) -> None:
    """Rewrite the record's sections of `docs`: the scenarios', the comparison's, the plots'."""
    write_docs(record, scenarios, full_run, docs)
    data = record_json(record)
    sections: dict[str, str] = {}
    if data.get("peers"):
        from warmlm.bench.scenarios import all_scenarios

        src = source or Path(str(record.options.out)) / f"bench-{record.run_id}.json"
        sections[COMPARE_SECTION] = compare_section(data, all_scenarios(), str(src))
    sections.update(_plot_sections(data, docs))
    if sections:
        update_doc(docs, sections)


# -- `warmlm bench report --from FILE` ----------------------------------------------------------
def record_from_json(data: dict[str, Any], scenarios: Sequence[Scenario]) -> RunRecord:
    """A RunRecord rebuilt from its JSON file (targets recomputed from the results)."""
    known = {f.name: f for f in dataclasses.fields(BenchOptions)}
    values: dict[str, Any] = {}
    for key, value in (data.get("options") or {}).items():
        if key not in known:
            continue
        if isinstance(value, list):
            value = tuple(value)
        if key in ("out", "docs", "classify_data") and value is not None:
            value = Path(value)
        values[key] = value
    try:
        options = BenchOptions(**values)
    except TypeError as exc:
        raise ValueError(f"the JSON's options do not fit this version: {exc}") from exc
    results: dict[str, Result] = data.get("results") or {}
    targets: dict[str, list[Target]] = {}
    for s in scenarios:
        result = results.get(s.name)
        if result is not None and "skipped" not in result:
            try:
                targets[s.name] = s.targets(results)
            except Exception as exc:  # a result of another version
                log.warning("%s: targets not recomputed (%s)", s.name, exc)
    return RunRecord(
        run_id=str(data.get("run_id", "unknown")),
        date=str(data.get("date", "")),
        options=options,
        machine=data.get("machine") or {},
        results=results,
        targets=targets,
        peers=data.get("peers") or {},
    )


def regenerate(args: argparse.Namespace) -> int:
    """`warmlm bench report --from FILE`: rewrite --docs (sections and plots) from a result."""
    import sys

    from warmlm.bench.scenarios import all_scenarios

    source = getattr(args, "from_json", None)
    if source is None or len(args.scenarios) > 1:
        print("usage: warmlm bench report --from RESULT.json [--docs FILE]", file=sys.stderr)
        return 2
    if args.no_docs:
        print("warmlm bench report: nothing to do with --no-docs", file=sys.stderr)
        return 2
    try:
        data = json.loads(Path(source).read_text(encoding="utf-8"))
        scenarios = all_scenarios()
        record = record_from_json(data, scenarios)
    except (OSError, ValueError) as exc:
        print(f"warmlm bench report: {exc}", file=sys.stderr)
        return 2
    ran = [s for s in scenarios if s.name in record.results]
    default = {s.name for s in scenarios if s.in_all}
    publish(record, ran, default <= set(record.options.scenarios), args.docs, Path(source))
    print(f"docs: {args.docs} (from {source})")
    return 0
