"""The `warmlm` command line: light parsing for serving, the full parser for the rest."""

from __future__ import annotations

import subprocess
import sys

from warmlm.cli import build_parser


def test_serve_parses_without_importing_the_benchmark() -> None:
    code = (
        "import sys; from warmlm.cli import main, build_parser; "
        "a = build_parser(['serve']).parse_args(['serve', '--port', '9']); "
        "assert a.port == 9; "
        "assert not any(m.startswith('warmlm.bench') for m in sys.modules), 'bench imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_full_parser_knows_bench_and_cache() -> None:
    full = build_parser().parse_args(["bench", "single", "--max-tokens", "4"])
    assert full.command == "bench" and full.max_tokens == 4
    cache = build_parser().parse_args(["cache", "ls"])
    assert cache.command == "cache"
