"""matplotlib figures -> SVG text, for embedding in the HTML report.

Every function takes the plain data of one figure (from ``reports.plotdata``) and returns
one ``<svg>`` element as text, ready to inline: no XML prologue, no fixed size (it scales to
its container through its viewBox), glyphs drawn as paths (so it looks the same without any
font installed), and every ``id`` prefixed with a hash of the figure so that several
figures in one page never share an id. matplotlib is imported inside the functions (it is
slow to import) and used through ``Figure`` directly, never pyplot: no GUI backend, no
global figure state. Text is escaped by matplotlib's SVG writer.

The exceptions are the two figures Optuna draws (:func:`optuna_history`,
:func:`optuna_importances`): Optuna's matplotlib functions make their figure through
pyplot and set its ggplot style globally. They run inside an ``rc_context`` (so the style
is undone), the figure is restyled to match the others and closed once it is SVG (so no
pyplot state is left behind), and pyplot's backend is left as the process has it (Agg
where there is no display).
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .plotdata import Bars, Curve, LineChart, Timeline
from .tunedata import ABRounds, ThroughputGrid

__all__ = [
    "ab_rounds",
    "bars",
    "curve",
    "line_chart",
    "optuna_history",
    "optuna_importances",
    "throughput_grid",
    "timeline",
]

# A colour-blind-safe palette (Paul Tol's "bright"), in the order lines are drawn.
PALETTE = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb")
WAIT = "#ee6677"
BUSY = "#4477aa"
ACCENT = "#f57c00"
INK = "#424242"
GRID = "#e6e6e6"
BOUND_COLOURS = {"workers": "#4477aa", "cores": "#ee6677", "consumer": "#228833"}

FULL = 10.0  # inches: the width of a full-width figure (720 pt of viewBox)
HALF = 5.0

_STYLE = {
    "svg.fonttype": "path",
    "svg.hashsalt": "loadtune",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.edgecolor": "#bdbdbd",
    "axes.labelcolor": INK,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlecolor": INK,
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": GRID,
    "grid.linewidth": 0.8,
    "xtick.color": "#757575",
    "ytick.color": "#757575",
    "legend.frameon": False,
    "legend.fontsize": 8,
    "lines.linewidth": 1.6,
}


@contextmanager
def _figure(width: float, height: float, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """A matplotlib Figure and its axes, under the report's style."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(**subplots)
        yield fig, axes


def _svg(fig: Any) -> str:
    """The figure as one inlinable, self-contained ``<svg>`` element."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    # matplotlib's <style> holds a global "*" rule; the page's stylesheet sets it instead.
    text = re.sub(r"<style[^>]*>.*?</style>", "", text, flags=re.S)
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)
    # Inline in HTML the parser puts <svg> in the SVG namespace itself; the namespace URLs
    # would only be noise (and look like remote references), and SVG 2 takes plain href.
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    text = text.replace("xlink:href=", "href=")
    # The viewBox scales the figure; a fixed width/height would not.
    text = re.sub(r'^<svg([^>]*?) width="[^"]*" height="[^"]*"', r"<svg\1", text, count=1)
    prefix = "f" + hashlib.sha1(text.encode()).hexdigest()[:8]
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    # Grow with the page up to a fifth past the drawn size, never further: text stays
    # the size it was laid out for, give or take.
    natural = float(fig.get_figwidth()) * 96
    return text.replace(
        "<svg", f'<svg class="fig" role="img" style="max-width:{natural * 1.2:.0f}px"', 1
    )


def _legend(ax: Any, n: int) -> None:
    if n > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.2)


def line_chart(chart: LineChart, width: float = HALF, height: float = 2.4) -> str:
    """Lines over time (``chart.lines``); the legend sits right of the plot."""
    with _figure(width, height) as (fig, ax):
        for i, line in enumerate(chart.lines):
            ax.plot(
                line.x,
                line.y,
                label=line.label,
                color=PALETTE[i % len(PALETTE)],
                linestyle="--" if line.dashed else "-",
                marker="o" if len(line.x) == 1 else None,
                markersize=3,
            )
        ax.set_title(chart.title)
        ax.set_xlabel(chart.xlabel)
        ax.set_ylabel(chart.ylabel)
        flat = all(v == 0 for line in chart.lines for v in line.y)
        # An all-zero line would get an axis of +-0.05: give it a scale a reader expects.
        ax.set_ylim(bottom=0, top=chart.ymax or (1.0 if flat else None))
        ax.set_xlim(left=0)
        _legend(ax, len(chart.lines))
        return _svg(fig)


def timeline(data: Timeline, width: float = FULL) -> str:
    """Each batch's wait above; below it the consumer's waits and each worker's busy spans."""
    rows = len(data.tracks)
    with _figure(
        width,
        1.9 + 0.32 * rows,
        nrows=2,
        sharex=True,
        gridspec_kw={"height_ratios": [1.5, max(1.0, 0.32 * rows)]},
    ) as (fig, (top, bottom)):
        top.vlines(data.wait_t, 0, data.wait_ms, color=WAIT, linewidth=1.0)
        top.plot(data.wait_t, data.wait_ms, "o", color=WAIT, markersize=2)
        top.set_ylim(bottom=0)
        top.set_ylabel("wait (ms)")
        top.set_title("consumer wait per batch, and who was busy when")
        for i, track in enumerate(data.tracks):
            colour = WAIT if track.kind == "wait" else BUSY
            bottom.broken_barh(track.spans, (i - 0.35, 0.7), facecolors=colour, linewidth=0)
        bottom.set_yticks(range(rows), [t.label for t in data.tracks])
        bottom.set_ylim(rows - 0.5, -0.5)
        bottom.grid(axis="y", visible=False)
        bottom.set_xlim(0, data.window_s)
        bottom.set_xlabel("seconds since the window opened")
        for t, label in data.changes:
            for ax in (top, bottom):
                ax.axvline(t, color=ACCENT, linestyle="--", linewidth=1.2, zorder=3)
            top.annotate(
                label,
                (t, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -2),
                textcoords="offset points",
                va="top",
                color=ACCENT,
                fontsize=8,
            )
        return _svg(fig)


def bars(data: Bars, width: float = HALF) -> str:
    """Horizontal bars, one group per label, with the series' marks as ticks.

    With one series, the highlighted label's bar is drawn in the wait colour and there is
    no legend (the page's caption says what bars and ticks are).
    """
    n = len(data.series)
    with _figure(width, 0.7 + len(data.labels) * (0.12 + 0.16 * n)) as (fig, ax):
        height = 0.8 / n
        for j, series in enumerate(data.series):
            ys = [i - 0.4 + height * (j + 0.5) for i in range(len(data.labels))]
            colour = PALETTE[j % len(PALETTE)]
            colours = [
                WAIT if n == 1 and label == data.highlight else colour for label in data.labels
            ]
            ax.barh(ys, series.values, height=height * 0.9, color=colours, label=series.label)
            if series.marks is not None:
                ax.plot(
                    series.marks,
                    ys,
                    "|",
                    color=INK,
                    markersize=9,
                    markeredgewidth=1.6,
                )
        ax.set_yticks(range(len(data.labels)), data.labels)
        ax.set_ylim(len(data.labels) - 0.5, -0.5)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(data.unit)
        ax.set_title(data.title)
        _legend(ax, n)  # one series is told by the caption, several by the legend
        return _svg(fig)


def curve(data: Curve, width: float = HALF) -> str:
    """Predicted samples/s against num_workers, coloured by bound, the measurement marked."""
    with _figure(width, 2.6) as (fig, ax):
        ax.plot(data.workers, data.samples_per_s, color="#9e9e9e", linewidth=1.2, zorder=1)
        for bound in dict.fromkeys(data.bounds):
            xs = [w for w, b in zip(data.workers, data.bounds, strict=True) if b == bound]
            ys = [v for v, b in zip(data.samples_per_s, data.bounds, strict=True) if b == bound]
            ax.scatter(
                xs,
                ys,
                s=18,
                color=BOUND_COLOURS.get(bound, PALETTE[-1]),
                label=f"limited by {bound}",
                zorder=2,
            )
        if data.measured_workers is not None and data.measured_samples_per_s is not None:
            ax.scatter(
                [data.measured_workers],
                [data.measured_samples_per_s],
                s=90,
                marker="*",
                color=ACCENT,
                edgecolor="white",
                linewidth=0.6,
                label="measured",
                zorder=3,
            )
        ax.set_ylim(bottom=0)
        ax.set_xlabel("num_workers")
        ax.set_ylabel("samples/s")
        ax.set_title("predicted throughput")
        ax.xaxis.get_major_locator().set_params(integer=True)
        _legend(ax, 2)
        return _svg(fig)


# --------------------------------------------------------------------------- tune figures


def throughput_grid(data: ThroughputGrid, width: float = HALF) -> str:
    """Samples/s per (num_workers, prefetch_factor) as a heatmap; trials that did not
    complete are named in their cell; the tuned config is boxed, the current one dashed."""
    import matplotlib

    cols, rows = list(data.workers), list(data.prefetch)
    matrix = [[math.nan] * len(cols) for _ in rows]
    for cell in data.cells:
        if cell.samples_per_s is not None:
            matrix[rows.index(cell.prefetch)][cols.index(cell.workers)] = cell.samples_per_s
    values = [v for row in matrix for v in row if not math.isnan(v)]
    # Every column needs room for "1,234" or "infeasible": grow with them up to full width.
    width = min(FULL, max(width + 0.8, 1.6 + 0.55 * len(cols)))
    size = 7.5 if len(cols) <= 10 else 6.0
    with _figure(width, 0.9 + 0.42 * len(rows)) as (fig, ax):
        cmap = matplotlib.colormaps["YlGnBu"].with_extremes(bad="#f5f5f5")
        top = max(values) if values else 1.0
        image = ax.imshow(matrix, cmap=cmap, aspect="auto", origin="lower", vmin=0, vmax=top)
        for cell in data.cells:
            x, y = cols.index(cell.workers), rows.index(cell.prefetch)
            if cell.samples_per_s is None:
                text, colour = cell.state, "#c62828" if cell.state != "pruned" else INK
            else:
                text = f"{cell.samples_per_s:,.0f}"
                colour = "white" if cell.samples_per_s > 0.6 * top else INK
            ax.text(x, y, text, ha="center", va="center", fontsize=size, color=colour)
        for (workers, prefetch), style in (
            (data.incumbent, {"edgecolor": "#616161", "linestyle": "--"}),
            (data.tuned, {"edgecolor": ACCENT, "linestyle": "-"}),
        ):
            if workers in cols and prefetch in rows:
                x, y = cols.index(workers), rows.index(prefetch)
                ax.add_patch(
                    matplotlib.patches.Rectangle(
                        (x - 0.48, y - 0.48), 0.96, 0.96, fill=False, linewidth=2, **style
                    )
                )
        ax.set_xticks(range(len(cols)), [str(w) for w in cols])
        ax.set_yticks(range(len(rows)), ["none" if p is None else str(p) for p in rows])
        ax.grid(False)
        ax.set_xlabel("num_workers")
        ax.set_ylabel("prefetch_factor")
        ax.set_title("samples/s by num_workers and prefetch_factor")
        if values:
            fig.colorbar(image, ax=ax, label="samples/s", shrink=0.9)
        return _svg(fig)


def ab_rounds(data: ABRounds, width: float = FULL) -> str:
    """Each finalist's A/B rounds: the round ratios as dots over the 95% interval's bar, the
    median as a diamond, 1.0 (no change) and the bar a change must clear (if any) as lines."""
    n = len(data.tests)
    with _figure(width, 1.1 + 0.45 * n) as (fig, ax):
        for i, test in enumerate(data.tests):
            colour = PALETTE[2] if test.chosen else PALETTE[0]
            first = i == 0
            ax.hlines(
                i,
                test.interval[0],
                test.interval[1],
                color=colour,
                linewidth=7,
                alpha=0.35,
                label="95% interval" if first else None,
            )
            ax.plot(
                test.ratios,
                [i] * len(test.ratios),
                "o",
                color=colour,
                markersize=4,
                label="one round" if first else None,
            )
            ax.plot(
                [test.speedup], [i], "D", color=INK, markersize=5, label="median" if first else None
            )
        ax.axvline(1.0, color="#9e9e9e", linewidth=1)
        if data.threshold is not None:
            ax.axvline(
                data.threshold,
                color=ACCENT,
                linestyle="--",
                linewidth=1.2,
                label=f"to clear: {data.threshold:.2f}x",
            )
        labels = [t.label + (" (chosen)" if t.chosen else "") for t in data.tests]
        ax.set_yticks(range(n), labels)
        ax.set_ylim(n - 0.5, -0.5)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("candidate / current samples/s")
        ax.set_title("A/B rounds against the current settings")
        _legend(ax, 2)
        return _svg(fig)


@contextmanager
def _pyplot_figures() -> Iterator[list[Any]]:
    """Runs pyplot code under the report's style; every figure put in the list is closed.

    The ``rc_context`` also undoes the ggplot style Optuna's plots set globally.
    """
    import matplotlib
    from matplotlib import pyplot as plt

    figures: list[Any] = []
    with matplotlib.rc_context(_STYLE):
        try:
            yield figures
        finally:
            for fig in figures:
                plt.close(fig)


def _restyle(ax: Any, title: str, width: float, height: float) -> None:
    """Optuna's ggplot look turned into the report's: white ground, quiet grid, our title."""
    fig = ax.figure
    fig.set_size_inches(width, height)
    fig.set_layout_engine("constrained")
    fig.set_facecolor("white")
    ax.set_facecolor("white")
    ax.grid(True, color=GRID, linewidth=0.8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(True)
        ax.spines[side].set_color("#bdbdbd")
    ax.tick_params(colors="#757575", labelsize=8)
    ax.xaxis.label.set_color(INK)
    ax.yaxis.label.set_color(INK)
    ax.xaxis.label.set_fontsize(9)
    ax.yaxis.label.set_fontsize(9)
    ax.set_title("")  # Optuna's own, centred
    ax.set_title(title, loc="left", fontsize=10, fontweight="bold", color=INK)
    legend = ax.get_legend()
    if legend is not None:
        legend.get_frame().set_visible(False)
        for text in legend.get_texts():
            text.set_fontsize(8)


def optuna_history(study: Any, width: float = HALF) -> str:
    """Optuna's optimisation history of ``study`` (samples/s per trial and the best so far)."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization.matplotlib import plot_optimization_history

    with _pyplot_figures() as figures, warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        ax = plot_optimization_history(study, target_name="samples/s")
        figures.append(ax.figure)
        _restyle(ax, "samples/s per trial, and the best so far", width, 2.8)
        return _svg(ax.figure)


def optuna_importances(study: Any, evaluator: Any, width: float = HALF) -> tuple[str, list[str]]:
    """Optuna's parameter importances of ``study``, and what Optuna warned while computing.

    Returns:
        The SVG, and the messages of the warnings the evaluator gave (a setting seen in
        too few trials, say), for the page to show beside the figure.
    """
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization.matplotlib import plot_param_importances

    with _pyplot_figures() as figures, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ax = plot_param_importances(study, evaluator=evaluator, target_name="samples/s")
        figures.append(ax.figure)
        if ax.get_legend() is not None:
            ax.get_legend().remove()  # one objective: the legend would only repeat it
        height = 1.0 + 0.4 * len(ax.get_yticks())
        _restyle(ax, "how much each setting explains the best trials", width, height)
        ax.set_ylabel("")
        ax.set_xlabel("importance (shares sum to 1)")
        for text in ax.texts:  # Optuna's value labels
            text.set_fontsize(8)
            text.set_color(INK)
        svg = _svg(ax.figure)
    notes = [
        str(w.message)
        for w in seen
        if "optuna" in w.filename and not issubclass(w.category, ExperimentalWarning)
    ]
    return svg, list(dict.fromkeys(notes))
