"""Targets: a measured figure, its goal, and whether the run met it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from warmlm.bench.markdown import fmt, table


@dataclass(frozen=True)
class Target:
    """`value` must be ≥ `goal` (or ≤ it when `at_most`); None means it could not be measured."""

    name: str
    value: float | None
    goal: float
    at_most: bool = False
    unit: str = "×"
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.goal if self.at_most else self.value >= self.goal

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "FAIL", None: "not measured"}[self.passed]

    def goal_text(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {fmt(self.goal)}{self.unit}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "goal": self.goal,
            "at_most": self.at_most,
            "unit": self.unit,
            "passed": self.passed,
            "note": self.note,
        }


def targets_table(targets: list[Target]) -> str:
    rows = [
        [
            t.name,
            "—" if t.value is None else f"{fmt(t.value)}{t.unit}",
            t.goal_text(),
            t.verdict,
            t.note,
        ]
        for t in targets
    ]
    return table(["target", "measured", "goal", "result", "how"], rows)


def all_passed(targets: list[Target]) -> bool:
    return all(t.passed is True for t in targets)
