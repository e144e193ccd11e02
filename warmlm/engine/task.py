"""Engine tasks: work other than generation (e.g. scoring labels) run on the engine thread.

A task is advanced once per engine iteration, between generation steps, so running streams
keep flowing while it works; each `advance` should make at most one `llama_decode` call.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Protocol

from warmlm.engine.kvcache import KVCache
from warmlm.engine.runner import ModelRunner


class EngineTask(Protocol):
    def advance(self, runner: ModelRunner, kv: KVCache) -> bool:
        """Do one bounded piece of work; True when finished (the result is then ready)."""
        ...

    def result(self) -> Any: ...

    def close(self, runner: ModelRunner, kv: KVCache) -> None:
        """Release whatever the task holds (sequences, samplers), finished or not."""
        ...


class TaskHandle:
    """Completion of a submitted task, awaitable from the event loop or waited on a thread."""

    def __init__(self, task: EngineTask, loop: asyncio.AbstractEventLoop | None) -> None:
        self.task = task
        self._loop = loop
        self._future: asyncio.Future[Any] | None = loop.create_future() if loop else None
        self._done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.cancelled = False

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        self._done.set()
        if self._loop is not None and self._future is not None:
            self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        assert self._future is not None
        if self._future.done():
            return
        if self.error is not None:
            self._future.set_exception(self.error)
        else:
            self._future.set_result(self.value)

    async def wait_async(self) -> Any:
        assert self._future is not None, "submitted without an event loop"
        try:
            return await self._future
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    def wait(self, timeout: float | None = None) -> Any:
        if not self._done.wait(timeout):
            raise TimeoutError("engine task did not finish in time")
        if self.error is not None:
            raise self.error
        return self.value
