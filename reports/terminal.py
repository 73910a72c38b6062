"""render(result) -> a rich renderable: the terminal summary of a profile, study or comparison.

What is said comes from reports.views (reports.tuneviews for a study); this module decides
how it looks in a terminal. It
fits 80 columns, and colour only repeats what the words say, so the output reads the same
with ``NO_COLOR``, in a pipe or in a file (:func:`render_text`). Every value is passed to
rich as ``Text``, never as markup, so a ``[`` in a target or a function name is shown as
it is.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from loadtune.results import ProfileResult, TuneResult

from . import compare, tables, tuneviews, views
from .compare import Comparison

__all__ = ["WIDTH", "render", "render_text"]

#: The width the summary is laid out for (and render_text's default).
WIDTH = 80
HOT_FUNCTIONS = 5


def render(result: Any) -> Any:
    """The terminal summary of a result (a ProfileResult, a TuneResult, or a Comparison).

    Raises:
        TypeError: there is no terminal summary for this kind of result.

    Example:
        >>> from rich.console import Console
        >>> from loadtune.results import load
        >>> Console().print(render(load("tests/data/profile_v1.json")))  # doctest: +SKIP
    """
    kind = getattr(result, "kind", None)
    page = _PAGES.get(kind)
    if page is None:
        raise TypeError(f"no terminal summary for a result of kind {kind!r}")
    return page(result)


def render_text(result: Any, width: int = WIDTH) -> str:
    """The terminal summary as plain text, ``width`` columns wide (for a .txt file)."""
    console = Console(
        file=io.StringIO(), width=width, record=True, color_system=None, force_terminal=False
    )
    console.print(render(result))
    # rich pads every line to the table's width; a file has no use for trailing blanks.
    return "".join(line.rstrip() + "\n" for line in console.export_text().splitlines())


def _grid(rows: Sequence[tuple[str, str]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key, value in rows:
        grid.add_row(Text(key), Text(value))
    return grid


def _table(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    left: Sequence[int] = (0,),
) -> Table:
    """A table with the columns numbered in ``left`` left-aligned, the others right-aligned."""
    table = Table(
        title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, show_edge=False
    )
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i in left else "right")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table


def _profile(result: ProfileResult) -> Any:
    """Summary panel, stages, processes, resources, hot functions, what was not measured."""
    parts: list[Any] = [
        Panel(_grid(views.profile_headline(result)), title="loadtune profile", expand=False)
    ]
    stages = views.stage_rows(result)
    if stages:
        parts.append(_table("time per batch", ("stage", "mean", "median", "p95"), stages))
    workers = views.worker_rows(result)
    if workers:
        parts.append(
            _table(
                "processes",
                ("process", "pid", "cpu", "cpu wait", "busy", "memory"),
                workers,
            )
        )
    pool = views.pool_rows(result)
    if pool:
        parts.append(_table("worker pool changes", ("at", "from", "to", "why"), pool, left=(3,)))
    resources = views.resource_rows(result)
    if resources:
        parts.append(Group(Text("resources", style="bold"), Padding(_grid(resources), (0, 1))))
    hot = tables.hot_functions(result, "all", "self", HOT_FUNCTIONS)
    if hot:
        parts.append(_hot_table(hot))
    missing = views.unavailable(result)
    if missing:
        parts.append(Group(*(Text(f"not measured: {n}: {why}") for n, why in missing)))
    return _spaced(parts)


def _spaced(parts: list[Any]) -> Group:
    """The parts with a blank line between each two."""
    out: list[Any] = []
    for part in parts:
        if out:
            out.append(Text(""))
        out.append(part)
    return Group(*out)


def _hot_table(rows: list[tables.HotFunction]) -> Table:
    table = Table(
        title="hot functions (py-spy, self time, all processes)",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
    )
    table.add_column("share", justify="right")
    table.add_column("function", no_wrap=True, overflow="ellipsis", max_width=44)
    table.add_column("where", no_wrap=True, overflow="ellipsis", max_width=24)
    for r in rows:
        table.add_row(Text(views.fmt_pct(r.share)), Text(r.function), Text(r.where))
    return table


def _compare(c: Comparison) -> Any:
    """The headline sentence and the table of A, B and B/A, each row judged in words."""
    table = Table(box=box.SIMPLE_HEAD, title_style="bold", show_edge=False)
    table.add_column("metric")
    table.add_column(Text(c.before_name), justify="right")
    table.add_column(Text(c.after_name), justify="right")
    table.add_column(Text(f"{c.after_name}/{c.before_name}"), justify="right")
    table.add_column("")
    styles = {"better": "green", "worse": "red"}
    for row in compare.compare_rows(c):
        table.add_row(
            Text(row.metric),
            Text(row.before),
            Text(row.after),
            Text(row.ratio_text, style=styles.get(row.verdict, "")),
            Text(row.verdict, style=styles.get(row.verdict, "")),
        )
    head = _grid([*compare.compare_sources(c), ("result", compare.compare_headline(c))])
    return _spaced([Panel(head, title="loadtune compare", expand=False), table])


def _tune(result: TuneResult) -> Any:
    """Summary panel, the trials and why some ended early, the A/B tests, the snippet."""
    parts: list[Any] = [
        Panel(_grid(tuneviews.tune_headline(result)), title="loadtune autotune", expand=False)
    ]
    names = tuneviews.varying_settings(result)
    # A column per setting that varied; past three, source and then memory give way to
    # keep 80 columns (the HTML report has every column).
    extra = ("samples/s", "memory", "source")[: max(1, min(3, 6 - len(names)))]
    headers = ("#", *(tuneviews.SHORT_NAMES.get(n, n) for n in names), "state", *extra)
    rows = [
        (str(r.number), *r.settings, r.state, r.samples_per_s, r.memory, r.source)[: len(headers)]
        for r in tuneviews.trial_rows(result)
    ]
    state = len(names) + 1  # the state and source columns are words: left-aligned
    trials = _table("trials", headers, rows, (state, state + 3))
    notes = tuneviews.trial_notes(result)
    parts.append(Group(trials, Padding(_grid(notes), (0, 1))) if notes else trials)
    finalists = tuneviews.finalist_rows(result)
    if finalists:
        parts.append(
            _table(
                "A/B tests against the current settings",
                ("candidate", "rounds", "speedup", "95% interval", "result"),
                finalists,
                left=(0, 4),
            )
        )
    code = Text(tuneviews.snippet(result).rstrip("\n"))
    parts.append(Group(Text("tuned config", style="bold"), Padding(code, (0, 1))))
    return _spaced(parts)


_PAGES: dict[str, Callable[[Any], Any]] = {
    "profile": _profile,
    "compare": _compare,
    "tune": _tune,
}
