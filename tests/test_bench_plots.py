"""Bench plots: PNGs drawn from a canned JSON record, and docs regenerated from the JSON alone."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.test_bench_compare import canned_json
from warmlm.cli import main

pytest.importorskip("matplotlib")

from warmlm.bench.plots import series, write_plots  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, checking its signature and IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC and head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def test_every_plot_is_drawn_from_a_canned_record(tmp_path: Path) -> None:
    data = canned_json(tmp_path)
    plots = write_plots(data, tmp_path / "bench")
    assert [p.name for p in plots] == [
        "coldstart",
        "multiturn-ttft",
        "concurrency",
        "itl",
        "latency-cdf",
    ]
    for plot in plots:
        assert plot.path == tmp_path / "bench" / f"{plot.name}.png"
        width, height = png_size(plot.path)
        assert width >= 400 and height >= 300 and plot.path.stat().st_size > 5000
        assert plot.title and plot.caption


def test_series_and_missing_data(tmp_path: Path) -> None:
    data = canned_json(tmp_path)
    assert [label for label, _ in series(data)] == ["warmlm", "llama-cpp-python", "flask"]
    assert write_plots({"results": {"single": {"error": "x"}}}, tmp_path / "none") == []
    assert not (tmp_path / "none").exists()
    only_single: dict[str, Any] = {"results": {"single": data["results"]["single"]}}
    assert [p.name for p in write_plots(only_single, tmp_path / "one")] == ["latency-cdf"]


def test_report_from_json_rewrites_docs_and_plots(tmp_path: Path) -> None:
    data = canned_json(tmp_path)
    source = tmp_path / "bench-20250101-000000.json"
    source.write_text(json.dumps(data))
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir()
    docs.write_text("# Benchmarks\n\nmy notes\n")
    assert main(["bench", "report", "--from", str(source), "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nmy notes\n")
    assert "<!-- warmlm-bench:compare:begin -->" in text and "warmlm 10× faster" in text
    assert f"warmlm bench report --from\n{source}" in text
    assert "<!-- warmlm-bench:single:begin -->" in text  # warmlm's own scenario sections
    for name in ("coldstart", "multiturn-ttft", "concurrency", "itl", "latency-cdf"):
        assert f"](bench/{name}-compare.png)" in text  # apart from warmlm's own runs' plots
        png_size(docs.parent / "bench" / f"{name}-compare.png")
    assert not (docs.parent / "bench" / "concurrency.png").exists()
    again = docs.read_text()
    assert main(["bench", "report", "--from", str(source), "--docs", str(docs)]) == 0
    assert docs.read_text() == again  # idempotent


def test_a_run_of_warmlm_alone_keeps_the_comparisons_plots(tmp_path: Path) -> None:
    data = canned_json(tmp_path)
    compared, alone = tmp_path / "compared.json", tmp_path / "alone.json"
    compared.write_text(json.dumps(data))
    del data["peers"]
    alone.write_text(json.dumps(data))
    docs = tmp_path / "benchmarks.md"
    assert main(["bench", "report", "--from", str(compared), "--docs", str(docs)]) == 0
    before = (tmp_path / "bench" / "concurrency-compare.png").read_bytes()
    assert main(["bench", "report", "--from", str(alone), "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert "](bench/concurrency-compare.png)" in text and "](bench/concurrency.png)" in text
    assert (tmp_path / "bench" / "concurrency-compare.png").read_bytes() == before


def test_report_needs_a_readable_file(tmp_path: Path) -> None:
    assert main(["bench", "report"]) == 2
    missing = tmp_path / "none.json"
    assert main(["bench", "report", "--from", str(missing), "--docs", str(tmp_path / "x")]) == 2


def test_plots_of_another_target_keep_apart(tmp_path: Path) -> None:
    data = canned_json(tmp_path)
    data["options"]["label"] = "vllm"
    del data["peers"]
    source = tmp_path / "r.json"
    source.write_text(json.dumps(data))
    docs = tmp_path / "benchmarks.md"
    assert main(["bench", "report", "--from", str(source), "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert "](bench/concurrency-vllm.png)" in text and "compare:begin" not in text
    assert "<!-- warmlm-bench:plot-concurrency-vllm:begin -->" in text
    assert not (tmp_path / "bench" / "concurrency.png").exists()
