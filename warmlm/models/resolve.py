"""Turn what a user typed (`--model`) into a GGUF path ready for llama.cpp."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from warmlm.models.assembly import ensure_model
from warmlm.models.gguf import check_gguf
from warmlm.models.registry import REGISTRY, ModelSpec, get_spec


@dataclass(frozen=True)
class ResolvedModel:
    """A loadable model: display name, GGUF path, and its registry entry (None for a local file)."""

    name: str
    path: Path
    spec: ModelSpec | None


def resolve_model(name_or_path: str, cache_dir: Path, progress: bool = True) -> ResolvedModel:
    """A registry name is located (and assembled on first use); anything that looks like a
    path must be an existing GGUF file. Raises a `ModelError` subclass otherwise."""
    text = name_or_path.strip()
    if is_local_path(text):
        path = Path(text).expanduser().resolve()
        check_gguf(path)
        return ResolvedModel(name=path.stem, path=path, spec=None)
    spec = get_spec(text)
    return ResolvedModel(name=spec.name, path=ensure_model(spec, cache_dir, progress), spec=spec)


def is_local_path(text: str) -> bool:
    """Registry names win; then `*.gguf`, anything with a path separator, or an existing path."""
    if text in REGISTRY:
        return False
    if text.lower().endswith(".gguf") or os.sep in text or text.startswith("~"):
        return True
    return Path(text).exists()
