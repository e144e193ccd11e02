"""What the engine reports as it works: a no-op base that metrics and logs subclass."""

from __future__ import annotations

from warmlm.engine.request import Request


class EngineObserver:
    """Called on the engine thread; implementations must be quick and must not raise."""

    def on_admit(self, req: Request, queue_seconds: float) -> None:
        """A waiting request got a sequence slot (`req.cached_tokens` is known by now)."""

    def on_first_token(self, req: Request, ttft_seconds: float, prefill_seconds: float) -> None:
        """The request's first token was sampled."""

    def on_token(self, req: Request, gap_seconds: float) -> None:
        """A later token was sampled, `gap_seconds` after the previous one."""

    def on_finish(self, req: Request, reason: str, e2e_seconds: float) -> None:
        """The request ended: stop, length, abort, or an error code such as queue_timeout."""

    def on_step(self, seconds: float, n_tokens: int, n_decode: int, n_prefill: int) -> None:
        """One llama_decode step ran."""

    def on_cache(self, event: str, n: int = 1) -> None:
        """KV cache events: 'query'/'hit' (tokens), 'evict', 'restore', 'ram_drop', ..."""


class RelayObserver(EngineObserver):
    """Forwards every event to `target`, which may be set while the engine runs: the service
    starts loading before the app that installs its metrics exists (warmlm/cli.py)."""

    def __init__(self, target: EngineObserver | None = None) -> None:
        self.target = target or EngineObserver()

    def on_admit(self, req: Request, queue_seconds: float) -> None:
        self.target.on_admit(req, queue_seconds)

    def on_first_token(self, req: Request, ttft_seconds: float, prefill_seconds: float) -> None:
        self.target.on_first_token(req, ttft_seconds, prefill_seconds)

    def on_token(self, req: Request, gap_seconds: float) -> None:
        self.target.on_token(req, gap_seconds)

    def on_finish(self, req: Request, reason: str, e2e_seconds: float) -> None:
        self.target.on_finish(req, reason, e2e_seconds)

    def on_step(self, seconds: float, n_tokens: int, n_decode: int, n_prefill: int) -> None:
        self.target.on_step(seconds, n_tokens, n_decode, n_prefill)

    def on_cache(self, event: str, n: int = 1) -> None:
        self.target.on_cache(event, n)
