"""Peers of `warmlm bench --compare`: other servers started the same way on the same GGUF file.

Each peer is a `ServerSpec` whose `command` starts that server instead of warmlm, with the run's
threads and context, and whose `ready_path` says when it counts as ready (the end of its cold
start). `ServerProcess` starts, times and stops them like warmlm.

| peer | started as | ready = first 200 on | concurrency |
| --- | --- | --- | --- |
| `llama-cpp-python` | `python -m llama_cpp.server` | `/v1/models` (the model is loaded before it listens) | one request at a time |
| `llama-server` | the binary of `--llama-server PATH` | `/health` (503 while loading) | `--parallel` slots |
| `flask` | `python -m warmlm.bench.peers.flask_app` | `/v1/models` (the model loads on the first chat request) | a `generate` thread per request |
"""  # noqa: E501

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from warmlm.bench.serverproc import ServerSpec

LLAMA_CPP_PYTHON = "llama-cpp-python"
LLAMA_SERVER = "llama-server"
FLASK = "flask"
PEER_NAMES = (LLAMA_CPP_PYTHON, LLAMA_SERVER, FLASK)


@dataclass(frozen=True)
class PeerSpec(ServerSpec):
    """A server other than warmlm, on the GGUF file `gguf` (ServerSpec.model keeps the name)."""

    gguf: Path = Path()

    label: ClassVar[str] = "peer"
    ready_text: ClassVar[str] = ""  # what "ready" means for this peer, for the docs
    what: ClassVar[str] = ""  # one line for the docs

    def like(self, spec: ServerSpec) -> PeerSpec:
        """This peer with another spec's context size and parallelism (a scenario may ask for
        a bigger --ctx); warmlm-only flags such as the cache settings are dropped."""
        if isinstance(spec, PeerSpec):
            return spec
        return dataclasses.replace(self, ctx=spec.ctx, parallel=spec.parallel)

    def describe(self) -> dict[str, object]:
        """What the JSON result and the docs record of this peer."""
        return {
            "peer": self.label,
            "what": self.what,
            "ready": self.ready_text,
            "command": self.command(0),
        }


@dataclass(frozen=True)
class LlamaCppPythonSpec(PeerSpec):
    """(a) llama-cpp-python's own OpenAI server: one Llama object behind a lock."""

    label: ClassVar[str] = LLAMA_CPP_PYTHON
    ready_path: ClassVar[str] = "/v1/models"
    ready_text: ClassVar[str] = (
        "first 200 on /v1/models (it has no /ready; the model is loaded before it listens)"
    )
    what: ClassVar[str] = (
        "llama-cpp-python's server (`llama-cpp-python[server]`): one request at a time, no "
        "cross-request prompt cache (`--cache` off, its default), `--interrupt_requests False` "
        "so a queued request waits instead of cutting the running stream short"
    )

    def command(self, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.gguf),
            "--n_threads",
            str(self.threads),
            "--n_threads_batch",
            str(self.threads),
            "--n_ctx",
            str(self.ctx),
            "--interrupt_requests",
            "False",
            "--verbose",
            "False",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]


@dataclass(frozen=True)
class LlamaServerSpec(PeerSpec):
    """(b) llama.cpp's own `llama-server` binary, continuous batching over --parallel slots."""

    binary: Path = Path("llama-server")

    label: ClassVar[str] = LLAMA_SERVER
    ready_path: ClassVar[str] = "/health"
    ready_text: ClassVar[str] = "first 200 on /health (503 while the model loads)"
    what: ClassVar[str] = (
        "llama.cpp's `llama-server` binary (`--llama-server PATH`), `--parallel` slots with "
        "continuous batching; its `-c` is split between the slots, so it gets --ctx × --parallel"
    )

    def command(self, port: int) -> list[str]:
        return [
            str(self.binary),
            "--model",
            str(self.gguf),
            "--threads",
            str(self.threads),
            "--threads-batch",
            str(self.threads),
            "--ctx-size",
            str(self.ctx * self.parallel),
            "--parallel",
            str(self.parallel),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]


@dataclass(frozen=True)
class FlaskSpec(PeerSpec):
    """(c) the hand-written Flask + transformers service of `flask_app.py`, bf16 on CPU."""

    preload: bool = False

    label: ClassVar[str] = FLASK
    ready_path: ClassVar[str] = "/v1/models"
    ready_text: ClassVar[str] = (
        "first 200 on /v1/models (torch and transformers imported; the model loads lazily on "
        "the first chat request, so a cold start's first TTFT includes loading it)"
    )
    what: ClassVar[str] = (
        "the reference Flask + transformers app (`warmlm/bench/peers/flask_app.py`): the same "
        "GGUF dequantized by transformers to bf16, `TextIteratorStreamer` over SSE, one "
        "`generate` thread per request on Flask's threaded server"
    )

    def command(self, port: int) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "warmlm.bench.peers.flask_app",
            "--gguf",
            str(self.gguf),
            "--threads",
            str(self.threads),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        return [*cmd, "--preload"] if self.preload else cmd


def peer_names(text: str | None, llama_server: Path | None) -> tuple[str, ...]:
    """The peers `--compare [NAMES]` asks for: the named ones (comma-separated), or with no names
    (or `all`) llama-cpp-python, llama-server when `--llama-server` is given, and flask."""
    if text is None or text.strip() in ("", "all"):
        names = [n for n in PEER_NAMES if n != LLAMA_SERVER or llama_server is not None]
        return tuple(names)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PEER_NAMES]
    if unknown:
        raise ValueError(
            f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEER_NAMES)}"
        )
    if LLAMA_SERVER in names and llama_server is None:
        raise ValueError("the llama-server peer needs --llama-server PATH")
    return tuple(dict.fromkeys(names))


def make_peer(
    name: str, base: ServerSpec, gguf: Path, llama_server: Path | None = None
) -> PeerSpec:
    """The peer `name` with the run's threads, --parallel and --ctx, on the file `gguf`."""
    common = (base.model, base.threads, base.parallel, base.ctx, gguf)
    if name == LLAMA_CPP_PYTHON:
        return LlamaCppPythonSpec(*common)
    if name == LLAMA_SERVER:
        if llama_server is None:
            raise ValueError("the llama-server peer needs --llama-server PATH")
        return LlamaServerSpec(*common, binary=llama_server)
    if name == FLASK:
        return FlaskSpec(*common)
    raise ValueError(f"unknown peer {name!r}")
