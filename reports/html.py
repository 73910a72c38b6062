"""render(result) -> one self-contained HTML page: inline CSS, inline SVG, no script.

The page opens offline and from anywhere: nothing is fetched (no script, stylesheet, font
or image from elsewhere), the figures are SVG drawn by reports.plots, and everything that
came from the user or the machine (target, paths, exception text, function names) goes
through :func:`html.escape`. What is said comes from reports.views and reports.plotdata;
this module only lays it out. A result kind is one entry of ``_PAGES``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from loadtune.results import ProfileResult

from . import compare, plotdata, plots, tables, views
from .compare import Comparison

__all__ = ["COMPARE_SECTIONS", "PROFILE_SECTIONS", "render"]

#: (anchor, heading) of every section of a profile page, in order.
PROFILE_SECTIONS = (
    ("summary", "Summary"),
    ("diagnosis", "Diagnosis"),
    ("timeline", "Batch timeline"),
    ("stages", "Stage breakdown"),
    ("workers", "Worker utilisation"),
    ("cpu", "CPU"),
    ("memory", "Memory"),
    ("io", "I/O"),
    ("numa", "NUMA placement"),
    ("gpu", "GPU transfer"),
    ("hot", "Hot functions"),
    ("system", "System"),
)

#: (anchor, heading) of every section of a comparison page.
COMPARE_SECTIONS = (
    ("comparison", "Comparison"),
    ("stages", "Stage breakdown"),
    ("runs", "The two runs"),
)


def render(result: Any) -> str:
    """The HTML page for a result (a ProfileResult, or a views.Comparison of two).

    Args:
        result: Any object whose ``kind`` has a page here.

    Returns:
        The complete document, starting with ``<!DOCTYPE html>``.

    Raises:
        TypeError: there is no page for this kind of result.

    Example:
        >>> from loadtune.results import load
        >>> page = render(load("tests/data/profile_v1.json"))  # doctest: +SKIP
        >>> page.startswith("<!DOCTYPE html>")  # doctest: +SKIP
        True
    """
    kind = getattr(result, "kind", None)
    page = _PAGES.get(kind)
    if page is None:
        raise TypeError(f"no HTML report for a result of kind {kind!r}")
    return page(result)


# --------------------------------------------------------------------------- building blocks


def _e(value: Any) -> str:
    """Escaped text (quotes too, so it is safe in an attribute as well)."""
    return html.escape(str(value), quote=True)


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    numeric: Iterable[int] = (),
    cls: str = "",
) -> str:
    right = set(numeric)
    head = "".join(
        f"<th{' class=num' if i in right else ''}>{_e(h)}</th>" for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if i in right else ''}>{_e(cell)}</td>" for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<table class="t {cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _kv(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="t kv"><tbody>{body}</tbody></table>'


def _na(reason: str) -> str:
    return f'<div class="na"><strong>Not measured.</strong> {_e(reason)}</div>'


def _figure(svg: str | None, caption: str = "", missing: str = "") -> str:
    if svg is None:
        return _na(missing) if missing else ""
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure class="chart">{svg}{cap}</figure>'


def _grid(*cells: str) -> str:
    return '<div class="grid">' + "".join(f"<div>{c}</div>" for c in cells if c) + "</div>"


def _section(anchor: str, title: str, body: str, intro: str = "") -> str:
    lead = f'<p class="intro">{_e(intro)}</p>' if intro else ""
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{lead}{body}</section>'


def _p(text: str, cls: str = "") -> str:
    return f"<p{f' class={cls}' if cls else ''}>{_e(text)}</p>"


def _document(title: str, heading: str, sub: str, nav: Sequence[tuple[str, str]], body: str) -> str:
    links = "".join(f'<a href="#{anchor}">{_e(text)}</a>' for anchor, text in nav)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f'<header class="bar"><span class="brand">loadtune</span>{heading}</header>'
        f'<div class="page"><nav class="toc">{links}</nav><main>'
        f'<div class="sub">{_e(sub)}</div>{body}'
        "<footer>Drawn by loadtune from the saved result; this file needs no network.</footer>"
        "</main></div></body></html>\n"
    )


# --------------------------------------------------------------------------- profile page


def _profile_page(result: ProfileResult) -> str:
    sections = {
        "summary": _summary,
        "diagnosis": _diagnosis,
        "timeline": _timeline,
        "stages": _stages,
        "workers": _workers,
        "cpu": _cpu,
        "memory": _memory,
        "io": _io,
        "numa": _numa,
        "gpu": _gpu,
        "hot": _hot,
        "system": _system,
    }
    body = "".join(
        _section(anchor, title, *_as_pair(sections[anchor](result)))
        for anchor, title in PROFILE_SECTIONS
    )
    c = result.config
    sub = (
        f"{result.backend} DataLoader, batch_size={c.batch_size}, num_workers={c.num_workers}, "
        f"prefetch_factor={c.prefetch_factor}, pin_memory={c.pin_memory}"
        + (f" · taken {result.created}" if result.created else "")
    )
    heading = f"<h1>Profile of <code>{_e(result.target)}</code></h1>"
    return _document(f"loadtune profile: {result.target}", heading, sub, PROFILE_SECTIONS, body)


def _as_pair(value: str | tuple[str, str]) -> tuple[str, str]:
    """A section function returns its body, or (body, intro)."""
    return value if isinstance(value, tuple) else (value, "")


def _summary(result: ProfileResult) -> str:
    cards = []
    for card in views.summary_cards(result):
        extra = ""
        if card.label == "bottleneck":
            extra = "".join(
                f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>"
                for k, v in views.evidence_rows(result)
            )
            extra = f'<dl class="evidence">{extra}</dl>' if extra else ""
        cards.append(
            f'<div class="card {_e(card.level)}"><div class="label">{_e(card.label)}</div>'
            f'<div class="value">{_e(card.value)}</div>'
            f'<div class="note">{_e(card.note)}</div>{extra}</div>'
        )
    out = f'<div class="cards">{"".join(cards)}</div>'
    d = result.diagnosis
    if d is not None and d.recommendations:
        out += f'<div class="todo"><strong>Do this:</strong> {_e(d.recommendations[0])}</div>'
    missing = views.unavailable(result)
    if missing:
        items = "".join(f"<li><b>{_e(n)}</b>: {_e(r)}</li>" for n, r in missing)
        out += f'<div class="na"><strong>Not measured in this run:</strong><ul>{items}</ul></div>'
    return out


def _diagnosis(result: ProfileResult) -> str | tuple[str, str]:
    d = result.diagnosis
    if d is None:
        return _na("the result holds no diagnosis (the run measured too little to judge)")
    level = "ok" if d.bottleneck == "consumer" else "bad"
    out = (
        f'<p class="verdict"><span class="pill {level}">{_e(views.bottleneck_title(d.bottleneck))}'
        f"</span> {_e(d.explanation)}</p>"
    )
    if d.runner_up:
        out += (
            f'<p class="runner">Runner-up: <b>{_e(views.bottleneck_title(d.runner_up))}</b>: '
            f"{_e(d.runner_up_explanation)}</p>"
        )
    if d.recommendations:
        out += "<h3>What to change</h3><ol>" + "".join(
            f"<li>{_e(r)}</li>" for r in d.recommendations
        )
        out += "</ol>"
    curve = plotdata.prediction(result)
    left = _figure(
        plots.curve(curve) if curve else None,
        "Samples/s the throughput model predicts for each num_workers, coloured by what "
        "limits it; the star is the throughput measured at the current setting.",
        "no prediction: the model needs the stages and cpu probes",
    )
    right = ""
    if views.evidence_rows(result):
        right += "<h3>Evidence</h3>" + _kv(views.evidence_rows(result))
    if views.model_rows(result):
        right += "<h3>Model inputs</h3>" + _kv(views.model_rows(result))
        right += _p(
            "The model bounds the batch rate by the workers, the cores and the main "
            "process; prefetch_factor absorbs variance but moves no bound.",
            "small",
        )
    return out + _grid(left, right), "What holds the pipeline back, and the numbers behind it."


def _timeline(result: ProfileResult) -> str | tuple[str, str]:
    reason = views.probe_reason(result, "stages")
    if reason:
        return _na(reason)
    data = plotdata.timeline(result)
    if data is None:
        return _na("no batch was taken in the measured window")
    stages = result.probes["stages"]
    note = ""
    if stages.detail.get("mode") == "external":
        note = _p(
            "This loader is not loadtune's, so only the consumer's waits are seen; "
            "loadtune's DataLoader also shows when each worker was busy.",
            "small",
        )
    return (
        _figure(
            plots.timeline(data),
            "Top: how long the training loop waited for each batch, at the moment it got it. "
            "Below: when it was waiting (red) and when each worker was working on a batch "
            "(blue); gaps in a worker's row are time it had nothing to do.",
        )
        + note,
        f"The measured window ({views.fmt_s(data.window_s)}), batch by batch.",
    )


def _stages(result: ProfileResult) -> str | tuple[str, str]:
    reason = views.probe_reason(result, "stages")
    if reason:
        return _na(reason)
    rows = views.stage_rows(result)
    if not rows:
        return _na("no batch was taken in the measured window")
    data = plotdata.stage_bars(result)
    table = _table(
        ("stage", "mean", "median", "p95", "what it is"),
        [(*row, views.STAGE_HELP.get(row[0], "")) for row in rows],
        numeric=(1, 2, 3),
    )
    return (
        _grid(
            _figure(
                plots.bars(data) if data else None,
                "Bars: the mean; ticks: the 95th percentile; red: the wait, the time the "
                "training loop lost.",
            ),
            table,
        ),
        "Where each batch's time went, per batch. Worker stages overlap each other and the "
        "training step; only the wait is time the training loop lost.",
    )


def _workers(result: ProfileResult) -> str | tuple[str, str]:
    reason = views.probe_reason(result, "cpu")
    if reason:
        return _na(reason)
    data = plotdata.worker_cpu(result)
    table = _table(
        ("process", "pid", "cpu", "cpu wait", "busy", "memory"),
        views.worker_rows(result),
        numeric=(1, 2, 3, 4, 5),
    )
    return (
        _grid(
            _figure(plots.line_chart(data) if data else None, "100% is one core in use."),
            table
            + _p(
                "cpu: CPU time over the window, in % of one core; cpu wait: time it was "
                "ready to run but had no CPU; busy: share of the window a worker spent on "
                "its batches; memory: peak of its own pages (USS).",
                "small",
            ),
        ),
        "How hard each process worked, over time.",
    )


def _cpu(result: ProfileResult) -> str:
    reason = views.probe_reason(result, "cpu")
    if reason:
        return _na(reason)
    machine, load = plotdata.machine_cpu(result), plotdata.load_average(result)
    charts = _grid(
        _figure(plots.line_chart(machine) if machine else None),
        _figure(plots.line_chart(load) if load else None),
    )
    return charts + _kv(tables.cpu_rows(result))


def _memory(result: ProfileResult) -> str | tuple[str, str]:
    reason = views.probe_reason(result, "memory")
    if reason:
        return _na(reason)
    data = plotdata.memory(result)
    table = _table(
        ("process", "pid", "peak RSS", "peak USS", "peak PSS"),
        tables.memory_process_rows(result),
        numeric=(1, 2, 3, 4),
    )
    return (
        _grid(
            _figure(
                plots.line_chart(data) if data else None,
                "Solid: each process's own pages (USS); dashed: all processes with shared "
                "pages split between them (PSS), and /dev/shm in use.",
            ),
            _kv(tables.memory_rows(result)),
        )
        + table,
        "RSS counts shared pages in every process that maps them; USS is a process's own; "
        "PSS splits shared pages between the processes that share them.",
    )


def _io(result: ProfileResult) -> str | tuple[str, str]:
    reason = views.probe_reason(result, "io")
    if reason:
        return _na(reason)
    rates, wait = plotdata.io_rates(result), plotdata.iowait(result)
    table = _table(
        ("process", "read", "read from device", "written", "read calls"),
        tables.io_rows(result),
        numeric=(1, 2, 3, 4),
    )
    missing = result.probes["io"].detail.get("iowait")
    return (
        _grid(
            _figure(plots.line_chart(rates) if rates else None),
            _figure(
                plots.line_chart(wait) if wait else None,
                missing=f"iowait: {missing}" if missing else "",
            ),
        )
        + table,
        "Read: bytes asked for through read() (page cache or disk); read from device: what "
        "reached the disk. Reads of memory-mapped files are page faults and count in neither.",
    )


def _numa(result: ProfileResult) -> str | tuple[str, str]:
    reason = views.probe_reason(result, "numa")
    if reason:
        return _na(reason)
    numa = result.probes["numa"]
    s = numa.summary
    facts = []
    if "workers_spanning_nodes" in s:
        facts.append(
            f"{s['workers_spanning_nodes']:.0f} of {s.get('workers_observed', 0):.0f} workers "
            "may run on more than one node"
        )
    if "workers_off_main_node" in s:
        facts.append(f"{s['workers_off_main_node']:.0f} ran mostly off the main process's node")
    nodes = _table(
        ("node", "cpus", "memory", "free"), tables.numa_node_rows(result), numeric=(2, 3)
    )
    placement = _table(
        ("process", "pid", "allowed cpus", "allowed nodes", "ran on"),
        tables.placement_rows(result),
        numeric=(1,),
    )
    body = _grid(nodes, _p("; ".join(facts) + "." if facts else "", "small"))
    return body + placement, f"{s.get('nodes', 0):.0f} NUMA node(s); where each process ran."


def _gpu(result: ProfileResult) -> str | tuple[str, str]:
    reason = views.probe_reason(result, "gpu")
    if reason:
        return _na(reason)
    return (
        _kv(tables.gpu_rows(result)),
        "Copying one real batch to the GPU from pageable and from pinned memory.",
    )


def _share_style(share: float) -> str:
    """A bar behind the cell's text, as long as the share (a number we formatted)."""
    pct = f"{100 * min(1.0, max(0.0, share)):.1f}%"
    return f"background:linear-gradient(90deg,#ffe0b2 {pct},transparent {pct})"


def _share_table(rows: list[tables.HotFunction]) -> str:
    body = "".join(
        "<tr>"
        f'<td class="num share" style="{_share_style(r.share)}">{_e(views.fmt_pct(r.share))}</td>'
        f'<td class="num">{r.samples}</td>'
        f"<td><code>{_e(r.function)}</code></td>"
        f'<td title="{_e(r.file)}">{_e(r.where)}</td>'
        "</tr>"
        for r in rows
    )
    head = '<th class="num">share</th><th class="num">samples</th><th>function</th><th>where</th>'
    return f'<table class="t hot"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _hot(result: ProfileResult) -> str | tuple[str, str]:
    reason = views.probe_reason(result, "pyspy")
    if reason:
        return _na(reason)
    groups = tables.hot_groups(result)
    if not groups:
        return _na("py-spy recorded no samples")
    out = ""
    for n, (group, samples) in enumerate(groups):
        self_rows = tables.hot_functions(result, group, "self", 15)
        total_rows = tables.hot_functions(result, group, "total", 15)
        title = {"all": "all processes", "workers": "all workers"}.get(group, group)
        inner = "<h4>by self time (running in the function itself)</h4>" + _share_table(self_rows)
        inner += "<h4>by total time (anywhere on the stack)</h4>" + _share_table(total_rows)
        out += (
            f"<details{' open' if n == 0 else ''}><summary>{_e(title)} "
            f'<span class="muted">({samples} samples)</span></summary>{inner}</details>'
        )
    procs = tables.pyspy_process_rows(result)
    if procs:
        out += "<h3>Recorders</h3>" + _table(
            ("process", "pid", "status", "samples"), procs, numeric=(1, 3)
        )
    return out, (
        "Where the processes spent their CPU, sampled by py-spy (idle threads not sampled). "
        "The whole profile opens in speedscope from the speedscope file."
    )


def _system(result: ProfileResult) -> str:
    return _grid(
        "<h3>Machine</h3>" + _kv(views.system_rows(result)),
        "<h3>This run</h3>" + _kv(views.run_rows(result)),
    )


# --------------------------------------------------------------------------- compare page


def _compare_page(c: Comparison) -> str:
    rows = compare.compare_rows(c)
    body_rows = "".join(
        f'<tr class="{_e(r.verdict)}"><th>{_e(r.metric)}</th><td class=num>{_e(r.before)}</td>'
        f"<td class=num>{_e(r.after)}</td><td class=num>{_e(r.ratio_text)}</td>"
        f"<td>{_e(r.verdict)}</td></tr>"
        for r in rows
    )
    head = (
        f"<th>metric</th><th class=num>{_e(c.before_name)}</th>"
        f"<th class=num>{_e(c.after_name)}</th>"
        f"<th class=num>{_e(c.after_name)} / {_e(c.before_name)}</th><th></th>"
    )
    table = f'<table class="t cmp"><thead><tr>{head}</tr></thead><tbody>{body_rows}</tbody></table>'
    bars = plotdata.compare_stages(c)
    sections = {
        "comparison": (
            f'<p class="verdict">{_e(compare.compare_headline(c))}</p>' + table,
            "Each row with a direction says whether B is better or worse than A (by more than 2%).",
        ),
        "stages": (
            _figure(plots.bars(bars) if bars else None, missing="neither run has stages"),
            "",
        ),
        "runs": (
            _grid(
                f"<h3>{_e(c.before_name)}</h3>" + _kv(views.profile_headline(c.before)),
                f"<h3>{_e(c.after_name)}</h3>" + _kv(views.profile_headline(c.after)),
            ),
            "",
        ),
    }
    body = "".join(_section(anchor, title, *sections[anchor]) for anchor, title in COMPARE_SECTIONS)
    heading = (
        f"<h1>Compare <code>{_e(c.before_name)}</code> and <code>{_e(c.after_name)}</code></h1>"
    )
    sub = "  ·  ".join(f"{name}: {source}" for name, source in compare.compare_sources(c))
    return _document(
        f"loadtune compare: {c.before_name} and {c.after_name}",
        heading,
        sub,
        COMPARE_SECTIONS,
        body,
    )


_PAGES: dict[str, Callable[[Any], str]] = {"profile": _profile_page, "compare": _compare_page}

# TensorBoard's look: an orange app bar, white cards on grey, quiet grid lines.
_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f5f5f5;color:#212121;
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;
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
details{margin:6px 0;border:1px solid #eee;border-radius:4px;padding:4px 10px}
details summary{cursor:pointer;font-weight:500;color:#424242;padding:2px 0}
footer{color:#9e9e9e;font-size:12px;margin:8px 0 24px}
@media (max-width:800px){.page{grid-template-columns:1fr}.toc{display:none}}
"""
