"""/metrics and /health on a scripted engine: every family present, and the right ones move."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.test_app import CHAT, _wait_status, factory
from warmlm.config import ServerConfig
from warmlm.server.app import create_app
from warmlm.server.metrics import EngineCollector, Metrics, MetricsObserver
from warmlm.server.reqlog import LatencyWindow

HISTOGRAMS = [
    "warmlm:time_to_first_token_seconds",
    "warmlm:inter_token_latency_seconds",
    "warmlm:e2e_request_latency_seconds",
    "warmlm:request_queue_time_seconds",
    "warmlm:request_prefill_time_seconds",
    "warmlm:engine_step_seconds",
]
COUNTERS = [
    "warmlm:prompt_tokens",
    "warmlm:generation_tokens",
    "warmlm:cached_prompt_tokens",
    "warmlm:prefix_cache_queries",
    "warmlm:prefix_cache_hits",
    "warmlm:kv_evictions",
    "warmlm:kv_restores",
    "warmlm:request_finished",
    "warmlm:http_requests",
]
GAUGES = [
    "warmlm:num_requests_running",
    "warmlm:num_requests_waiting",
    "warmlm:kv_used_cells",
    "warmlm:kv_capacity_cells",
    "warmlm:host_cache_bytes",
    "warmlm:process_rss_bytes",
    "process_resident_memory_bytes",
    "process_cpu_seconds",
]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_app(ServerConfig(model="fake", ctx=1024), service_factory=factory())
    with TestClient(app) as c:
        _wait_status(c, "ready")
        yield c


def scrape(client: TestClient) -> tuple[dict[str, str], Samples]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_every_family_is_exported_with_its_type(client: TestClient) -> None:
    types, samples = scrape(client)
    for name in HISTOGRAMS:
        assert types.get(name) == "histogram", name
    for name in COUNTERS:
        assert types.get(name) == "counter", name
    for name in GAUGES[:-1]:
        assert types.get(name) == "gauge", name
    assert types.get("process_cpu_seconds") == "counter"
    assert not any(name.endswith("_created") for name in types)
    assert value(samples, "warmlm:kv_capacity_cells") == 1024
    assert value(samples, "warmlm:process_rss_bytes") > 0
    assert value(samples, "process_resident_memory_bytes") > 0


def test_metrics_move_under_traffic(client: TestClient) -> None:
    _, before = scrape(client)
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
        assert r.status_code == 200 and list(r.iter_lines())
    assert client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200
    assert client.post("/v1/chat/completions", json={"messages": []}).status_code == 400
    _, after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for name in HISTOGRAMS:
        if name not in ("warmlm:inter_token_latency_seconds", "warmlm:engine_step_seconds"):
            assert delta(name + "_count") == 3, name  # one per request
    assert delta("warmlm:inter_token_latency_seconds_count") == 3 + 3 + 1
    assert delta("warmlm:engine_step_seconds_count") >= 10
    assert delta("warmlm:generation_tokens_total") == 4 + 4 + 2
    assert delta("warmlm:prompt_tokens_total") > 0
    assert delta("warmlm:prefix_cache_queries_total") == delta("warmlm:prompt_tokens_total")
    assert delta("warmlm:prefix_cache_hits_total") > 0  # the same chat twice reuses its prefix
    assert delta("warmlm:cached_prompt_tokens_total") == delta("warmlm:prefix_cache_hits_total")
    assert delta("warmlm:request_finished_total", reason="length") == 3
    chat = "/v1/chat/completions"
    assert delta("warmlm:http_requests_total", endpoint=chat, status="200") == 2
    assert delta("warmlm:http_requests_total", endpoint=chat, status="400") == 1
    assert delta("warmlm:http_requests_total", endpoint="/v1/completions", status="200") == 1
    assert value(after, "warmlm:num_requests_running") == 0
    assert value(after, "warmlm:kv_used_cells") > 0


def test_unmatched_routes_share_one_label(client: TestClient) -> None:
    client.get("/v1/nope-1")
    client.get("/v1/nope-2")
    _, samples = scrape(client)
    assert value(samples, "warmlm:http_requests_total", endpoint="other", status="404") == 2


def test_two_apps_in_one_process_do_not_collide() -> None:
    a = create_app(ServerConfig(model="fake"), service_factory=factory())
    b = create_app(ServerConfig(model="fake"), service_factory=factory())
    assert a.state.metrics.registry is not b.state.metrics.registry
    a.state.metrics.count_request("/x", 200)
    assert b"/x" not in b.state.metrics.render()


def test_health_reports_memory_share_and_recent_ttft(client: TestClient) -> None:
    client.post("/v1/chat/completions", json=CHAT)
    body = client.get("/health").json()
    assert body["status"] == "ready" and body["model"]["name"] == "fake"
    assert {"uptime_s", "threads", "parallel", "running", "waiting"} <= set(body)
    assert body["memory_total_bytes"] > body["rss_bytes"] > 0
    assert 0 < body["rss_percent"] < 100
    assert body["ttft_window_requests"] >= 2  # warm-up and the chat
    assert 0 <= body["ttft_p50_s"] <= body["ttft_p95_s"]


def test_latency_window_percentiles_keep_recent_values() -> None:
    window = LatencyWindow(size=4)
    assert window.percentiles() == (None, None, 0)
    for v in (9.0, 9.0, 1.0, 2.0, 3.0, 4.0):
        window.add(v)
    assert window.percentiles() == (2.0, 4.0, 4)
    stale = LatencyWindow(seconds=-1.0)
    stale.add(1.0)
    assert stale.percentiles() == (None, None, 0)


def test_observer_counts_cache_events_and_never_raises() -> None:
    metrics = Metrics(lambda: None)
    obs = MetricsObserver(metrics)
    obs.on_cache("evict")
    obs.on_cache("restore", 2)
    for i in range(40):
        obs.on_cache(f"novel-{i}")
    obs.on_first_token(None, 0.1, 0.1)  # type: ignore[arg-type]  # a broken call is swallowed
    obs.on_finish(None, "stop", 1.0)  # type: ignore[arg-type]
    text = metrics.render().decode()
    assert "warmlm:kv_evictions_total 1.0" in text and "warmlm:kv_restores_total 2.0" in text
    assert text.count("warmlm:kv_cache_events_total{") <= 17 and 'event="other"' in text


def test_collector_reads_engine_figures_defensively() -> None:
    class Racy:
        @property
        def cells_reserved(self) -> int:
            raise AttributeError("slot owner vanished mid-scrape")

    store = SimpleNamespace(ram_used=4096, disk=SimpleNamespace(used_bytes=8192))
    kv = SimpleNamespace(n_cells=512, cached_slots=3, cached_cells=40, store=store)
    engine = SimpleNamespace(num_running=1, num_waiting=2, kv=kv)
    got = {
        (m.name, tuple(s.labels.values())): s.value
        for m in EngineCollector(lambda: engine).collect()
        for s in m.samples
    }
    assert got[("warmlm:num_requests_waiting", ())] == 2
    assert got[("warmlm:kv_cached_cells", ())] == 40
    assert got[("warmlm:host_cache_bytes", ("disk",))] == 8192
    racy = SimpleNamespace(num_running=0, num_waiting=0, kv=Racy())
    names = {m.name: m.samples for m in EngineCollector(lambda: racy).collect()}
    assert names["warmlm:kv_used_cells"] == [] and "warmlm:kv_cached_cells" not in names
