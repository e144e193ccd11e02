"""The bench report: JSON results and sections of docs/benchmarks.md rewritten in place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from warmlm.bench.context import BenchContext
from warmlm.bench.main import run_bench
from warmlm.bench.markdown import fmt, markers, replace_sections, table, update_doc
from warmlm.bench.options import BenchOptions
from warmlm.bench.report import RunRecord, doc_sections, write_docs, write_json
from warmlm.bench.scenarios import all_scenarios
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.targets import Target
from warmlm.cli import build_parser

MACHINE = {"cpu": "Test CPU", "cores": 2, "ram_bytes": 24 * 1024**3, "simd": ["avx2"]}


class Fake(Scenario):
    name = "fake"
    title = "A fake scenario"
    needs = Needs.NOTHING

    async def run(self, ctx: BenchContext) -> Result:
        return {"tps": 1.0}

    def markdown(self, result: Result) -> str:
        return table(["tok/s"], [[fmt(result["tps"])]])

    def targets(self, results: Results) -> list[Target]:
        r = ok(results, self.name)
        return [Target("fake ratio", r["tps"] if r else None, 0.9)]


def options(tmp_path: Path, *argv: str) -> BenchOptions:
    args = build_parser().parse_args(["bench", *argv, "--out", str(tmp_path / "out")])
    known = tuple(s.name for s in all_scenarios())
    default = tuple(s.name for s in all_scenarios() if s.in_all)
    return BenchOptions.from_args(args, default, known)


def record(opts: BenchOptions, results: dict[str, Result]) -> RunRecord:
    targets = {"fake": Fake().targets(results)}
    return RunRecord("20250101-000000", "2025-01-01 00:00 UTC", opts, MACHINE, results, targets)


def test_replace_sections_in_place_keeps_other_text() -> None:
    begin, end = markers("single")
    text = f"# Title\n\nintro\n\n{begin}\nold figures\n{end}\n\nhand-written notes\n"
    out = replace_sections(text, {"single": "## Single\n\nnew figures\n"})
    assert "old figures" not in out and "new figures" in out
    assert out.index("intro") < out.index("new figures") < out.index("hand-written notes")
    assert replace_sections(out, {"single": "## Single\n\nnew figures"}) == out  # idempotent
    appended = replace_sections(out, {"ceiling": "ceiling table"})
    assert appended.endswith(f"{markers('ceiling')[0]}\nceiling table\n{markers('ceiling')[1]}\n")
    assert appended.count(begin) == 1
    with pytest.raises(ValueError):
        markers("bad name")


def test_update_doc_creates_then_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "docs" / "benchmarks.md"
    update_doc(path, {"a": "first A", "b": "first B"})
    text = path.read_text()
    assert text.startswith("# Benchmarks") and "first A" in text and "first B" in text
    path.write_text(text + "\nmy own note\n")
    update_doc(path, {"a": "second A"})
    text = path.read_text()
    assert "first A" not in text and "second A" in text and "first B" in text
    assert "my own note" in text and text.index("second A") < text.index("first B")


def test_table_and_fmt() -> None:
    assert table(["a", "b"], [[1, "x|y"]]) == "| a | b |\n| --- | --- |\n| 1 | x\\|y |"
    assert fmt(None) == "—" and fmt(3) == "3" and fmt(1234.6) == "1235"
    assert fmt(12.345) == "12.3" and fmt(0.012345) == "0.0123" and fmt(0.0) == "0"


def test_sections_json_and_summary(tmp_path: Path) -> None:
    opts = options(tmp_path, "single", "--model", "m.gguf", "--threads", "2")
    rec = record(opts, {"fake": {"tps": 0.95, "elapsed_s": 1.0}})
    sections = doc_sections(rec, [Fake()], full_run=True)
    assert list(sections) == ["targets", "fake"]
    assert "Test CPU · 2 cores · 24 GiB RAM · avx2" in sections["fake"]
    assert (
        "`warmlm " in sections["fake"]
        and "| fake ratio | 0.95× | ≥ 0.9× | pass |" in sections["fake"]
    )
    assert list(doc_sections(rec, [Fake()], full_run=False)) == ["fake"]
    failed = record(opts, {"fake": {"error": "ServerFailed: boom"}})
    assert "targets" not in doc_sections(failed, [Fake()], full_run=True)
    assert "failed: `ServerFailed: boom`" in doc_sections(failed, [Fake()], True)["fake"]
    skipped = record(opts, {"fake": {"skipped": "needs a process"}})
    assert doc_sections(skipped, [Fake()], full_run=False) == {}
    data = json.loads(write_json(rec, tmp_path / "out").read_text())
    assert data["results"]["fake"]["tps"] == 0.95 and data["targets"][0]["passed"] is True
    assert data["options"]["threads"] == 2 and data["options"]["out"].endswith("out")
    write_docs(rec, [Fake()], True, tmp_path / "bench.md")
    assert "<!-- warmlm-bench:fake:begin -->" in (tmp_path / "bench.md").read_text()


def test_url_runs_get_labelled_sections(tmp_path: Path) -> None:
    opts = options(tmp_path, "--url", "http://127.0.0.1:9/v1", "--label", "llama-server")
    assert opts.label == "llama-server" and not opts.own_server
    sections = doc_sections(record(opts, {"fake": {"tps": 1.0}}), [Fake()], full_run=False)
    assert list(sections) == ["fake@llama-server"]
    assert "## A fake scenario (llama-server)" in sections["fake@llama-server"]


def test_options_defaults(tmp_path: Path) -> None:
    opts = options(tmp_path, "--levels", "1,2")
    assert opts.scenarios == (
        "ceiling", "coldstart", "single", "concurrency", "rss",
        "multiturn", "sessions", "classify", "restart", "fairness",
    )  # fmt: skip
    assert opts.parallel == 2 and opts.batches == (1, 4, 8) and opts.label == "warmlm"
    assert opts.own_server and opts.docs == Path("docs/benchmarks.md")
    assert options(tmp_path, "--no-docs").docs is None


def test_scenarios_are_discovered_in_order() -> None:
    names = [s.name for s in all_scenarios()]
    assert names[:5] == ["ceiling", "coldstart", "single", "concurrency", "rss"]
    assert all(s.title and s.markdown for s in all_scenarios())


def test_run_bench_rejects_unknown_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(["bench", "nope", "--out", str(tmp_path)])
    assert run_bench(args) == 2
    assert "unknown scenario" in capsys.readouterr().err
