"""`warmlm models` rows and text: ready, installed-not-assembled, not installed, broken."""

from __future__ import annotations

import time
from pathlib import Path
from types import MappingProxyType

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
from warmlm.models import listing
from warmlm.models.assembly import ensure_model
from warmlm.models.listing import ModelRow, format_count, format_models, list_models
from warmlm.models.registry import DEFAULT_MODEL, known_models


@pytest.fixture
def rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, ModelRow]:
    """Five fake models, one in each state, listed against a temp cache."""
    data = gguf_bytes(tmp_path)
    chunks = [data[:-60], data[-60:-30], data[-30:]]  # the whole header is in part01
    site = make_site(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    states = ("ready", "chunks", "absent", "broken")
    specs = [fake_spec(f"m-{state}", chunks, prefix=f"m-{state}-part") for state in states]
    single = single_file_spec("m-single", "m-single-pkg", data)
    for spec in (specs[0], specs[1], specs[3]):
        install_spec(site, spec, chunks)
    install_dist(site, "m-single-pkg", {single.filename: data})
    ensure_model(specs[0], cache, progress=False)
    chunk_path(site, "m-broken-part2", "part02.bin").unlink()
    registry = {spec.name: spec for spec in [*specs, single]}
    monkeypatch.setattr(listing, "REGISTRY", MappingProxyType(registry))
    monkeypatch.setattr(listing, "DEFAULT_MODEL", "m-ready")
    return {row.name: row for row in list_models(cache)}


def test_assembled_model_is_ready(rows: dict[str, ModelRow], tmp_path: Path) -> None:
    row = rows["m-ready"]
    assert (row.status, row.installed, row.default) == ("ready", True, True)
    assert row.path == tmp_path / "cache" / "models" / "m-ready.gguf"
    assert row.info is not None and row.info.architecture == "llama"
    assert row.pip_hint is None


def test_installed_chunks_read_metadata_from_the_first_chunk(
    rows: dict[str, ModelRow], tmp_path: Path
) -> None:
    row = rows["m-chunks"]
    assert (row.status, row.installed, row.path) == ("installed, not assembled", True, None)
    assert row.info is not None and row.info.context_length == 2048
    assert not (tmp_path / "cache" / "models" / "m-chunks.gguf").exists()


def test_not_installed_shows_the_pip_hint(rows: dict[str, ModelRow]) -> None:
    row = rows["m-absent"]
    assert (row.status, row.installed, row.path, row.info) == ("not installed", False, None, None)
    assert row.pip_hint is not None and row.pip_hint.startswith("pip install m-absent-part1==")


def test_broken_install_names_the_problem(rows: dict[str, ModelRow]) -> None:
    row = rows["m-broken"]
    assert (row.status, row.installed) == ("broken", False)
    assert row.problem is not None and "part02.bin" in row.problem


def test_single_file_is_ready_in_place(rows: dict[str, ModelRow], tmp_path: Path) -> None:
    row = rows["m-single"]
    assert row.status == "ready" and row.path is not None
    assert row.path.is_relative_to(tmp_path / "site")


def test_listing_assembles_nothing(rows: dict[str, ModelRow], tmp_path: Path) -> None:
    names = {p.name for p in (tmp_path / "cache" / "models").iterdir()}
    assert names == {"m-ready.gguf", "m-ready.gguf.verified", ".m-ready.gguf.lock"}


def test_header_beyond_the_first_chunk_gives_no_info(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = split(gguf_bytes(tmp_path, vocab=2000), 3)  # the vocabulary overflows part01
    spec = fake_spec("m-long", chunks, prefix="m-long-part")
    install_spec(make_site(tmp_path, monkeypatch), spec, chunks)
    monkeypatch.setattr(listing, "REGISTRY", MappingProxyType({spec.name: spec}))
    (row,) = list_models(tmp_path / "cache")
    assert (row.status, row.info) == ("installed, not assembled", None)


def test_format_models(rows: dict[str, ModelRow]) -> None:
    text = format_models(list(rows.values()))
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "PARAMS", "QUANT", "CTX", "SIZE", "DESCRIPTION"]
    ready = next(line for line in lines if "m-ready" in line)
    assert ready.startswith("*") and "Q4_K_M" in ready and "2048" in ready
    assert "install: pip install m-absent-part1==1.0.0" in text
    assert "problem: chunk 'part02.bin' is missing" in text
    assert "path: " in text


def test_format_count() -> None:
    assert format_count(630_167_424) == "630M"
    assert format_count(1_777_088_000) == "1.8B"
    assert format_count(35) == "35"
    assert format_count(2_500) == "2K"


def test_real_registry_listing_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    rows = list_models(tmp_path / "cache")
    elapsed = time.perf_counter() - start
    assert [row.name for row in rows] == list(known_models())
    assert rows[0].name == DEFAULT_MODEL and rows[0].default
    assert not (tmp_path / "cache").exists()
    assert elapsed < 1.0, f"listing took {elapsed:.2f}s"
    text = format_models(rows)
    assert all(name in text for name in known_models())


def test_real_smollm2_row() -> None:
    path = smollm2_path()
    row = next(r for r in list_models(Path("/nonexistent-cache")) if r.name == "smollm2-135m")
    assert (row.status, row.path) == ("ready", path)
    assert row.info is not None and row.info.architecture == "llama"
