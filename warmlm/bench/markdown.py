"""Markdown output: number formatting, tables, and sections rewritten in place between markers."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

DOC_HEADER = """# Benchmarks

Written by `warmlm bench`: each section below is regenerated in place by the scenario that
produced it (between its `warmlm-bench` markers), so re-running a scenario replaces its figures.
Text outside the markers is kept. Raw results are in the JSON files under `bench-results/`.
"""

_NAME = re.compile(r"^[A-Za-z0-9_.@-]+$")


def fmt(value: float | int | None, digits: int = 3) -> str:
    """A compact human figure: None → —, 1234.5 → 1234, 12.34 → 12.3, 0.01234 → 0.0123."""
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 10 ** (digits - 1):
        return f"{value:.0f}"
    if magnitude == 0:
        return "0"
    return f"{value:.{digits}g}" if magnitude >= 1e-4 else f"{value:.1e}"


def ms(seconds: float | None) -> str:
    return "—" if seconds is None else fmt(seconds * 1000.0)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; cells are str()-ed with `|` escaped."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "|" + "|".join(" --- " for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markers(name: str) -> tuple[str, str]:
    if not _NAME.match(name):
        raise ValueError(f"section names are [A-Za-z0-9_.@-]+, got {name!r}")
    return f"<!-- warmlm-bench:{name}:begin -->", f"<!-- warmlm-bench:{name}:end -->"


def replace_sections(text: str, sections: Mapping[str, str]) -> str:
    """Put each body between its markers, replacing what was there, or append it at the end."""
    for name, body in sections.items():
        begin, end = markers(name)
        block = f"{begin}\n{body.strip()}\n{end}"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        found = pattern.search(text)
        if found:
            text = text[: found.start()] + block + text[found.end() :]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    return text


def update_doc(path: Path, sections: Mapping[str, str]) -> None:
    """Rewrite the given sections of a Markdown file, creating it with a header if missing."""
    text = path.read_text(encoding="utf-8") if path.exists() else DOC_HEADER
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_sections(text, sections), encoding="utf-8")
