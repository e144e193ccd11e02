"""`soak`: minutes of mixed traffic (chat, streams, cancelled streams, classify) against one
server: 5xx count, RSS slope, open files and p95 drift. `warmlm bench soak --minutes N`."""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.prompts import FILLER_WORDS, TOPICS, chat, filler_text
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.serverproc import read_status_kib
from warmlm.bench.stats import percentile
from warmlm.bench.targets import Target

MB = 1_000_000
SLOPE_GOAL = 1.0  # MB/min
DRIFT_GOAL = 20.0  # %
MAX_TOKENS = 32
SHORT = (
    " Too short for the RSS target: the KV RAM tier (--kv-ram-mb, 256 MB) takes about 10"
    " minutes to fill; run 30 minutes."
)
FULL = 0.95  # the RAM tier counts as full from this share of the most it held
TIER_GAUGE = re.compile(r'^warmlm:host_cache_bytes\{tier="ram"\} (\S+)$', re.MULTILINE)
KINDS = {"chat": 35, "stream": 35, "cancel": 15, "classify": 15}  # weights


@dataclass
class Traffic:
    """What the soak saw: one (start, kind, status, seconds) per request, memory samples."""

    started: float = field(default_factory=time.monotonic)
    requests: list[tuple[float, str, int, float]] = field(default_factory=list)
    # (seconds, RSS bytes, open files, 1-minute load average: others' work skews latencies)
    samples: list[tuple[float, int, int, float]] = field(default_factory=list)
    # (seconds, bytes in the server's KV RAM tier), from /metrics where the server has it
    tier: list[tuple[float, float]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    cut: int = 0  # requests still running at the end plus grace, cancelled


def _messages(rng: random.Random) -> list[dict[str, str]]:
    """A mix of repeated conversations (prefix reuse) and unique documents (cache churn)."""
    if rng.random() < 0.5:
        topic = rng.choice(TOPICS)
        return chat(f"In two sentences, what is {topic} good for?")
    doc = filler_text(rng.randint(40, 240), rng.randrange(1 << 30))
    return chat(f"{doc}\n\nWhich of these words appears most: {', '.join(FILLER_WORDS[:5])}?")


def _body(rng: random.Random, stream: bool) -> dict[str, Any]:
    return {
        "messages": _messages(rng),
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": stream,
    }


async def _one(http: httpx.AsyncClient, kind: str, rng: random.Random) -> int:
    if kind == "classify":
        text = filler_text(rng.randint(5, 40), rng.randrange(1 << 30))
        labels = ["weather", "places", "objects"]
        return (await http.post("/v1/classify", json={"input": text, "labels": labels})).status_code
    if kind == "chat":
        return (await http.post("/v1/chat/completions", json=_body(rng, False))).status_code
    cut = rng.randint(0, 6) if kind == "cancel" else None
    async with http.stream("POST", "/v1/chat/completions", json=_body(rng, True)) as resp:
        if cut == 0:  # gone before the first token: while queued or prefilling
            return resp.status_code
        seen = 0
        async for _ in resp.aiter_lines():
            seen += 1
            if cut is not None and seen >= cut:
                break  # leaving the block closes the connection: the server must abort
        return resp.status_code


async def _worker(
    http: httpx.AsyncClient, kinds: dict[str, int], end: float, seed: int, traffic: Traffic
) -> None:
    rng = random.Random(seed)
    names, weights = list(kinds), list(kinds.values())
    while time.monotonic() < end:
        kind = rng.choices(names, weights)[0]
        t0 = time.monotonic()
        try:
            status = await _one(http, kind, rng)
        except httpx.HTTPError as exc:
            traffic.errors[type(exc).__name__] += 1
            status = 0
        traffic.requests.append((t0 - traffic.started, kind, status, time.monotonic() - t0))


def _sample(pid: int | None) -> tuple[int, int, float]:
    load = os.getloadavg()[0]
    if pid is None:
        return 0, 0, load
    rss = read_status_kib(pid, "VmRSS") or 0
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = 0
    return rss * 1024, fds, load


async def _tier_bytes(http: httpx.AsyncClient) -> float | None:
    """The KV RAM tier's size from /metrics (None for a server without that gauge)."""
    try:
        resp = await http.get("/metrics")
    except httpx.HTTPError:
        return None
    found = TIER_GAUGE.search(resp.text) if resp.status_code == 200 else None
    return float(found[1]) if found else None


async def _sampler(
    http: httpx.AsyncClient, pid: int | None, every: float, end: float, traffic: Traffic
) -> None:
    while True:
        now = time.monotonic() - traffic.started
        traffic.samples.append((now, *_sample(pid)))
        tier = await _tier_bytes(http)
        if tier is not None:
            traffic.tier.append((now, tier))
        if time.monotonic() >= end:
            return
        await asyncio.sleep(min(every, max(0.0, end - time.monotonic())))


def settled_from(tier: list[tuple[float, float]], quarter: float) -> float:
    """When memory should stop growing: after the first quarter, and once the KV RAM tier has
    filled (first holds ≥ 95% of the most it held): a cache growing to its cap is no leak."""
    top = max((b for _, b in tier), default=0.0)
    if top <= 0:
        return quarter
    full = next(t for t, b in tier if b >= FULL * top)
    return max(quarter, full)


async def has_classify(http: httpx.AsyncClient) -> bool:
    """The server has /v1/classify when it answers anything but 404/405 to an empty body."""
    try:
        return (await http.post("/v1/classify", json={})).status_code not in (404, 405)
    except httpx.HTTPError:
        return False


async def run_soak(
    url: str, pid: int | None, seconds: float, workers: int = 6, api_key: str | None = None
) -> Result:
    """Drive mixed traffic for `seconds`; `pid` (local server) adds RSS and open files."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=workers + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as http:
        kinds = dict(KINDS)
        if not await has_classify(http):
            kinds.pop("classify")
        traffic = Traffic()
        end = traffic.started + seconds
        every = max(0.5, min(5.0, seconds / 24))
        sampler = asyncio.create_task(_sampler(http, pid, every, end, traffic))
        tasks = [asyncio.create_task(_worker(http, kinds, end, i, traffic)) for i in range(workers)]
        grace = min(60.0, max(5.0, seconds / 10))  # then requests still running are cut
        _, late = await asyncio.wait(tasks, timeout=seconds + grace)
        for task in late:
            task.cancel()
        await asyncio.gather(sampler, *late, return_exceptions=True)
        traffic.cut = len(late)
        traffic.samples.append((time.monotonic() - traffic.started, *_sample(pid)))
    return summarize(traffic, seconds, workers, sorted(kinds))


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return None
    return 60.0 * sum((t - mx) * (v - my) for t, v in points) / var


def summarize(traffic: Traffic, seconds: float, workers: int, kinds: list[str]) -> Result:
    reqs = traffic.requests
    statuses = Counter(f"{kind} {status}" for _, kind, status, _ in reqs)
    timed = [(t, s) for t, kind, status, s in reqs if status == 200 and kind in ("chat", "stream")]
    quarter = seconds / 4
    first = percentile([s for t, s in timed if t < quarter], 95.0)
    last = percentile([s for t, s in timed if t >= seconds - quarter], 95.0)
    settle = settled_from(traffic.tier, quarter)
    settled = [(t, rss / MB) for t, rss, _, _ in traffic.samples if t >= settle]
    rss = [r for _, r, _, _ in traffic.samples]
    fds = [f for _, _, f, _ in traffic.samples]
    return {
        "seconds": seconds,
        "workers": workers,
        "kinds": kinds,
        "requests": len(reqs),
        "statuses": dict(sorted(statuses.items())),
        "server_errors": sum(1 for _, _, status, _ in reqs if status >= 500),
        "transport_errors": dict(traffic.errors),
        "cut_at_end": traffic.cut,
        "rss_start_bytes": rss[0] if rss else None,
        "rss_end_bytes": rss[-1] if rss else None,
        "rss_slope_mb_per_min": slope_per_min(settled),
        "settled_at_s": settle,
        "tier_max_bytes": max((b for _, b in traffic.tier), default=None),
        "rss_slope_all_mb_per_min": slope_per_min([(t, r / MB) for t, r, _, _ in traffic.samples]),
        "load_average_max": max((x for *_, x in traffic.samples), default=None),
        "open_files": {"start": fds[0], "end": fds[-1], "max": max(fds)} if fds else None,
        "p95_first_quarter_s": first,
        "p95_last_quarter_s": last,
        "p95_drift_percent": None if not first or last is None else 100.0 * (last / first - 1),
        "samples": traffic.samples,
        "tier_samples": traffic.tier,
    }


class Soak(Scenario):
    name = "soak"
    title = "Soak"
    order = 55  # after rss; by name only (not in `all`)
    in_all = False  # long: run it by name
    needs = Needs.PROCESS

    async def run(self, ctx: BenchContext) -> Result:
        o = ctx.options
        minutes = getattr(o, "soak_minutes", 30)
        ctx.model_path()
        with ctx.new_server(ctx.spec(parallel=4), "soak") as server:
            await server.wait_ready(o.ready_timeout)
            result = await run_soak(server.url, server.pid, minutes * 60.0, api_key=o.api_key)
        return {"minutes": minutes, **result}

    def markdown(self, result: Result) -> str:
        files = result["open_files"] or {}
        rows = [
            ["requests", result["requests"]],
            ["5xx responses", result["server_errors"]],
            ["transport errors", sum(result["transport_errors"].values())],
            ["RSS start → end MB", f"{fmt(_mb(result['rss_start_bytes']))} → "
             f"{fmt(_mb(result['rss_end_bytes']))}"],
            ["slope measured from, min (first quarter; later if the KV RAM tier was filling)",
             fmt(_min(result.get("settled_at_s")))],
            ["KV RAM tier at most, MB", fmt(_mb(result.get("tier_max_bytes")))],
            ["RSS slope once settled, MB/min", fmt(result["rss_slope_mb_per_min"])],
            ["RSS slope over the whole run, MB/min", fmt(result["rss_slope_all_mb_per_min"])],
            ["open files start / end / max", f"{files.get('start')} / {files.get('end')} / "
             f"{files.get('max')}"],
            ["p95 end-to-end, first quarter ms", ms(result["p95_first_quarter_s"])],
            ["p95 end-to-end, last quarter ms", ms(result["p95_last_quarter_s"])],
            ["p95 drift %", fmt(result["p95_drift_percent"])],
            ["highest 1-minute load average", fmt(result["load_average_max"])],
        ]  # fmt: skip
        mix = ", ".join(result["kinds"])
        return (
            f"{result['minutes']} minutes of mixed traffic ({mix}; greedy, max_tokens "
            f"{MAX_TOKENS}; cancelled streams drop the connection after 0-6 events) from "
            f"{result['workers']} clients against a server with --parallel 4. Statuses: "
            f"{result['statuses']}.{SHORT if result['minutes'] < 10 else ''}\n\n"
            + table(["figure", "value"], rows)
        )

    def targets(self, results: Results) -> list[Target]:
        r = ok(results, self.name) or {}
        return [
            Target("soak: 5xx responses", r.get("server_errors"), 0, at_most=True, unit=""),
            Target("soak: RSS slope", r.get("rss_slope_mb_per_min"), SLOPE_GOAL, at_most=True,
                   unit=" MB/min",
                   note="linear fit after the first quarter, once the KV RAM tier is full"),
            Target("soak: p95 drift", r.get("p95_drift_percent"), DRIFT_GOAL, at_most=True,
                   unit=" %", note="last-quarter vs first-quarter p95 end-to-end"),
        ]  # fmt: skip


def _mb(value: float | None) -> float | None:
    return None if value is None else value / MB


def _min(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60.0


SCENARIO = Soak()
