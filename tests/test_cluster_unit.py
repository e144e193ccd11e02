"""warmlm.cluster without Ray: affinity keys, the affinity table, the in-process ASGI bridge, a
replica's readiness, the merged /metrics, the options and the CLI flags."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_app import CHAT, Gate, factory
from warmlm.cli import build_parser
from warmlm.cluster import procs
from warmlm.cluster.affinity import PROMPT_PREFIX_CHARS, AffinityTable, affinity_key, rendezvous
from warmlm.cluster.bridge import ForwardedRequest, call, request
from warmlm.cluster.core import REPLICA_HEADER, ReplicaCore, ReplicaFailed
from warmlm.cluster.launch import engine_settings, replica_config
from warmlm.cluster.metrics import merge
from warmlm.cluster.options import ClusterOptions, cluster_options, ray_requested
from warmlm.config import ConfigError, ServerConfig

CHAT_PATH = "/v1/chat/completions"


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def conversation(system: str, first: str, *later: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": first}]
    for text in later:
        messages += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": text}]
    return messages


# -- affinity keys ------------------------------------------------------------------------------
def test_every_turn_of_a_conversation_has_one_key() -> None:
    turns = [conversation("S", "first", *["more"] * n) for n in range(4)]
    keys = {affinity_key(CHAT_PATH, {}, body(messages=m, stream=True)) for m in turns}
    assert len(keys) == 1 and None not in keys


def test_conversations_differ_by_system_prompt_or_first_message() -> None:
    a = affinity_key(CHAT_PATH, {}, body(messages=conversation("S1", "hi")))
    b = affinity_key(CHAT_PATH, {}, body(messages=conversation("S2", "hi")))
    c = affinity_key(CHAT_PATH, {}, body(messages=conversation("S1", "hello")))
    assert len({a, b, c}) == 3


def test_content_parts_key_like_plain_text() -> None:
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "he"}, {"type": "text", "text": "y"}]}
    ]
    plain = [{"role": "user", "content": "hey"}]
    assert affinity_key(CHAT_PATH, {}, body(messages=parts)) == affinity_key(
        CHAT_PATH, {}, body(messages=plain)
    )


def test_session_header_then_user_field_win() -> None:
    one = body(messages=conversation("S", "a"), user="u1")
    two = body(messages=conversation("T", "b"), user="u1")
    assert affinity_key(CHAT_PATH, {}, one) == affinity_key(CHAT_PATH, {}, two)
    headed = affinity_key(CHAT_PATH, {"x-session-id": "s9"}, one)
    assert headed == affinity_key("/anything", {"x-session-id": "s9"}, b"")
    assert headed != affinity_key(CHAT_PATH, {}, one)


def test_completions_key_on_the_prompt_prefix() -> None:
    long = "x" * PROMPT_PREFIX_CHARS
    a = affinity_key("/v1/completions", {}, body(prompt=long + "turn one"))
    b = affinity_key("/v1/completions", {}, body(prompt=[long + "turn one, turn two"]))
    assert a == b is not None
    assert affinity_key("/v1/completions", {}, body(prompt="short")) != a


def test_classify_keys_on_the_instruction_not_the_inputs() -> None:
    a = affinity_key("/v1/classify", {}, body(labels=["pos", "neg"], input="great"))
    b = affinity_key("/v1/classify", {}, body(labels=["pos", "neg"], input="awful"))
    c = affinity_key("/v1/classify", {}, body(labels=["spam", "ham"], input="great"))
    assert a == b != c


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/models", b""),
        (CHAT_PATH, b"not json"),
        (CHAT_PATH, b"[1, 2]"),
        (CHAT_PATH, body(messages=[{"role": "assistant", "content": "x"}])),
        (CHAT_PATH, body(messages="nope")),
    ],
)
def test_no_key(path: str, raw: bytes) -> None:
    assert affinity_key(path, {}, raw) is None


# -- the affinity table -------------------------------------------------------------------------
def test_rendezvous_moves_only_the_keys_of_a_replica_that_leaves() -> None:
    keys = [f"k{i}" for i in range(300)]
    before = {k: rendezvous(k, ["a", "b", "c"]) for k in keys}
    after = {k: rendezvous(k, ["a", "c"]) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == "b" for k in moved)
    assert {before[k] for k in keys} == {"a", "b", "c"}  # all replicas get keys
    assert rendezvous("k", []) is None


def test_table_keeps_a_conversation_where_it_last_ran() -> None:
    table = AffinityTable(capacity=2)
    first = table.home("k", ["a", "b"])
    other = "b" if first == "a" else "a"
    table.served("k", other)  # spilled: its newest KV is there now
    assert table.home("k", ["a", "b", "c"]) == other  # a new replica does not take it
    assert table.home("k", [first, "c"]) == rendezvous("k", [first, "c"])  # its replica is gone
    table.served("x", "a")
    table.served("y", "a")
    assert table.last("k") is None and len(table) == 2  # LRU bound


# -- the bridge and a replica without Ray -------------------------------------------------------
def forwarded(method: str, path: str, payload: object | None = None) -> ForwardedRequest:
    raw = b"" if payload is None else json.dumps(payload).encode()
    return {
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "body": raw,
        "client": ("127.0.0.1", 5),
    }


async def collect(parts: object) -> tuple[int, dict[str, str], bytes]:
    status, headers, chunks = 0, {}, []
    async for part in parts:  # type: ignore[attr-defined]
        if part["kind"] == "start":
            status = part["status"]
            headers = {k.decode(): v.decode() for k, v in part["headers"]}
        else:
            chunks.append(part["body"])
    return status, headers, b"".join(chunks)


@pytest.mark.asyncio
async def test_replica_serves_routes_through_the_bridge() -> None:
    core = ReplicaCore(ServerConfig(model="fake", ctx=1024), "r1", service_factory=factory())
    await core.start(timeout=10)
    try:
        core.check()
        status, headers, raw = await collect(core.handle(forwarded("POST", CHAT_PATH, CHAT)))
        assert status == 200 and headers[REPLICA_HEADER] == "r1"
        assert json.loads(raw)["choices"][0]["message"]["content"]
        stream = {**CHAT, "stream": True}
        status, headers, raw = await collect(core.handle(forwarded("POST", CHAT_PATH, stream)))
        assert headers["content-type"].startswith("text/event-stream")
        assert raw.rstrip().endswith(b"data: [DONE]")
        status, _, raw = await collect(core.handle(forwarded("POST", CHAT_PATH, {"bad": 1})))
        assert status == 400 and json.loads(raw)["error"]
        status, _, page = await call(core.app, request("GET", "/"))
        assert status == 200 and b"<html" in page.lower()
        status, _, metrics = await call(core.app, request("GET", "/metrics"))
        assert status == 200 and b"warmlm:" in metrics
        visit = await core.visit(request("GET", "/health"))
        assert visit["status"] == 200 and json.loads(visit["body"])["status"] == "ready"
        assert visit["replica"] == "r1" and visit["pid"] == os.getpid()
        assert visit["ready_at"] is not None and visit["ready_at"] <= time.time()
        stats = core.stats()  # what the ingress's /health shows of this replica
        assert stats["status"] == "ready" and stats["running"] == 0 and stats["pid"] == os.getpid()
        assert stats["model"]["name"] == "fake" and stats["ready_at"] == visit["ready_at"]
    finally:
        await core.stop()


@pytest.mark.asyncio
async def test_closing_a_stream_early_aborts_its_generation() -> None:
    core = ReplicaCore(ServerConfig(model="fake", ctx=1024), "r1", service_factory=factory())
    await core.start(timeout=10)
    try:
        long = {**CHAT, "stream": True, "max_tokens": 200}
        parts = core.handle(forwarded("POST", CHAT_PATH, long))
        assert (await parts.__anext__())["kind"] == "start"
        await parts.aclose()
        engine = core.service.engine
        assert engine is not None
        deadline = time.monotonic() + 5
        while engine.num_running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert engine.num_running == 0
    finally:
        await core.stop()


@pytest.mark.asyncio
async def test_a_replica_is_ready_only_when_warm() -> None:
    warm = Gate()
    core = ReplicaCore(ServerConfig(model="fake"), "r2", service_factory=factory(warm_gate=warm))
    start = asyncio.ensure_future(core.start(timeout=10))
    await asyncio.to_thread(warm.entered.wait, 5)
    await asyncio.sleep(0.05)
    assert not start.done()  # Serve would not route to it yet
    with pytest.raises(ReplicaFailed, match="warming"):
        core.check()
    warm.opened.set()
    await asyncio.wait_for(start, 10)
    core.check()
    await core.stop()


@pytest.mark.asyncio
async def test_a_replica_whose_model_fails_raises() -> None:
    core = ReplicaCore(ServerConfig(model="fake"), "r3", service_factory=factory(fail="no model"))
    with pytest.raises(ReplicaFailed, match="no model"):
        await core.start(timeout=10)


@pytest.mark.asyncio
async def test_health_check_fails_when_the_engine_dies() -> None:
    core = ReplicaCore(ServerConfig(model="fake"), "r4", service_factory=factory())
    await core.start(timeout=10)
    try:
        core.service._engine_failed("engine thread crashed")
        with pytest.raises(ReplicaFailed, match="crashed"):
            core.check()
    finally:
        await core.stop()


# -- metrics ------------------------------------------------------------------------------------
REPLICA_METRICS = """# HELP warmlm:prompt_tokens_total Prompt tokens.
# TYPE warmlm:prompt_tokens_total counter
warmlm:prompt_tokens_total {n}
# HELP warmlm:host_cache_bytes Host cache.
# TYPE warmlm:host_cache_bytes gauge
warmlm:host_cache_bytes{{tier="ram"}} 7.0
"""


def test_metrics_merge_labels_every_replica() -> None:
    text = merge(
        {"a": REPLICA_METRICS.format(n=3), "b": REPLICA_METRICS.format(n=5)},
        {"RUNNING": 2, "STARTING": 1},
    ).decode()
    assert text.count("# TYPE warmlm:prompt_tokens_total counter") == 1
    assert 'warmlm:prompt_tokens_total{replica="a"} 3.0' in text
    assert 'warmlm:prompt_tokens_total{replica="b"} 5.0' in text
    assert 'warmlm:host_cache_bytes{replica="b",tier="ram"} 7.0' in text
    assert 'warmlm:cluster_replicas{state="starting"} 1.0' in text
    assert "warmlm:router_requests_total" in text


# -- options and flags --------------------------------------------------------------------------
def test_cluster_options() -> None:
    assert cluster_options(None, None, None, None, None).replicas == 2
    opts = cluster_options(None, "1:4", "10.0.0.1:6379", 2)
    assert opts.autoscale == (1, 4) and opts.max_replicas == 4 and opts.replica_threads == 2
    assert opts.address == "10.0.0.1:6379" and opts.initial_replicas == 1
    assert cluster_options(3, None, None, None, threads=5).replica_threads == 5
    assert ClusterOptions(autoscale=(0, 2)).initial_replicas == 1
    for bad in ("4", "a:b", "3:1", "0:0"):
        with pytest.raises(ConfigError):
            cluster_options(None, bad, None, None)
    with pytest.raises(ConfigError, match="exclusive"):
        cluster_options(2, "1:2", None, None)
    with pytest.raises(ConfigError):
        ClusterOptions(replicas=0)


def test_engine_deployment_settings() -> None:
    config = ServerConfig(model="m", parallel=4)
    fixed = engine_settings(config, ClusterOptions(replicas=3, replica_threads=2))
    assert fixed["num_replicas"] == 3 and fixed["ray_actor_options"] == {"num_cpus": 2}
    router = fixed["request_router_config"]
    assert router["request_router_class"] == "warmlm.cluster.router.AffinityRouter"
    assert router["request_router_kwargs"] == {"spill_at": 8}
    assert fixed["max_ongoing_requests"] > 8  # headroom above the saturation point
    scaled = engine_settings(config, ClusterOptions(autoscale=(1, 4)))
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"]["target_ongoing_requests"] == 4
    assert scaled["autoscaling_config"]["max_replicas"] == 4
    assert replica_config(config, ClusterOptions(replica_threads=3)).threads == 3


def test_serve_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["serve", "--ray", "--autoscale", "1:3", "--ray-address", "auto", "--replica-threads", "1"]
    )
    assert ray_requested(args) and args.autoscale == "1:3" and args.ray_address == "auto"
    assert not ray_requested(parser.parse_args(["serve"]))
    with pytest.raises(ConfigError, match="--replicas only apply with --ray"):
        ray_requested(parser.parse_args(["serve", "--replicas", "2"]))


def test_procs_finds_and_ends_descendants(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(15, signal.SIG_IGN); "
         "open(r'%s', 'w').close(); time.sleep(60)" % (tmp_path / "up")]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "up").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        mine = procs.descendants()
        assert child.pid in [pid for pid, _ in mine]
        target = [p for p in mine if p[0] == child.pid]
        assert procs.end(target, grace=0.2) == target
        child.wait(5)
        assert not procs.alive(target[0])
    finally:
        child.kill()
        child.wait()
