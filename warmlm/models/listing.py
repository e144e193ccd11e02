"""`warmlm models`: what is registered, what is installed, what each GGUF header says.

Listing never assembles or hashes anything: it stats files and reads headers (~30 ms each).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from warmlm.models.assembly import assembled_path, is_assembled
from warmlm.models.errors import ModelError, NotAGGUFError
from warmlm.models.gguf import GGUFInfo, read_gguf_info
from warmlm.models.locate import locate_chunks, locate_single_file, missing_packages
from warmlm.models.registry import DEFAULT_MODEL, REGISTRY, ModelSpec

READY = "ready"
NOT_ASSEMBLED = "installed, not assembled"
NOT_INSTALLED = "not installed"
BROKEN = "broken"


@dataclass(frozen=True)
class ModelRow:
    """One registered model as seen on this machine.

    `installed` means usable now or after assembly; `path` is set only when a complete GGUF
    exists; `info` may come from the first chunk of a not-yet-assembled model."""

    name: str
    description: str
    default: bool
    installed: bool
    status: str
    path: Path | None
    size: int
    info: GGUFInfo | None
    pip_hint: str | None
    problem: str | None = None


def list_models(cache_dir: Path) -> list[ModelRow]:
    """Every registered model, default first."""
    return [_row(spec, Path(cache_dir)) for spec in REGISTRY.values()]


def _row(spec: ModelSpec, cache_dir: Path) -> ModelRow:
    if not spec.single_file and is_assembled(spec, cache_dir):
        path = assembled_path(spec, cache_dir)
        return _make(spec, READY, path=path, info=_info(path, check_data=True))
    if missing_packages(spec):
        return _make(spec, NOT_INSTALLED)
    try:
        if spec.single_file:
            path = locate_single_file(spec)
            return _make(spec, READY, path=path, info=_info(path, check_data=True))
        first = locate_chunks(spec)[0]
    except ModelError as exc:
        return _make(spec, BROKEN, problem=str(exc))
    return _make(spec, NOT_ASSEMBLED, info=_info(first, check_data=False))


def _make(
    spec: ModelSpec,
    status: str,
    path: Path | None = None,
    info: GGUFInfo | None = None,
    problem: str | None = None,
) -> ModelRow:
    return ModelRow(
        name=spec.name,
        description=spec.description,
        default=spec.name == DEFAULT_MODEL,
        installed=status in (READY, NOT_ASSEMBLED),
        status=status,
        path=path,
        size=spec.size,
        info=info,
        pip_hint=spec.pip_hint if status in (NOT_INSTALLED, BROKEN) else None,
        problem=problem,
    )


def _info(path: Path, check_data: bool) -> GGUFInfo | None:
    try:
        return read_gguf_info(path, check_data=check_data)
    except NotAGGUFError:
        return None


def format_models(rows: list[ModelRow]) -> str:
    """A plain-text table, one model per row, with its path or install command beneath."""
    header = ("", "NAME", "STATUS", "PARAMS", "QUANT", "CTX", "SIZE", "DESCRIPTION")
    table = [header] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [_join(table[0], widths)]
    for row, cells in zip(rows, table[1:], strict=True):
        lines.append(_join(cells, widths))
        lines.extend(f"    {note}" for note in _notes(row))
    lines.append("(* = default; assembly happens once, on first use, into the cache)")
    return "\n".join(lines)


def _cells(row: ModelRow) -> tuple[str, ...]:
    info = row.info
    return (
        "*" if row.default else "",
        row.name,
        row.status,
        format_count(info.parameters) if info else "-",
        (info.quantization or "?") if info else "-",
        str(info.context_length) if info and info.context_length else "-",
        f"{row.size / 1e6:.0f} MB",
        row.description,
    )


def _notes(row: ModelRow) -> list[str]:
    notes = []
    if row.path is not None:
        notes.append(f"path: {row.path}")
    if row.problem:
        notes.append(f"problem: {row.problem}")
    if row.pip_hint:
        notes.append(f"install: {row.pip_hint}")
    return notes


def _join(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def format_count(n: int) -> str:
    """`630167424` -> `"630M"`, `1777088000` -> `"1.8B"`."""
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.0f}M"
    return f"{n / 1e3:.0f}K" if n >= 1e3 else str(n)
