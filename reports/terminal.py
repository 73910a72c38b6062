"""render(result) -> a rich renderable: the terminal summary of a profile."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from loadtune.results import ProfileResult

from . import views

__all__ = ["render"]


def render(result: ProfileResult) -> Any:
    """The summary panel, the stage table and the per-process table."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column()
    for key, value in views.profile_headline(result):
        head.add_row(key, value)
    parts: list[Any] = [Panel(head, title="loadtune profile", expand=False)]
    stages = views.stage_rows(result)
    if stages:
        table = Table(title="time per batch", title_justify="left")
        for col in ("stage", "mean", "median", "p95"):
            table.add_column(col, justify="right" if col != "stage" else "left")
        for row in stages:
            table.add_row(*row)
        parts.append(table)
    workers = views.worker_rows(result)
    if workers:
        table = Table(title="processes", title_justify="left")
        for col in ("process", "pid", "cpu", "busy", "memory"):
            table.add_column(col, justify="right" if col != "process" else "left")
        for row in workers:
            table.add_row(*row)
        parts.append(table)
    unavailable = [f"{p.name}: {p.reason}" for p in result.probes.values() if not p.available]
    if unavailable:
        parts.append("not measured: " + "; ".join(unavailable))
    return Group(*parts)
