"""Find a model's files inside installed distributions, without importing them."""

from __future__ import annotations

import importlib.metadata as metadata
from pathlib import Path

from warmlm.models.errors import ChunkMissingError, IntegrityError, PackageNotInstalledError
from warmlm.models.registry import ChunkSpec, ModelSpec


def missing_packages(spec: ModelSpec) -> tuple[str, ...]:
    """Distributions of `spec` that are absent or installed at another version."""
    return tuple(p for p in spec.packages if not _installed(p, spec.version))


def locate_chunks(spec: ModelSpec) -> list[Path]:
    """Paths of the spec's chunk files inside installed distributions, in order."""
    missing = missing_packages(spec)
    if missing:
        raise PackageNotInstalledError(spec.name, missing, spec.pip_command(missing))
    return [_find_chunk(spec, chunk) for chunk in spec.chunks]


def locate_single_file(spec: ModelSpec) -> Path:
    """The one `.gguf` of a single-file model, used in place (size-checked, not hashed)."""
    assert spec.single_file
    (path,) = locate_chunks(spec)
    check_chunk_size(spec.chunks[0], path, spec)
    return path


def check_chunk_size(chunk: ChunkSpec, path: Path, spec: ModelSpec) -> None:
    """`IntegrityError` naming the chunk when its size differs from the registry's."""
    size = path.stat().st_size
    if size != chunk.size:
        raise IntegrityError(
            f"{chunk_label(chunk)} is {size} bytes, expected {chunk.size} (corrupted); "
            + reinstall_hint(spec, chunk)
        )


def chunk_label(chunk: ChunkSpec) -> str:
    return f"chunk {chunk.file} of {chunk.package}"


def reinstall_hint(spec: ModelSpec, chunk: ChunkSpec | None = None) -> str:
    """How to replace one damaged distribution (or all of them)."""
    packages = spec.packages if chunk is None else (chunk.package,)
    return f"reinstall with: {spec.pip_command(packages)} --force-reinstall"


def _installed(package: str, version: str) -> bool:
    try:
        return metadata.version(package) == version
    except metadata.PackageNotFoundError:
        return False


def _find_chunk(spec: ModelSpec, chunk: ChunkSpec) -> Path:
    dist = metadata.distribution(chunk.package)
    for file in dist.files or ():
        if file.name == chunk.file:
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise ChunkMissingError(chunk.package, chunk.file, spec.pip_command((chunk.package,)))
