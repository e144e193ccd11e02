"""Configuration: frozen dataclasses checked at construction, read from `WARMLM_*` or CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "WARMLM_"
MAX_SEQ = 256  # llama.cpp's LLAMA_MAX_SEQ: n_seq_max of a context is at most this
# the system prompt of `warmlm chat` and of the web UI (web/store.js); the warm-up caches it
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
FLASH_ATTN = ("auto", "on", "off")  # llama.cpp's flash attention: its choice, or forced


class ConfigError(ValueError):
    """A configuration value is out of range or malformed."""


def default_cache_dir() -> Path:
    env = os.environ.get(ENV_PREFIX + "CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "warmlm"


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


@dataclass(frozen=True)
class EngineConfig:
    """How the llama.cpp engine runs: context, parallel sequences, threads, step budget."""

    model_path: Path
    n_ctx: int = 8192
    parallel: int = 4
    threads: int = field(default_factory=default_threads)
    max_batch_tokens: int = 512
    prefill_chunk: int = 256
    fairness: float = 2.2
    max_queue: int = 64
    queue_timeout: float = 60.0
    default_max_tokens: int = 1024
    warmup: bool = True
    cache_slots: int = 16
    prefix_cache: bool = True
    kv_ram_mb: int = 256
    kv_cache_dir: Path | None = None
    kv_disk_mb: int = 4096
    score_slots: int = 64
    mmap: bool = True  # map the GGUF (False: read it into memory)
    flash_attn: str = "auto"

    def __post_init__(self) -> None:
        _check_range("n_ctx", self.n_ctx, 256, 1 << 20)
        _check_range("parallel", self.parallel, 1, 64)
        _check_range("threads", self.threads, 1, 512)
        _check_range("max_batch_tokens", self.max_batch_tokens, 16, 8192)
        _check_range("prefill_chunk", self.prefill_chunk, 1, self.max_batch_tokens)
        _check_range("max_queue", self.max_queue, 0, 100_000)
        _check_range("default_max_tokens", self.default_max_tokens, 1, 1 << 20)
        _check_range("cache_slots", self.cache_slots, 0, 192)
        _check_range("kv_ram_mb", self.kv_ram_mb, 0, 1 << 20)
        _check_range("kv_disk_mb", self.kv_disk_mb, 0, 1 << 24)
        _check_range("score_slots", self.score_slots, 0, MAX_SEQ)
        _check_flash_attn(self.flash_attn)
        if not 1.0 < self.fairness <= 100.0:
            raise ConfigError(f"fairness must be in (1, 100], got {self.fairness}")
        if self.queue_timeout <= 0:
            raise ConfigError(f"queue_timeout must be > 0, got {self.queue_timeout}")

    @property
    def first_score_seq(self) -> int:
        """The first sequence id of label scoring; the KV cache's slots are the ids below it."""
        return self.parallel + (self.cache_slots if self.prefix_cache else 0)

    @property
    def n_seq_max(self) -> int:
        """llama.cpp sequences: one per running request, the cached ones, then scoring ids
        (as many of `score_slots` as llama.cpp's limit of MAX_SEQ leaves)."""
        return min(MAX_SEQ, self.first_score_seq + self.score_slots)


@dataclass(frozen=True)
class ServerConfig:
    """What `warmlm serve` listens on and which model it serves."""

    model: str = "qwen2.5-coder-0.5b"
    host: str = "127.0.0.1"
    port: int = 8000
    ctx: int = 8192
    parallel: int = 4
    threads: int = field(default_factory=default_threads)
    cache_dir: Path = field(default_factory=default_cache_dir)
    api_key: str | None = field(default=None, repr=False)  # never in a log or repr
    api_key_file: Path | None = None
    cors_origin: tuple[str, ...] = ()  # browser origins allowed (env: comma-separated)
    allowed_host: tuple[str, ...] = ()  # Host names accepted besides the loopback ones
    max_body_bytes: int = 2 << 20
    max_header_bytes: int = 16 << 10
    drain_timeout: float = 20.0  # fits Kubernetes' default 30 s grace period
    log_level: str = "info"
    log_format: str = "text"
    max_queue: int = 64
    queue_timeout: float = 60.0
    cache_slots: int = 16
    prefix_cache: bool = True
    kv_ram_mb: int = 256
    kv_cache_dir: Path | None = None
    kv_disk_mb: int = 4096
    mmap: bool = True
    flash_attn: str = "auto"

    def __post_init__(self) -> None:
        _check_range("port", self.port, 0, 65535)
        _check_range("ctx", self.ctx, 256, 1 << 20)
        _check_range("parallel", self.parallel, 1, 64)
        _check_range("threads", self.threads, 1, 512)
        if self.log_level not in {"debug", "info", "warning", "error"}:
            raise ConfigError(f"log_level must be debug|info|warning|error, got {self.log_level!r}")
        if self.log_format not in {"text", "json"}:
            raise ConfigError(f"log_format must be text|json, got {self.log_format!r}")
        _check_flash_attn(self.flash_attn)
        _check_range("max_body_bytes", self.max_body_bytes, 1024, 1 << 30)
        _check_range("max_header_bytes", self.max_header_bytes, 1024, 1 << 20)
        if not 0 <= self.drain_timeout <= 3600:
            raise ConfigError(f"drain_timeout must be in [0, 3600] s, got {self.drain_timeout}")
        for name in ("cors_origin", "allowed_host"):  # a list from flags, a string from env
            object.__setattr__(self, name, _string_tuple(getattr(self, name)))

    def engine_config(self, model_path: Path) -> EngineConfig:
        return EngineConfig(
            model_path=model_path,
            n_ctx=self.ctx,
            parallel=self.parallel,
            threads=self.threads,
            max_queue=self.max_queue,
            queue_timeout=self.queue_timeout,
            cache_slots=self.cache_slots,
            prefix_cache=self.prefix_cache,
            kv_ram_mb=self.kv_ram_mb,
            kv_cache_dir=self.kv_cache_dir,
            kv_disk_mb=self.kv_disk_mb,
            mmap=self.mmap,
            flash_attn=self.flash_attn,
        )

    @classmethod
    def from_env(cls, **overrides: Any) -> ServerConfig:
        """Build from `WARMLM_<FIELD>` variables; explicit (non-None) overrides win."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _check_flash_attn(value: str) -> None:
    if value not in FLASH_ATTN:
        raise ConfigError(f"flash_attn must be {'|'.join(FLASH_ATTN)}, got {value!r}")


def _coerce(name: str, type_name: Any, raw: str) -> Any:
    kind = str(type_name)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("Path"):
            return Path(raw).expanduser()
        if kind.startswith("bool"):
            return raw.lower() in ("1", "true", "yes", "on")
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw


def _string_tuple(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    return tuple(item.strip() for item in items if item.strip())


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
