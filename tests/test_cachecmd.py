from pathlib import Path

import pytest

from warmlm.cli import main
from warmlm.engine.kvstore import KVStore


def test_ls_and_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "kv"
    store = KVStore("fp", 0, d, 1 << 20)
    store.put([1, 2, 3], b"x" * 100)
    store.put([4, 5, 6, 7], b"y" * 100)
    assert main(["cache", "ls", "--kv-cache-dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert "2 entries" in out
    key = next(d.glob("*.kv")).stem
    assert main(["cache", "rm", key[:10], "--kv-cache-dir", str(d)]) == 0
    assert len(list(d.glob("*.kv"))) == 1
    assert main(["cache", "rm", "--all", "--kv-cache-dir", str(d)]) == 0
    assert not list(d.glob("*.kv"))


def test_rm_needs_keys_or_all(tmp_path: Path) -> None:
    assert main(["cache", "rm", "--kv-cache-dir", str(tmp_path)]) == 2
