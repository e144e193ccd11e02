"""The serving runtime: startup as named steps (locate → assemble → load → warm up → ready)."""

from __future__ import annotations

import enum
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from warmlm.config import DEFAULT_SYSTEM_PROMPT, EngineConfig, ServerConfig
from warmlm.engine.kvstore import KVStore, model_fingerprint, private_dir
from warmlm.engine.malloc import fix_mmap_threshold
from warmlm.engine.observer import EngineObserver, RelayObserver
from warmlm.engine.request import SamplingParams
from warmlm.engine.runner import ModelRunner
from warmlm.tasks.chat import ChatTemplate, Message

if TYPE_CHECKING:
    # imported by `_load`, once the model loads: the C load starts ~50 ms sooner
    from warmlm.engine.engine import Engine

log = logging.getLogger("warmlm.startup")
T = TypeVar("T")

# Fault injection for tests (tests/test_e2e_faults.py): after this many engine steps past
# warm-up, the runner's decode raises, as a failed llama_decode would. Read once here; when
# unset, nothing is wrapped and the hot path is untouched.
FAULT_ENV = "WARMLM_FAULT_AFTER_STEPS"

# 20 tokens with the Qwen template. Its system prompt is the default of the web UI and of
# `warmlm chat`, so their first request finds it in the prefix cache as every later one does;
# with "Be brief." the first of ten prompts sharing that system prompt took 1.5-1.75x the
# tenth's time to first token (`warmlm bench coldstart`). Each token is start-up time.
WARMUP_MESSAGES = (
    Message("system", DEFAULT_SYSTEM_PROMPT),
    Message("user", "Hi"),
)


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def build_service(config: ServerConfig) -> Service:
    """The service of `warmlm serve`: a registry model (assembled on first use) or a GGUF."""
    fix_mmap_threshold()  # freed KV states go back to the system (engine/malloc.py)

    def locate(name: str) -> tuple[Path, str | None]:
        from warmlm.models.resolve import resolve_model

        resolved = resolve_model(name, config.cache_dir, progress=sys.stderr.isatty())
        return resolved.path, None  # the runner reads the quantization as it loads

    return Service(config.model, locate, config.engine_config)


def _kv_store(config: EngineConfig) -> KVStore | None:
    if not config.prefix_cache:
        return None
    disk = private_dir(config.kv_cache_dir) if config.kv_cache_dir else None
    return KVStore(
        model_fingerprint(config.model_path), config.kv_ram_mb << 20, disk, config.kv_disk_mb << 20
    )


class State(enum.Enum):
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    FAILED = "failed"


@dataclass
class ServiceInfo:
    """What the service knows about itself, for /health and /v1/models."""

    model_name: str
    model_path: Path | None = None
    quantization: str | None = None
    started_at: float = field(default_factory=time.time)
    step_seconds: dict[str, float] = field(default_factory=dict)


class Service:
    """Owns the engine and chat template; `start` brings them up in named, logged steps."""

    def __init__(
        self,
        model: str,
        locate: Callable[[str], tuple[Path, str | None]],
        make_config: Callable[[Path], EngineConfig],
        runner_factory: Callable[[EngineConfig], Any] | None = None,
        observer: EngineObserver | None = None,
    ) -> None:
        self.info = ServiceInfo(model_name=model)
        self.state = State.LOADING
        self.error: str | None = None
        self.engine: Engine | None = None
        self.template: ChatTemplate | None = None
        self.next_turn: tuple[int, ...] = ()  # the template's next-turn opener, tokenized
        self._locate = locate
        self._make_config = make_config
        self._runner_factory = runner_factory or ModelRunner.from_config
        self.observer = RelayObserver(observer)  # the app points it at its metrics
        self._ready = threading.Event()
        self._failure_lock = threading.Lock()
        self._on_failure: Callable[[str], None] | None = None
        self._starter: threading.Thread | None = None

    def watch_failure(self, callback: Callable[[str], None] | None) -> None:
        """`callback(reason)` when startup or the engine fails, at once if it already has."""
        with self._failure_lock:
            self._on_failure = callback
            failed = self.error if self.state is State.FAILED else None
        if callback is not None and failed is not None:
            callback(failed)

    def start_in_background(self) -> None:
        """`start` on a thread of its own (once; later calls do nothing)."""
        if self._starter is None:
            self._starter = threading.Thread(
                target=self._start_quietly, name="warmlm-startup", daemon=True
            )
            self._starter.start()

    def join_startup(self) -> None:
        """Until the background start has ended (ready or failed)."""
        if self._starter is not None:
            self._starter.join()

    def _start_quietly(self) -> None:
        try:
            self.start()
        except Exception:  # recorded in state/error and reported through watch_failure
            return

    def start(self) -> None:
        """Run every startup step; on failure record the reason and re-raise."""
        try:
            name = self.info.model_name
            path, quant = self._step("locate+assemble", lambda: self._locate(name))
            self.info.model_path, self.info.quantization = path, quant
            config = self._make_config(path)
            engine = self._step("load", lambda: self._load(config))
            # Every llama_decode runs on the engine thread: OpenMP keeps a spinning thread
            # team per calling thread, so decoding from two threads would halve the speed.
            engine.on_failure = self._engine_failed
            engine.start()
            self.state = State.WARMING
            self._step("warm up", lambda: self._warm_up(engine))
            _inject_fault(engine)
            self.engine = engine
            self.state = State.READY
            self._ready.set()
            total = time.time() - self.info.started_at
            log.info("ready: %s in %.2fs", self.info.model_name, total)
        except Exception as exc:
            self._engine_failed(f"{type(exc).__name__}: {exc}")
            raise

    def _step(self, name: str, fn: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        log.info("%s ...", name)
        result = fn()
        self.info.step_seconds[name] = time.perf_counter() - t0
        log.info("%s done in %.2fs", name, self.info.step_seconds[name])
        return result

    def _load(self, config: EngineConfig) -> Engine:
        runner = self._runner_factory(config)  # llama.cpp loads, releasing the GIL
        from warmlm.engine.engine import Engine  # meanwhile imported by the main thread

        self.info.quantization = getattr(runner, "quantization", None) or self.info.quantization
        specials = runner.special_tokens()
        self.template = ChatTemplate(runner.chat_template(), **specials)
        self.next_turn = self.template.next_turn_opener(
            lambda text, add_special: runner.tokenize(text, add_special=add_special)
        )
        engine = Engine(runner, config, self.observer, _kv_store(config))
        engine.kv.reuse = config.prefix_cache
        return engine

    def _warm_up(self, engine: Engine) -> None:
        """A real generation through template, tokenizer, prefill, decode and detokenizer."""
        tokens = self.tokenize_chat(WARMUP_MESSAGES, engine)
        # two tokens: a prefill step and a decode step, each through sampling and detokenizing
        out = engine.generate(tokens, SamplingParams(max_tokens=2, temperature=0.0))
        log.info("warm-up generated %d tokens", out.completion_tokens)

    def tokenize_chat(self, messages: Sequence[Message], engine: Engine | None = None) -> list[int]:
        engine = engine or self.engine
        assert engine is not None and self.template is not None, "service is loaded"
        text = self.template.strip_leading_bos(self.template.render(messages))
        return engine.runner.tokenize(text, add_special=True, parse_special=True)

    def tokenize_text(self, text: str) -> list[int]:
        assert self.engine is not None, "service is ready"
        return self.engine.runner.tokenize(text, add_special=True, parse_special=False)

    def _engine_failed(self, reason: str) -> None:
        with self._failure_lock:
            self.state = State.FAILED
            self.error = reason
            callback = self._on_failure
        log.error("failed: %s", reason)
        if callback is not None:
            callback(reason)

    def model_names(self) -> set[str]:
        names = {self.info.model_name}
        if self.info.model_path is not None:
            names |= {self.info.model_path.name, self.info.model_path.stem}
        return names

    def health(self) -> dict[str, Any]:
        engine = self.engine
        body: dict[str, Any] = {
            "status": self.state.value,
            "uptime_s": round(time.time() - self.info.started_at, 3),
            "model": {
                "name": self.info.model_name,
                "file": str(self.info.model_path) if self.info.model_path else None,
                "quantization": self.info.quantization,
            },
            "startup_s": {k: round(v, 3) for k, v in self.info.step_seconds.items()},
            "rss_bytes": rss_bytes(),
        }
        if engine is not None:
            body.update(
                threads=engine.config.threads,
                parallel=engine.config.parallel,
                running=engine.num_running,
                waiting=engine.num_waiting,
            )
        if self.error is not None:
            body["error"] = self.error
        return body

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            if self.state is not State.FAILED:  # never save state from a failed context
                self.engine.kv.save_all()
            self.engine.runner.close()
            self.engine = None


def _inject_fault(engine: Engine) -> None:
    """`WARMLM_FAULT_AFTER_STEPS=N`: the N+1-th decode from now raises (see FAULT_ENV)."""
    raw = os.environ.get(FAULT_ENV)
    if not raw:
        return
    left = int(raw)
    decode = engine.runner.decode

    def failing_decode(batch: Any) -> None:
        nonlocal left
        left -= 1
        if left < 0:
            raise RuntimeError(f"injected fault ({FAULT_ENV}): llama_decode failed")
        decode(batch)

    engine.runner.decode = failing_decode  # type: ignore[method-assign,assignment]
    log.warning("fault injection: decode fails after %d more steps", int(raw))
