"""The HTML page of a comparison of two profiles: B against A, metric by metric.

What is said comes from reports.compare; the building blocks are reports.markup's.
``reports.html.render`` calls :func:`render` for a result of kind ``"compare"``.
"""

from __future__ import annotations

from . import compare, plotdata, plots, views
from .compare import Comparison
from .markup import document, esc, figure, grid, kv_table, section

__all__ = ["COMPARE_SECTIONS", "render"]

#: (anchor, heading) of every section of a comparison page.
COMPARE_SECTIONS = (
    ("comparison", "Comparison"),
    ("stages", "Stage breakdown"),
    ("runs", "The two runs"),
)


def render(c: Comparison) -> str:
    """The comparison page: the table of A, B and B/A, the stages side by side, both runs.

    Args:
        c: The two profiles.

    Returns:
        The complete document.
    """
    rows = compare.compare_rows(c)
    body_rows = "".join(
        f'<tr class="{esc(r.verdict)}"><th>{esc(r.metric)}</th><td class=num>{esc(r.before)}</td>'
        f"<td class=num>{esc(r.after)}</td><td class=num>{esc(r.ratio_text)}</td>"
        f"<td>{esc(r.verdict)}</td></tr>"
        for r in rows
    )
    head = (
        f"<th>metric</th><th class=num>{esc(c.before_name)}</th>"
        f"<th class=num>{esc(c.after_name)}</th>"
        f"<th class=num>{esc(c.after_name)} / {esc(c.before_name)}</th><th></th>"
    )
    table = f'<table class="t cmp"><thead><tr>{head}</tr></thead><tbody>{body_rows}</tbody></table>'
    bars = plotdata.compare_stages(c)
    sections = {
        "comparison": (
            f'<p class="verdict">{esc(compare.compare_headline(c))}</p>' + table,
            "Each row with a direction says whether B is better or worse than A (by more than 2%).",
        ),
        "stages": (
            figure(plots.bars(bars) if bars else None, missing="neither run has stages"),
            "",
        ),
        "runs": (
            grid(
                f"<h3>{esc(c.before_name)}</h3>" + kv_table(views.profile_headline(c.before)),
                f"<h3>{esc(c.after_name)}</h3>" + kv_table(views.profile_headline(c.after)),
            ),
            "",
        ),
    }
    body = "".join(section(anchor, title, *sections[anchor]) for anchor, title in COMPARE_SECTIONS)
    heading = (
        f"<h1>Compare <code>{esc(c.before_name)}</code> and <code>{esc(c.after_name)}</code></h1>"
    )
    sub = "  ·  ".join(f"{name}: {source}" for name, source in compare.compare_sources(c))
    return document(
        f"loadtune compare: {c.before_name} and {c.after_name}",
        heading,
        sub,
        COMPARE_SECTIONS,
        body,
    )
