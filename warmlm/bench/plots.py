"""PNG plots of a bench record (its JSON), for docs/benchmarks.md; matplotlib on the Agg canvas.

Every plot is drawn from the JSON record alone (warmlm's results, and each peer's under
`peers`), so `warmlm bench report --from FILE` redraws them without measuring again. A plot
whose data the record lacks is not drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from warmlm.bench.stats import median

Result = dict[str, Any]
Series = list[tuple[str, Result]]  # (label, that server's results by scenario)
COLORS = ("tab:blue", "tab:orange", "tab:red", "tab:green", "tab:purple", "tab:brown")
DPI = 100
LOG_SPREAD = 20.0  # a y axis whose values span more than this factor is drawn in log scale


@dataclass(frozen=True)
class Plot:
    name: str  # file stem and docs section
    title: str
    path: Path
    caption: str


def series(data: dict[str, Any]) -> Series:
    """warmlm's results first, then each peer's, labelled."""
    label = str((data.get("options") or {}).get("label") or "warmlm")
    out: Series = [(label, data.get("results") or {})]
    for peer, body in (data.get("peers") or {}).items():
        out.append((str(peer), body.get("results") or {}))
    return out


def _ok(results: Result, name: str) -> Result | None:
    r = results.get(name)
    if not isinstance(r, dict) or "error" in r or "skipped" in r:
        return None
    return r


def _ms(x: Any) -> float | None:
    return float(x) * 1000.0 if isinstance(x, int | float) else None


def _nan(values: Sequence[Any]) -> list[float]:
    """Numbers for matplotlib: a missing value becomes NaN (a gap in the line)."""
    return [float(v) if isinstance(v, int | float) else float("nan") for v in values]


def _log_ticks(axis: Axis) -> None:
    """Plain-number ticks at 1, 2 and 5 × each power of ten, for a log axis."""
    axis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _scale(ax: Axes, values: Sequence[float | None]) -> None:
    """Log scale for values spread over more than LOG_SPREAD×."""
    pos = [v for v in values if v is not None and v > 0]
    if pos and max(pos) / min(pos) > LOG_SPREAD:
        ax.set_yscale("log")
        _log_ticks(ax.yaxis)


def _streams_axis(ax: Axes, levels: Sequence[int]) -> None:
    """A log-2 x axis of concurrent streams, ticked at the levels measured."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(levels)), [str(n) for n in sorted(set(levels))])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("concurrent streams")


def _figure(panels: int, width: float = 5.2) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width * panels, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})


# -- the plots ----------------------------------------------------------------------------------
def _turn_line(turns: list[dict[str, Any]]) -> tuple[list[int], list[float | None]]:
    xs = [k + 1 for k, t in enumerate(turns) if t.get("ttft_s") is not None]
    return xs, [_ms(t["ttft_s"]) for t in turns if t.get("ttft_s") is not None]


def plot_multiturn(data: Series, path: Path) -> Plot | None:
    lines = []
    for i, (label, results) in enumerate(data):
        r = _ok(results, "multiturn")
        if r is None:
            continue
        color = COLORS[i % len(COLORS)]
        xs, ys = _turn_line(r.get("turns") or [])
        if xs:
            lines.append((label, color, "-", xs, ys))
        paused = r.get("paused") or {}
        xs, ys = _turn_line(paused.get("turns") or [])
        if xs:
            lines.append((f"{label}, {paused.get('pause_s'):g} s pauses", color, "--", xs, ys))
    if not lines:
        return None
    fig, (ax,) = _figure(1)
    for label, color, style, xs, ys in lines:
        ax.plot(xs, _nan(ys), marker="o", linestyle=style, color=color, label=label)
    _scale(ax, [y for *_, ys in lines for y in ys])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("turn (the whole conversation resent each turn)")
    ax.set_ylabel("time to first token, ms")
    ax.set_title("Multi-turn: TTFT per turn")
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(fig, path)
    return Plot(
        "multiturn-ttft",
        "time to first token per turn",
        path,
        "Each turn's median over the conversations (each over its own document); each turn "
        "resends the history. Solid: each question sent the moment the answer ends; dashed: "
        "after a reader's pause.",
    )


def plot_coldstart(data: Series, path: Path) -> Plot | None:
    rows = []
    for i, (label, results) in enumerate(data):
        r = _ok(results, "coldstart")
        if r is None:
            continue
        runs = r.get("runs") or []
        firsts = [
            run["ready_s"] + run["ttft_s"][0]
            for run in runs
            if run.get("ready_s") is not None and (run.get("ttft_s") or [None])[0] is not None
        ]
        per_request: list[float | None] = []
        for k in range(max((len(run.get("ttft_s") or []) for run in runs), default=0)):
            vals = [run["ttft_s"][k] for run in runs if len(run.get("ttft_s") or []) > k]
            per_request.append(_ms(median([v for v in vals if v is not None])))
        rows.append((label, COLORS[i % len(COLORS)], r.get("ready_s"), median(firsts), per_request))
    if not rows:
        return None
    fig, (left, right) = _figure(2)
    width = 0.8 / len(rows)
    for j, (label, color, ready, first, _) in enumerate(rows):
        xs = [k + j * width - 0.4 + width / 2 for k in range(2)]
        vals = [ready or 0.0, first or 0.0]
        bars = left.bar(xs, vals, width, color=color, label=label)
        left.bar_label(bars, labels=[f"{v:.3g}" for v in vals], fontsize=8)
    left.set_xticks([0, 1], ["process start → ready", "process start → first token"])
    left.set_ylabel("seconds (median over starts)")
    _scale(left, [v for row in rows for v in row[2:4]])
    left.set_title("Cold start")
    left.legend()
    for _label, color, *_, per_request in rows:
        xs = [k + 1 for k, v in enumerate(per_request) if v is not None]
        right.plot(xs, [v for v in per_request if v is not None], marker="o", color=color)
    _scale(right, [v for row in rows for v in row[4]])
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("request after start")
    right.set_ylabel("TTFT ms (median over starts)")
    right.set_title("First requests after a start")
    right.grid(True, alpha=0.3)
    _save(fig, path)
    return Plot(
        "coldstart",
        "cold start",
        path,
        "Left: from process start to ready, and to the first token of the first request "
        "(what a lazily loading server defers). Right: TTFT of the requests after a start.",
    )


def _levels(results: Result) -> list[Result]:
    r = _ok(results, "concurrency")
    return [lv for lv in (r or {}).get("levels") or [] if isinstance(lv.get("level"), int)]


def plot_concurrency(data: Series, path: Path) -> Plot | None:
    lines = [(label, COLORS[i % len(COLORS)], _levels(res)) for i, (label, res) in enumerate(data)]
    lines = [line for line in lines if line[2]]
    if not lines:
        return None
    fig, (left, right) = _figure(2)
    tps_all, ttft_all = [], []
    for label, color, levels in lines:
        xs = [lv["level"] for lv in levels]
        tps = [lv.get("aggregate_tps") for lv in levels]
        p95 = [_ms(lv.get("ttft_p95_s")) for lv in levels]
        left.plot(xs, _nan(tps), marker="o", color=color, label=label)
        right.plot(xs, _nan(p95), marker="o", color=color, label=label)
        tps_all += tps
        ttft_all += p95
    measured = [int(lv["level"]) for *_, lvs in lines for lv in lvs]
    for ax in (left, right):
        _streams_axis(ax, measured)
        ax.grid(True, alpha=0.3)
    left.set_ylabel("aggregate tok/s")
    left.set_title("Throughput against concurrency")
    _scale(left, tps_all)
    right.set_ylabel("TTFT p95, ms")
    right.set_title("TTFT p95 against concurrency")
    _scale(right, ttft_all)
    left.legend()
    _save(fig, path)
    return Plot(
        "concurrency",
        "throughput and TTFT p95 against concurrency",
        path,
        "Aggregate = all completion tokens ÷ wall time from the first request to the last done.",
    )


def plot_itl(data: Series, path: Path) -> Plot | None:
    lines = [(label, COLORS[i % len(COLORS)], _levels(res)) for i, (label, res) in enumerate(data)]
    lines = [line for line in lines if line[2]]
    if not lines:
        return None
    fig, (ax,) = _figure(1, width=7.5)
    values: list[float | None] = []
    for label, color, levels in lines:
        xs = [lv["level"] for lv in levels]
        p50 = [_ms(lv.get("itl_p50_s")) for lv in levels]
        p95 = [_ms(lv.get("itl_p95_s")) for lv in levels]
        ax.plot(xs, _nan(p50), marker="o", color=color, label=f"{label} p50")
        ax.plot(xs, _nan(p95), marker="^", linestyle="--", color=color, label=f"{label} p95")
        values += p50 + p95
    _streams_axis(ax, [lv["level"] for *_, lvs in lines for lv in lvs])
    ax.set_ylabel("inter-token latency, ms")
    ax.set_title("Inter-token latency percentiles")
    _scale(ax, values)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
    return Plot(
        "itl",
        "inter-token latency percentiles",
        path,
        "Gaps between consecutive streamed content chunks, over every stream of each level "
        "(a server that streams words rather than tokens shows fewer, longer gaps).",
    )


def _latencies(results: Result) -> tuple[list[float], list[float]]:
    """TTFTs and end-to-end times (ms) of every streamed request of single and concurrency."""
    rows = [s for lv in _levels(results) for s in lv.get("streams") or []]
    single = _ok(results, "single")
    rows += (single or {}).get("requests") or []
    rows = [r for r in rows if not r.get("error")]
    ttft = [v for v in (_ms(r.get("ttft_s")) for r in rows) if v is not None]
    e2e = [v for v in (_ms(r.get("e2e_s")) for r in rows) if v is not None]
    return ttft, e2e


def plot_cdf(data: Series, path: Path) -> Plot | None:
    lines = [
        (label, COLORS[i % len(COLORS)], _latencies(res)) for i, (label, res) in enumerate(data)
    ]
    lines = [line for line in lines if line[2][0] or line[2][1]]
    if not lines:
        return None
    fig, axes = _figure(2)
    for ax, k, what in ((axes[0], 0, "time to first token"), (axes[1], 1, "end-to-end")):
        for label, color, samples in lines:
            xs = sorted(samples[k])
            if xs:
                ys = [(j + 1) / len(xs) for j in range(len(xs))]
                ax.step(xs, ys, where="post", color=color, label=f"{label} (n={len(xs)})")
        ax.set_xscale("log")
        _log_ticks(ax.xaxis)
        ax.set_xlabel(f"{what}, ms (log)")
        ax.set_ylabel("fraction of requests ≤ x")
        ax.set_title(f"Latency CDF: {what}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
    return Plot(
        "latency-cdf",
        "latency CDFs",
        path,
        "Every streamed request of the single and concurrency scenarios, all levels together.",
    )


PLOTS: tuple[tuple[str, Callable[[Series, Path], Plot | None]], ...] = (
    ("coldstart", plot_coldstart),
    ("multiturn-ttft", plot_multiturn),
    ("concurrency", plot_concurrency),
    ("itl", plot_itl),
    ("latency-cdf", plot_cdf),
)


def write_plots(data: dict[str, Any], out_dir: Path, suffix: str = "") -> list[Plot]:
    """Draw every plot the record has data for into `out_dir` (NAME[suffix].png); those drawn."""
    drawn = []
    s = series(data)
    for name, draw in PLOTS:
        plot = draw(s, out_dir / f"{name}{suffix}.png")
        if plot is not None:
            drawn.append(plot)
    return drawn
