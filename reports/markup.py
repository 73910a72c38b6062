"""The HTML building blocks every page is made of, and the document shell with its stylesheet.

Each function returns a fragment of HTML as text. Text given to them is escaped here
(:func:`esc`), quotes included; only the fragments they build and the SVG figures drawn
by reports.plots pass through as markup. The pages per kind of result
(``profile_page``, ``compare_page``, ``tune_page``) are made of these; ``reports.html``
picks the page.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "CSS",
    "as_pair",
    "data_table",
    "document",
    "esc",
    "figure",
    "grid",
    "kv_table",
    "not_measured",
    "para",
    "section",
]


def esc(value: Any) -> str:
    """``value`` as text, escaped (quotes too, so it is safe in an attribute as well)."""
    return html.escape(str(value), quote=True)


def data_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    numeric: Iterable[int] = (),
    cls: str = "",
) -> str:
    """A table with a header row; the columns numbered in ``numeric`` are right-aligned."""
    right = set(numeric)
    head = "".join(
        f"<th{' class=num' if i in right else ''}>{esc(h)}</th>" for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if i in right else ''}>{esc(cell)}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<table class="t {cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def kv_table(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table of (name, value) rows."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="t kv"><tbody>{body}</tbody></table>'


def not_measured(reason: str, lead: str = "Not measured.") -> str:
    """A grey box saying why something is missing."""
    return f'<div class="na"><strong>{esc(lead)}</strong> {esc(reason)}</div>'


def figure(svg: str | None, caption: str = "", missing: str = "") -> str:
    """An SVG figure with its caption; without one, ``missing`` says why (or nothing)."""
    if svg is None:
        return not_measured(missing) if missing else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="chart">{svg}{cap}</figure>'


def grid(*cells: str) -> str:
    """The cells side by side where the page is wide enough, stacked where it is not."""
    return '<div class="grid">' + "".join(f"<div>{c}</div>" for c in cells if c) + "</div>"


def section(anchor: str, title: str, body: str, intro: str = "") -> str:
    """A section of the page: its anchor (for the table of contents), heading and body."""
    lead = f'<p class="intro">{esc(intro)}</p>' if intro else ""
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{lead}{body}</section>'


def para(text: str, cls: str = "") -> str:
    """A paragraph of text."""
    return f"<p{f' class={cls}' if cls else ''}>{esc(text)}</p>"


def as_pair(value: str | tuple[str, str]) -> tuple[str, str]:
    """A section function returns its body, or (body, intro)."""
    return value if isinstance(value, tuple) else (value, "")


def document(title: str, heading: str, sub: str, nav: Sequence[tuple[str, str]], body: str) -> str:
    """The whole page: the app bar with ``heading`` (markup), the contents, the sections.

    Args:
        title: The window's title (text).
        heading: The app bar's heading (markup: escape what goes in it).
        sub: One line under the heading (text).
        nav: (anchor, text) of every section, for the table of contents.
        body: The sections (markup).

    Returns:
        The complete document, starting with ``<!DOCTYPE html>``.
    """
    links = "".join(f'<a href="#{anchor}">{esc(text)}</a>' for anchor, text in nav)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="bar"><span class="brand">loadtune</span>{heading}</header>'
        f'<div class="page"><nav class="toc">{links}</nav><main>'
        f'<div class="sub">{esc(sub)}</div>{body}'
        "<footer>Drawn by loadtune from the saved result; this file needs no network.</footer>"
        "</main></div></body></html>\n"
    )


# TensorBoard's look: an orange app bar, white cards on grey, quiet grid lines.
CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f5f5f5;color:#212121;
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;
 font-size:.92em}
.bar{background:#f57c00;color:#fff;padding:10px 24px;display:flex;align-items:baseline;gap:18px;
 box-shadow:0 2px 4px rgba(0,0,0,.2)}
.bar .brand{font-weight:600;letter-spacing:.04em;text-transform:uppercase;font-size:13px}
.bar h1{font-size:18px;font-weight:500;margin:0;overflow-wrap:anywhere}
.bar code{background:rgba(255,255,255,.18);padding:1px 6px;border-radius:3px}
.page{display:grid;grid-template-columns:180px minmax(0,1fr);gap:20px;padding:16px 24px;
 max-width:1400px;margin:0 auto}
.toc{position:sticky;top:12px;align-self:start;display:flex;flex-direction:column;gap:2px}
.toc a{color:#616161;text-decoration:none;padding:4px 10px;border-left:3px solid transparent;
 font-size:13px}
.toc a:hover{color:#e65100;border-left-color:#f57c00;background:#fff}
.sub{color:#616161;font-size:13px;margin:0 0 12px}
section{background:#fff;border-radius:4px;box-shadow:0 1px 3px rgba(0,0,0,.12);
 padding:14px 18px;margin:0 0 16px}
h2{font-size:16px;font-weight:500;margin:0 0 8px;color:#424242}
h3{font-size:13px;font-weight:600;margin:14px 0 6px;color:#616161;text-transform:uppercase;
 letter-spacing:.03em}
h4{font-size:13px;font-weight:500;margin:10px 0 4px;color:#616161}
.intro{color:#616161;margin:0 0 10px;font-size:13px}
.small{color:#757575;font-size:12px}
.muted{color:#9e9e9e;font-weight:400}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:16px;
 align-items:start}
.grid>div{min-width:0}
figure.chart{margin:0}
figure.chart figcaption{color:#757575;font-size:12px;margin-top:2px}
svg.fig{width:100%;height:auto;display:block}
svg.fig *{stroke-linejoin:round;stroke-linecap:butt}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px}
.card{border:1px solid #e0e0e0;border-top:3px solid #9e9e9e;border-radius:4px;padding:10px 12px}
.card.ok{border-top-color:#2e7d32}.card.warn{border-top-color:#f9a825}
.card.bad{border-top-color:#c62828}
.card .label{color:#757575;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:24px;font-weight:500;margin:2px 0}
.card .note{color:#616161;font-size:12.5px}
.evidence{margin:8px 0 0;font-size:12px;display:grid;gap:1px}
.evidence div{display:flex;justify-content:space-between;gap:8px;border-top:1px dotted #e0e0e0}
.evidence dt{color:#757575}.evidence dd{margin:0;font-variant-numeric:tabular-nums}
.todo{margin:12px 0 0;padding:8px 12px;background:#fff3e0;border-left:3px solid #f57c00}
.na{margin:8px 0;padding:8px 12px;background:#fafafa;border-left:3px solid #bdbdbd;
 color:#616161}
.na ul{margin:4px 0 0;padding-left:20px}
.verdict{font-size:15px;margin:4px 0 8px}
.runner{color:#616161;margin:0 0 8px}
.pill{display:inline-block;padding:1px 10px;border-radius:12px;color:#fff;background:#757575;
 font-size:13px;font-weight:500;margin-right:6px}
.pill.bad{background:#c62828}.pill.ok{background:#2e7d32}
ol{margin:4px 0 8px;padding-left:22px}
table.t{border-collapse:collapse;width:100%;font-size:13px;margin:4px 0 8px}
table.t th,table.t td{padding:4px 8px;border-bottom:1px solid #eee;text-align:left;
 vertical-align:top}
table.t thead th{color:#757575;font-weight:500;border-bottom:1px solid #e0e0e0;
 white-space:nowrap}
table.t .num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv th{color:#616161;font-weight:400;width:45%}
table.kv td{overflow-wrap:anywhere}
table.hot td code{overflow-wrap:anywhere}
td.share{width:110px}
table.cmp tr.better td:nth-last-child(-n+2){color:#2e7d32;font-weight:600}
table.cmp tr.worse td:nth-last-child(-n+2){color:#c62828;font-weight:600}
table.cmp th{font-weight:400}
table.trials tr.tuned td{background:#e8f5e9}
table.trials tr.incumbent td{background:#fff8e1}
table.trials td.why{color:#616161;overflow-wrap:anywhere;min-width:260px}
pre.snippet{background:#263238;color:#eceff1;padding:12px 16px;border-radius:4px;margin:6px 0;
 overflow-x:auto;white-space:pre;user-select:all}
details{margin:6px 0;border:1px solid #eee;border-radius:4px;padding:4px 10px}
details summary{cursor:pointer;font-weight:500;color:#424242;padding:2px 0}
footer{color:#9e9e9e;font-size:12px;margin:8px 0 24px}
@media (max-width:800px){.page{grid-template-columns:1fr}.toc{display:none}}
"""
