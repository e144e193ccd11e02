"""The record of one run: written as JSON and as sections of docs/benchmarks.md."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmlm.bench.machine import describe
from warmlm.bench.markdown import update_doc
from warmlm.bench.options import BenchOptions
from warmlm.bench.scenarios.base import Result, Scenario
from warmlm.bench.targets import Target, targets_table

SUMMARY = "targets"


@dataclass(frozen=True)
class RunRecord:
    """Everything one `warmlm bench` run measured, and where and how."""

    run_id: str
    date: str
    options: BenchOptions
    machine: dict[str, Any]
    results: dict[str, Result]
    targets: dict[str, list[Target]]
    peers: dict[str, Any] = field(default_factory=dict)  # --compare: label → peer and results

    @property
    def complete(self) -> bool:
        """True when every scenario ran without error (so the summary of targets is whole)."""
        return all("error" not in r and "skipped" not in r for r in self.results.values())

    def all_targets(self) -> list[Target]:
        return [t for ts in self.targets.values() for t in ts]

    def to_json(self) -> dict[str, Any]:
        options = {
            k: str(v) if isinstance(v, Path) else v
            for k, v in dataclasses.asdict(self.options).items()
        }
        return {
            "run_id": self.run_id,
            "date": self.date,
            "command": self.options.command,
            "machine": self.machine,
            "options": options,
            "results": self.results,
            "targets": [t.to_dict() for t in self.all_targets()],
            **({"peers": self.peers} if self.peers else {}),
        }


def write_json(record: RunRecord, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench-{record.run_id}.json"
    path.write_text(json.dumps(record.to_json(), indent=2, default=str) + "\n", encoding="utf-8")
    return path


def provenance(record: RunRecord) -> str:
    o = record.options
    target = o.url or f"warmlm, model {Path(o.model).name}"
    return (
        f"_Measured {record.date} on {describe(record.machine)}; {target}, --threads {o.threads};"
        f" command `{o.command}`._"
    )


def section_key(name: str, label: str) -> str:
    """Sections of warmlm itself are named after the scenario; others carry their label."""
    return name if label == "warmlm" else f"{name}@{label}"


def scenario_section(record: RunRecord, scenario: Scenario) -> str:
    result = record.results[scenario.name]
    label = "" if record.options.label == "warmlm" else f" ({record.options.label})"
    head = f"## {scenario.title}{label}\n\n{provenance(record)}\n\n"
    if "error" in result:
        return head + f"The scenario failed: `{result['error']}`"
    body = scenario.markdown(result)
    targets = record.targets.get(scenario.name) or []
    if targets:
        body += "\n\nTargets:\n\n" + targets_table(targets)
    return head + body


def summary_section(record: RunRecord) -> str:
    return (
        f"## Targets\n\n{provenance(record)}\n\nEach ratio compares figures measured in the same "
        f"run.\n\n{targets_table(record.all_targets())}"
    )


def doc_sections(
    record: RunRecord, scenarios: Sequence[Scenario], full_run: bool
) -> dict[str, str]:
    """The sections this run rewrites: one per scenario that ran, and the summary of targets when
    the run was `all` and every scenario of it succeeded (a partial run keeps the old summary)."""
    label = record.options.label
    sections: dict[str, str] = {}
    if full_run and record.complete and record.all_targets():
        sections[section_key(SUMMARY, label)] = summary_section(record)
    for scenario in scenarios:
        result = record.results.get(scenario.name)
        if result is not None and "skipped" not in result:
            sections[section_key(scenario.name, label)] = scenario_section(record, scenario)
    return sections


def write_docs(
    record: RunRecord, scenarios: Sequence[Scenario], full_run: bool, path: Path
) -> None:
    update_doc(path, doc_sections(record, scenarios, full_run))


def console_summary(record: RunRecord) -> str:
    """What `warmlm bench` prints at the end: every target of the run."""
    targets = record.all_targets()
    if not targets:
        return "no targets were measured"
    return targets_table(targets)
