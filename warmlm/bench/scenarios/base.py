"""The scenario interface: run against a context, render Markdown, contribute targets."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from warmlm.bench.context import BenchContext
from warmlm.bench.targets import Target

Result = dict[str, Any]
Results = Mapping[str, Result]


class Needs(enum.Enum):
    """What a scenario needs from the run, which decides when the shared server must be stopped."""

    NOTHING = "nothing"  # runs in the bench process (the shared server is stopped first)
    SERVER = "server"  # any OpenAI-compatible server: --url, or the shared warmlm
    PROCESS = "process"  # starts warmlm processes of its own (skipped with --url)


class Scenario(ABC):
    """One benchmark; add a module with a `SCENARIO = MyScenario()` to `warmlm.bench.scenarios`."""

    name: str = ""
    title: str = ""
    order: int = 100  # scenarios run in ascending order
    in_all: bool = True  # part of `warmlm bench all`
    needs: Needs = Needs.SERVER

    @abstractmethod
    async def run(self, ctx: BenchContext) -> Result:
        """Measure; the returned dict must be JSON-serializable."""

    @abstractmethod
    def markdown(self, result: Result) -> str:
        """The body of this scenario's section of docs/benchmarks.md (tables, notes)."""

    def targets(self, results: Results) -> list[Target]:
        """Targets this scenario's figures decide, given every result of the run so far."""
        return []

    def skip_reason(self, ctx: BenchContext) -> str | None:
        if self.needs is Needs.PROCESS and not ctx.options.own_server:
            return "needs to start warmlm itself (not available with --url)"
        return None


def ok(results: Results, name: str) -> Result | None:
    """A scenario's result if it ran without error."""
    result = results.get(name)
    if result is None or "error" in result or "skipped" in result:
        return None
    return result
