"""`warmlm bench --compare`: ratios, peer command lines, pair-by-pair runs, the Flask peer's SSE."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from warmlm.bench.client import _Recorder
from warmlm.bench.compare import (
    ComparePlan,
    Comparison,
    Metric,
    advantage,
    compare_console,
    compare_plan,
    compare_section,
    comparisons,
    metrics_for,
    record_from_json,
    record_json,
    run_pairs,
)
from warmlm.bench.context import BenchContext
from warmlm.bench.options import BenchOptions
from warmlm.bench.peers import (
    FLASK,
    LLAMA_CPP_PYTHON,
    LLAMA_SERVER,
    FlaskSpec,
    LlamaCppPythonSpec,
    LlamaServerSpec,
    PeerSpec,
    make_peer,
    peer_names,
)
from warmlm.bench.report import RunRecord
from warmlm.bench.scenarios import all_scenarios
from warmlm.bench.scenarios._conversation import CacheSpec
from warmlm.bench.scenarios.base import Needs, Result, Scenario
from warmlm.bench.serverproc import ServerSpec
from warmlm.bench.sse import SSEParser
from warmlm.cli import build_parser

MACHINE = {"cpu": "Test CPU", "cores": 2, "ram_bytes": 24 * 1024**3, "simd": ["avx2"]}
GGUF = Path("/models/m.gguf")
BASE = ServerSpec(model="m", threads=2, parallel=8, ctx=8192)


# -- canned results (also used by test_bench_plots) ---------------------------------------------
def stream(ttft: float, tokens: int, tps: float, cached: int | None = None) -> dict[str, Any]:
    return {
        "ttft_s": ttft,
        "e2e_s": ttft + tokens / tps,
        "decode_tps": tps,
        "completion_tokens": tokens,
        "content_chunks": tokens,
        "prompt_tokens": 40,
        "finish_reason": "length",
        "error": None,
        "cached_tokens": cached,
    }


def canned_results(slow: float, cached: bool = True) -> dict[str, Result]:
    """Results of coldstart, single, concurrency and multiturn; `slow` scales every time."""
    ttfts = [0.05 * slow * (3 if k == 0 else 1) for k in range(3)]
    runs = [
        {
            "ready_s": 0.9 * slow,
            "ttft_s": ttfts,
            "first_over_last": ttfts[0] / ttfts[-1],
            "prompt_tokens": [30],
            "equal_length": True,
            "errors": [],
            "peak_rss_bytes": int(300 * 2**20 * slow),
        }
        for _ in range(2)
    ]
    levels = []
    for n in (1, 2, 4, 8):
        streams = [stream(0.05 * slow * (1 + k), 16, 40.0 / slow) for k in range(n)]
        levels.append(
            {
                "level": n,
                "wait_check_applies": True,
                "requests": n,
                "errors": [],
                "completion_tokens": 16 * n,
                "aggregate_tps": 40.0 * min(n, 4) / slow,
                "decode_aggregate_tps": 45.0 * min(n, 4) / slow,
                "decode_window": "all-decoding",
                "ttft_p50_s": 0.05 * slow * n,
                "ttft_p95_s": 0.08 * slow * n,
                "itl_p50_s": 0.025 * slow,
                "itl_p95_s": 0.04 * slow,
                "waited_for_other": 0,
                "streams": streams,
            }
        )
    turns = [
        stream(0.3 * slow if t == 0 else 0.04 * slow * (1 + t), 8, 40.0 / slow) for t in range(4)
    ]
    for t, turn in enumerate(turns):
        turn["cached_tokens"] = (100 * t) if cached else None
    paused = [  # after a pause a warm server has its next turn's opening prefilled
        {**turn, "ttft_s": turn["ttft_s"] * (0.75 if cached and t else 1.0)}
        for t, turn in enumerate(turns)
    ]
    return {
        "coldstart": {
            "runs": runs,
            "prompts": 3,
            "max_tokens": 16,
            "ready_s": 0.9 * slow,
            "ttft_first_s": ttfts[0],
            "ttft_last_s": ttfts[-1],
            "first_over_last": 3.0,
        },
        "single": {
            "max_tokens": 16,
            "requests": [stream(0.04 * slow, 16, 40.0 / slow)],
            "ttft_s": 0.04 * slow,
            "decode_tps": 40.0 / slow,
            "completion_tokens": 16,
            "errors": [],
        },
        "concurrency": {"max_tokens": 16, "parallel": 8, "levels": levels},
        "multiturn": {
            "doc_tokens": 400,
            "tokens_per_word": 1.3,
            "tokens_per_word_measured": True,
            "max_tokens": 8,
            "turns": turns,
            "last_over_first": turns[-1]["ttft_s"] / turns[0]["ttft_s"],
            "paused": {"pause_s": 1.0, "turns": paused},
        },
    }


def bench_options(tmp_path: Path, *argv: str) -> BenchOptions:
    args = build_parser().parse_args(["bench", *argv, "--out", str(tmp_path / "out")])
    known = tuple(s.name for s in all_scenarios())
    return BenchOptions.from_args(args, known, known)


def canned_json(tmp_path: Path) -> dict[str, Any]:
    """A whole --compare record as its JSON file holds it: warmlm and two slower peers."""
    opts = bench_options(
        tmp_path, "coldstart", "single", "concurrency", "multiturn", "--compare", "--threads", "2"
    )
    peers: dict[str, Any] = {}
    for peer, slow in (
        (make_peer(LLAMA_CPP_PYTHON, BASE, GGUF), 2.0),
        (make_peer(FLASK, BASE, GGUF), 10.0),
    ):
        peers[peer.label] = {**peer.describe(), "results": canned_results(slow, cached=False)}
    peers[FLASK]["results"]["multiturn"] = {"error": "RuntimeError: turn 2 failed"}
    record = RunRecord(
        "20250101-000000",
        "2025-01-01 00:00 UTC",
        opts,
        MACHINE,
        canned_results(1.0),
        {},
        peers=peers,
    )
    return record_json(record)


# -- ratios -------------------------------------------------------------------------------------
def metric(higher: bool, unit: str = "ms") -> Metric:
    return Metric("single", "x", unit, higher, lambda r: None)


def test_advantage_is_peer_over_warmlm_for_times_and_warmlm_over_peer_for_rates() -> None:
    assert advantage(metric(False), 0.1, 0.3) == pytest.approx(3.0)  # peer took 3× as long
    assert advantage(metric(True, "tok/s"), 30.0, 10.0) == pytest.approx(3.0)  # 3× the tok/s
    assert advantage(metric(False), 0.3, 0.1) == pytest.approx(1 / 3)
    for warm, peer in ((None, 1.0), (1.0, None), (0.0, 1.0), (1.0, 0.0)):
        assert advantage(metric(False), warm, peer) is None


def test_verdicts_name_who_is_ahead() -> None:
    fast = Comparison(metric(False), "flask", 0.1, 0.25)
    assert fast.verdict() == "warmlm 2.5× faster" and fast.ahead is True
    slow = Comparison(metric(True, "tok/s"), "llama-cpp-python", 10.0, 20.0)
    assert slow.verdict() == "llama-cpp-python 2× the throughput" and slow.ahead is False
    rss = Comparison(metric(False, "MiB"), "flask", 100.0, 1500.0)
    assert rss.verdict() == "warmlm 15× less memory"
    big = Comparison(metric(False), "flask", 0.01, 12.0)
    assert big.verdict() == "warmlm 1200× faster"
    missing = Comparison(metric(False), "flask", 0.1, None, "flask: failed")
    assert missing.verdict() == "n/a (flask: failed)" and missing.ahead is None
    d = fast.to_dict()
    assert d["advantage"] == pytest.approx(2.5) and d["warmlm_ahead"] is True


def test_comparisons_over_canned_results(tmp_path: Path) -> None:
    warm, peer = canned_results(1.0), canned_results(4.0, cached=False)
    peer["multiturn"] = {"error": "boom"}
    rows = {c.metric.label: c for c in comparisons(warm, peer, "flask")}
    assert rows["cold start: process start → ready"].advantage == pytest.approx(4.0)
    first = rows["cold start: process start → first token"]
    assert first.warmlm == pytest.approx(0.9 + 0.15) and first.advantage == pytest.approx(4.0)
    assert rows["4 streams: aggregate throughput"].advantage == pytest.approx(4.0)
    assert rows["8 streams: aggregate throughput"].metric.headline
    assert not rows["2 streams: aggregate throughput"].metric.headline
    assert rows["single stream: decode"].metric.higher_is_better
    turn = rows["multi-turn: last-turn TTFT"]
    assert turn.other is None and turn.advantage is None and "flask: failed" in turn.verdict()
    headline = {label for label, c in rows.items() if c.metric.headline}
    assert headline == {
        "cold start: process start → ready",
        "cold start: first-request TTFT",
        "cold start: process start → first token",
        "4 streams: aggregate throughput",
        "8 streams: aggregate throughput",
        "multi-turn: mean TTFT of turns 2…n",
        "multi-turn: last-turn TTFT",
        "multi-turn, 1 s pauses: mean TTFT of turns 2…n",
        "multi-turn, 1 s pauses: last-turn TTFT",
    }
    paused = rows["multi-turn, 1 s pauses: last-turn TTFT"]
    assert paused.warmlm == pytest.approx(0.04 * 4 * 0.75) and paused.other is None
    # a scenario only warmlm ran: its metrics are n/a for the peer, not an error
    only = comparisons({"single": warm["single"]}, {}, "flask")
    assert only and all(c.advantage is None and "not run" in c.verdict() for c in only)


def test_concurrency_metrics_follow_warmlm_levels() -> None:
    result = {"levels": [{"level": 1}, {"level": 3}]}
    labels = [m.label for m in metrics_for("concurrency", result)]
    assert "3 streams: aggregate throughput" in labels and len(labels) == 6
    assert metrics_for("ceiling", None) == []


def test_compare_section_and_console(tmp_path: Path) -> None:
    data = canned_json(tmp_path)
    text = compare_section(data, all_scenarios(), "bench-results/bench-x.json")
    assert "## Compared with other servers" in text
    assert "warmlm bench report --from\nbench-results/bench-x.json" in text
    assert "| metric | warmlm | llama-cpp-python | warmlm vs llama-cpp-python | flask |" in text
    assert "warmlm 2× faster" in text and "warmlm 10× faster" in text
    assert "n/a (flask: failed)" in text  # the failed multiturn
    assert "llama_cpp.server" in text and "warmlm.bench.peers.flask_app" in text
    assert "<details><summary>Multi-turn conversation — llama-cpp-python</summary>" in text
    console = compare_console(data)
    assert "4 streams: aggregate throughput" in console and "ITL" not in console
    assert compare_console({"results": {}}) == ""
    # a run without headline figures (e.g. `single concurrency --levels 1,2`) shows them all
    small = {**data, "results": {"single": data["results"]["single"]}}
    small["peers"] = {
        label: {**peer, "results": {"single": peer["results"]["single"]}}
        for label, peer in data["peers"].items()
    }
    assert "single stream: decode" in compare_console(small)
    text = compare_section(small, all_scenarios(), "x.json")
    assert "(none in this run" in text and "coldstart" not in text.split("same sizes:")[1][:200]


def test_record_round_trips_through_json(tmp_path: Path) -> None:
    data = canned_json(tmp_path)
    again = record_from_json(json.loads(json.dumps(data)), all_scenarios())
    assert again.options.levels == (1, 2, 4, 8) and again.options.out == tmp_path / "out"
    assert set(again.peers) == {LLAMA_CPP_PYTHON, FLASK}
    assert record_json(again)["peers"] == data["peers"]
    assert "single" in again.targets
    with pytest.raises(ValueError):
        record_from_json({"options": {"model": "m"}}, all_scenarios())


# -- peers --------------------------------------------------------------------------------------
def test_llama_cpp_python_command() -> None:
    peer = make_peer(LLAMA_CPP_PYTHON, BASE, GGUF)
    assert isinstance(peer, LlamaCppPythonSpec) and peer.ready_path == "/v1/models"
    cmd = peer.command(8123)
    assert cmd[:3] == [sys.executable, "-m", "llama_cpp.server"]

    def flag(name: str) -> str:
        return cmd[cmd.index(name) + 1]

    assert flag("--model") == str(GGUF) and flag("--n_threads") == "2"
    assert flag("--n_threads_batch") == "2" and flag("--n_ctx") == "8192"
    assert flag("--interrupt_requests") == "False"  # queued requests wait, they do not cut in
    assert flag("--host") == "127.0.0.1" and flag("--port") == "8123"


def test_llama_server_command_gives_each_slot_the_context() -> None:
    peer = make_peer(LLAMA_SERVER, BASE, GGUF, Path("/opt/llama-server"))
    assert isinstance(peer, LlamaServerSpec) and peer.ready_path == "/health"
    cmd = peer.command(9)
    assert cmd[0] == "/opt/llama-server"
    assert cmd[cmd.index("--ctx-size") + 1] == str(8192 * 8)
    assert cmd[cmd.index("--parallel") + 1] == "8" and cmd[cmd.index("--threads") + 1] == "2"
    with pytest.raises(ValueError):
        make_peer(LLAMA_SERVER, BASE, GGUF)


def test_flask_command_and_ready() -> None:
    peer = make_peer(FLASK, BASE, GGUF)
    assert isinstance(peer, FlaskSpec) and peer.ready_path == "/v1/models"
    cmd = peer.command(7)
    assert cmd[:3] == [sys.executable, "-m", "warmlm.bench.peers.flask_app"]
    assert cmd[cmd.index("--gguf") + 1] == str(GGUF) and cmd[cmd.index("--threads") + 1] == "2"
    assert "--preload" not in cmd
    assert "lazily" in peer.describe()["ready"]  # type: ignore[operator]


def test_a_peer_takes_a_scenarios_ctx_but_not_warmlm_flags() -> None:
    peer = make_peer(LLAMA_CPP_PYTHON, BASE, GGUF)
    cache = CacheSpec.of(ServerSpec("m", 2, 4, 16384), cache_slots=4, kv_ram_mb=256)
    moved = peer.like(cache)
    assert isinstance(moved, LlamaCppPythonSpec) and moved.ctx == 16384 and moved.parallel == 4
    assert "--cache-slots" not in moved.command(1) and moved.gguf == GGUF
    assert peer.like(moved) is moved


def test_peer_names() -> None:
    assert peer_names(None, None) == (LLAMA_CPP_PYTHON, FLASK)
    assert peer_names("all", Path("/x")) == (LLAMA_CPP_PYTHON, LLAMA_SERVER, FLASK)
    assert peer_names("flask, flask", None) == (FLASK,)
    with pytest.raises(ValueError, match="unknown peer"):
        peer_names("vllm", None)
    with pytest.raises(ValueError, match="--llama-server"):
        peer_names("llama-server", None)


def test_compare_plan_from_the_command_line(tmp_path: Path) -> None:
    parse = build_parser().parse_args
    assert compare_plan(parse(["bench", "single"])) is None
    plan = compare_plan(parse(["bench", "--compare"]))
    assert plan == ComparePlan((LLAMA_CPP_PYTHON, FLASK))
    assert plan.default == ("coldstart", "single", "concurrency", "multiturn")
    assert compare_plan(parse(["bench", "--compare", "flask"])) == ComparePlan((FLASK,))
    with pytest.raises(ValueError, match="--url"):
        compare_plan(parse(["bench", "--compare", "--url", "http://127.0.0.1:1"]))
    with pytest.raises(ValueError, match="only used with --compare"):
        compare_plan(parse(["bench", "--llama-server", "/bin/true"]))
    with pytest.raises(ValueError, match="not an executable"):
        compare_plan(parse(["bench", "--compare", "--llama-server", str(tmp_path / "none")]))


# -- pair by pair -------------------------------------------------------------------------------
@pytest.fixture
def static_peer(tmp_path: Path) -> PeerSpec:
    """A peer that is `python -m http.server` over a folder holding `v1/models`: ready in a blink,
    no model."""
    root = tmp_path / "www"
    (root / "v1").mkdir(parents=True)
    (root / "v1" / "models").write_text('{"data": []}')

    class StaticSpec(LlamaCppPythonSpec):
        label = "static"

        def command(self, port: int) -> list[str]:
            return [
                sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                "--directory", str(root),
            ]  # fmt: skip

    return StaticSpec("m", 1, 2, 512, GGUF)


class ServerFake(Scenario):
    name = "single"  # a comparable name
    title = "Fake server scenario"
    needs = Needs.SERVER

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def run(self, ctx: BenchContext) -> Result:
        url = ctx.options.url
        self.log.append(f"server:{ctx.options.label}:{'url' if url else 'own'}")
        return {"url": url}

    def markdown(self, result: Result) -> str:
        return "fake"


class ProcessFake(Scenario):
    name = "coldstart"
    title = "Fake process scenario"
    needs = Needs.PROCESS

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def run(self, ctx: BenchContext) -> Result:
        spec = ctx.spec(ctx=1024)
        self.log.append(f"process:{ctx.options.label}:{type(spec).__name__}")
        if not isinstance(spec, PeerSpec):
            return {"ready_s": None}
        with ctx.new_server(spec, "fake") as server:
            ready = await server.wait_ready(30.0)
        return {"ready_s": ready, "ctx": spec.ctx}

    def markdown(self, result: Result) -> str:
        return "fake"


class WarmlmOnly(ServerFake):
    name = "ceiling"


def test_run_pairs_interleaves_warmlm_and_peers(tmp_path: Path, static_peer: PeerSpec) -> None:
    log: list[str] = []
    opts = bench_options(tmp_path, "--ready-timeout", "30")
    ctx = BenchContext(opts, "run")
    scenarios = [ProcessFake(log), ServerFake(log), WarmlmOnly(log)]
    results, by_peer = asyncio.run(run_pairs(ctx, scenarios, [static_peer]))
    assert log == [
        "process:warmlm:ServerSpec",
        "process:static:StaticSpec",
        "server:warmlm:own",
        "server:static:url",
        "server:warmlm:own",  # ceiling: warmlm only
    ]
    assert set(results) == {"coldstart", "single", "ceiling"}
    peer = by_peer["static"]
    assert set(peer) == {"coldstart", "single"}
    assert peer["coldstart"]["ready_s"] > 0 and peer["coldstart"]["ctx"] == 1024
    assert (
        peer["single"]["url"].startswith("http://127.0.0.1:") and peer["single"]["peer_ready_s"] > 0
    )
    logs = sorted(p.name for p in (opts.out / "logs").iterdir())
    assert any(name.endswith("static-fake.log") for name in logs)
    assert any("static-single" in name for name in logs)


def test_a_peer_that_does_not_start_is_reported(tmp_path: Path, static_peer: PeerSpec) -> None:
    class Broken(LlamaCppPythonSpec):
        label = "broken"

        def command(self, port: int) -> list[str]:
            return [sys.executable, "-c", "raise SystemExit(3)"]

    opts = bench_options(tmp_path, "--ready-timeout", "30")
    log: list[str] = []
    _, by_peer = asyncio.run(
        run_pairs(BenchContext(opts, "run"), [ServerFake(log)], [Broken("m", 1, 1, 512, GGUF)])
    )
    assert "exited with code 3" in by_peer["broken"]["single"]["error"]
    assert log == ["server:warmlm:own"]


# -- the Flask peer -----------------------------------------------------------------------------
class StubGeneration:
    """Stands in for `flask_app.start_generation`: fixed pieces, no model."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces
        self.calls: list[tuple[Any, int, float]] = []

    def __call__(self, messages: Any, max_tokens: int, temperature: float) -> Any:
        from warmlm.bench.peers.flask_app import Generation

        self.calls.append((messages, max_tokens, temperature))
        return Generation(
            7, iter(self.pieces), max_tokens, _out={"ids": [11, 12, 13, 2]}, _eos=frozenset({2})
        )


@pytest.fixture
def flask_client(monkeypatch: pytest.MonkeyPatch) -> Any:
    pytest.importorskip("flask")
    from warmlm.bench.peers import flask_app

    stub = StubGeneration(["Hel", "lo", "", " world"])
    monkeypatch.setattr(flask_app, "start_generation", stub)
    monkeypatch.setitem(flask_app.SETTINGS, "model_id", "m")
    client = flask_app.app.test_client()
    client.stub = stub
    return client


MESSAGES = [{"role": "user", "content": "hi"}]


def test_flask_streams_sse_data_lines_then_done(flask_client: Any) -> None:
    body = {
        "messages": MESSAGES,
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    resp = flask_client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    text = resp.get_data(as_text=True)
    events = text.split("\n\n")
    assert events[-1] == "" and all(e.startswith("data: ") for e in events[:-1])
    assert events[-2] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [c["choices"][0]["delta"].get("content") for c in chunks[1:4]]
    assert contents == ["Hel", "lo", " world"]  # the empty piece is not sent
    assert chunks[4]["choices"][0]["finish_reason"] == "length"  # 3 tokens = max_tokens
    assert chunks[5]["choices"] == [] and chunks[5]["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
    }
    assert flask_client.stub.calls == [(MESSAGES, 3, 0.0)]
    # the bench's own SSE client reads it as it reads warmlm
    parser, rec = SSEParser(), _Recorder(sent_at=0.0)
    for line in text.splitlines():
        event = parser.feed(line)
        if event is not None and not event.done:
            rec.absorb(event, 1.0)
    result = rec.result(2.0)
    assert result.text == "Hello world" and result.completion_tokens == 3
    assert result.prompt_tokens == 7 and result.finish_reason == "length"


def test_flask_stream_without_usage_and_non_stream(flask_client: Any) -> None:
    resp = flask_client.post(
        "/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 10, "stream": True}
    )
    text = resp.get_data(as_text=True)
    assert '"usage"' not in text and '"finish_reason": "stop"' in text
    resp = flask_client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 10})
    data = resp.get_json()
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Hello world"}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] == 3 and data["model"] == "m"


def test_flask_models_and_bad_request(flask_client: Any) -> None:
    models = flask_client.get("/v1/models").get_json()
    assert models["data"][0]["id"] == "m"
    resp = flask_client.post("/v1/chat/completions", json={"messages": []})
    assert resp.status_code == 400 and flask_client.stub.calls == []


def test_flask_app_imports_no_model_library_until_used() -> None:
    pytest.importorskip("flask")
    code = (
        "import sys; import warmlm.bench.peers.flask_app as f; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
        "assert f._model is None"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
