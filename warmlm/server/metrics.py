"""Prometheus metrics on a per-app registry, fed by the engine observer and read at scrape time.

Names follow `warmlm:<name>_<unit>`; counters gain `_total` in the exposition. Histograms and
counters are updated on the engine thread by `MetricsObserver` (a few lock-protected adds per
token); gauges about the engine (running, waiting, KV cells, host cache) are read when
`/metrics` is scraped, defensively, so figures the engine adds later appear on their own.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from warmlm.engine.observer import EngineObserver
from warmlm.engine.request import Request as EngineRequest
from warmlm.server.reqlog import LatencyWindow, RequestLog, RequestMiddleware
from warmlm.service import rss_bytes

log = logging.getLogger("warmlm.metrics")
P = ParamSpec("P")
PREFIX = "warmlm:"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# buckets (seconds) for CPU latencies: first tokens up to a minute, token gaps from 5 ms to 2 s
TTFT = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60)
ITL = (0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2)
E2E = (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
QUEUE = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
STEP = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5)
CACHE_EVENT_LABELS = 16  # bound on distinct labels for cache events other than the named ones

# gauge name, help, candidate attributes (first found wins), always exported
ENGINE_GAUGES = (
    ("num_requests_running", "Requests holding a sequence slot.", ("num_running",), True),
    ("num_requests_waiting", "Requests queued for a slot.", ("num_waiting",), True),
)
KV_GAUGES = (
    ("kv_used_cells", "KV cells reserved by running requests or held by cached sequences.",
     ("cells_used", "cells_reserved"), True),
    ("kv_capacity_cells", "KV cells in the unified cache.", ("n_cells",), True),
    ("kv_cached_sequences", "Finished sequences kept in KV for prefix reuse.",
     ("cached_sequences", "cached_slots"), False),
    ("kv_cached_cells", "KV cells held by cached sequences.",
     ("cached_cells", "cells_cached", "cached_tokens"), False),
)  # fmt: skip


def _never_raises(fn: Callable[P, None]) -> Callable[P, None]:
    @functools.wraps(fn)
    def safe(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:  # an observer must never break the engine thread
            log.debug("metrics observer error", exc_info=True)

    return safe


@functools.cache
def mem_total_bytes() -> int:
    """The machine's memory (MemTotal in /proc/meminfo); 0 where unavailable."""
    try:
        with open("/proc/meminfo") as f:
            line = next((ln for ln in f if ln.startswith("MemTotal:")), "")
        return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0


def _number(obj: object, names: tuple[str, ...]) -> float | None:
    for name in names:
        try:
            value = getattr(obj, name, None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        except Exception:  # racing the engine thread or a half-built engine: skip the figure
            continue
    return None


class EngineCollector:
    """Gauges read from the engine at scrape time."""

    def __init__(self, engine_of: Callable[[], Any]) -> None:
        self._engine_of = engine_of

    def collect(self) -> Iterator[Metric]:
        engine = self._engine_of()
        kv = getattr(engine, "kv", None)
        for source, table in ((engine, ENGINE_GAUGES), (kv, KV_GAUGES)):
            for name, doc, attrs, always in table:
                value = _number(source, attrs)
                if value is not None or always:
                    yield GaugeMetricFamily(PREFIX + name, doc, value=value)
        yield self._host_cache(getattr(kv, "store", None))
        yield GaugeMetricFamily(
            PREFIX + "process_rss_bytes", "Resident set size of the server.", value=rss_bytes()
        )

    def _host_cache(self, store: object) -> Metric:
        family = GaugeMetricFamily(
            PREFIX + "host_cache_bytes", "Evicted KV states kept in host memory or on disk.",
            labels=["tier"],
        )  # fmt: skip
        for tier, owner, attr in (
            ("ram", store, "ram_used"),
            ("disk", getattr(store, "disk", None), "used_bytes"),  # lists the directory
        ):
            value = _number(owner, (attr,))
            if value is not None:
                family.add_metric([tier], value)
        return family


class Metrics:
    """Every metric of one app, on its own registry (two apps in a process never collide)."""

    def __init__(self, engine_of: Callable[[], Any]) -> None:
        disable_created_metrics()  # process-wide: the `_created` series only add noise
        self.registry = CollectorRegistry()
        self.ttft = self._hist("time_to_first_token_seconds", "Arrival to first token.", TTFT)
        self.itl = self._hist("inter_token_latency_seconds", "Gap between two tokens.", ITL)
        self.e2e = self._hist("e2e_request_latency_seconds", "Arrival to finish.", E2E)
        self.queue = self._hist("request_queue_time_seconds", "Arrival to admission.", QUEUE)
        self.prefill = self._hist("request_prefill_time_seconds", "Admission to first token.", TTFT)
        self.step = self._hist("engine_step_seconds", "One llama_decode step.", STEP)
        self.prompt_tokens = self._count("prompt_tokens", "Prompt tokens of admitted requests.")
        self.generation_tokens = self._count("generation_tokens", "Tokens sampled.")
        self.cached_tokens = self._count("cached_prompt_tokens", "Prompt tokens found in KV.")
        self.cache_queries = self._count("prefix_cache_queries", "Prompt tokens looked up.")
        self.cache_hits = self._count("prefix_cache_hits", "Prompt tokens reused from the cache.")
        self.evictions = self._count("kv_evictions", "Cached sequences evicted from KV.")
        self.restores = self._count("kv_restores", "Sequences restored from the host cache.")
        self.cache_events = self._count("kv_cache_events", "Other KV cache events.", "event")
        self.finished = self._count("request_finished", "Requests ended, by reason.", "reason")
        self.http = self._count("http_requests", "HTTP requests.", "endpoint", "status")
        self.registry.register(EngineCollector(engine_of))
        ProcessCollector(registry=self.registry)
        self.ttft_window = LatencyWindow()

    def _hist(self, name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(PREFIX + name, doc, buckets=buckets, registry=self.registry)

    def _count(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(PREFIX + name, doc, labels, registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def count_request(self, endpoint: str, status: int) -> None:
        self.http.labels(endpoint, str(status)).inc()

    def health(self, rss: int) -> dict[str, Any]:
        """The /health figures this module knows: memory share and recent TTFT percentiles."""
        total = mem_total_bytes()
        p50, p95, n = self.ttft_window.percentiles()
        return {
            "memory_total_bytes": total,
            "rss_percent": round(100.0 * rss / total, 2) if total else None,
            "ttft_p50_s": p50,
            "ttft_p95_s": p95,
            "ttft_window_requests": n,
        }


class MetricsObserver(EngineObserver):
    """Feeds `Metrics` (and the request log) from the engine thread; cheap, never raises."""

    def __init__(self, metrics: Metrics, requests: RequestLog | None = None) -> None:
        self.m = metrics
        self.requests = requests
        self._cache = {
            "query": metrics.cache_queries,
            "hit": metrics.cache_hits,
            "evict": metrics.evictions,
            "restore": metrics.restores,
        }
        self._other: set[str] = set()

    @_never_raises
    def on_admit(self, req: EngineRequest, queue_seconds: float) -> None:
        self.m.queue.observe(queue_seconds)
        self.m.prompt_tokens.inc(len(req.prompt_tokens))
        self.m.cached_tokens.inc(req.cached_tokens)

    @_never_raises
    def on_first_token(
        self, req: EngineRequest, ttft_seconds: float, prefill_seconds: float
    ) -> None:
        self.m.ttft.observe(ttft_seconds)
        self.m.prefill.observe(prefill_seconds)
        self.m.generation_tokens.inc()
        self.m.ttft_window.add(ttft_seconds)

    @_never_raises
    def on_token(self, req: EngineRequest, gap_seconds: float) -> None:
        self.m.itl.observe(gap_seconds)
        self.m.generation_tokens.inc()

    @_never_raises
    def on_finish(self, req: EngineRequest, reason: str, e2e_seconds: float) -> None:
        self.m.e2e.observe(e2e_seconds)
        self.m.finished.labels(reason).inc()
        if self.requests is not None:
            self.requests.engine_done(req, reason)

    @_never_raises
    def on_step(self, seconds: float, n_tokens: int, n_decode: int, n_prefill: int) -> None:
        self.m.step.observe(seconds)

    @_never_raises
    def on_cache(self, event: str, n: int = 1) -> None:
        counter = self._cache.get(event)
        if counter is not None:
            counter.inc(n)
            return
        if event not in self._other:
            if len(self._other) >= CACHE_EVENT_LABELS:
                event = "other"
            self._other.add(event)
        self.m.cache_events.labels(event).inc(n)


router = APIRouter()


@router.get("/metrics")
def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format (a sync route: the scrape reads /proc off the event loop)."""
    metrics = request.app.state.metrics
    assert isinstance(metrics, Metrics)
    return Response(metrics.render(), media_type=CONTENT_TYPE)


def health_fields(app: FastAPI, rss: int) -> dict[str, Any]:
    metrics = getattr(app.state, "metrics", None)
    return metrics.health(rss) if isinstance(metrics, Metrics) else {}


def install_observability(app: FastAPI) -> None:
    """`/metrics`, the request log and the HTTP counters; `app.state.observer` feeds them."""
    metrics = Metrics(lambda: getattr(getattr(app.state, "service", None), "engine", None))
    requests = RequestLog()
    app.state.metrics = metrics
    app.state.observer = MetricsObserver(metrics, requests)
    app.add_middleware(RequestMiddleware, requests=requests, count=metrics.count_request)
    app.include_router(router)
