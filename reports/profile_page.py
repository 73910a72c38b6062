"""The HTML page of a profile: the verdict, the batch timeline, every probe's figures and tables.

What is said comes from reports.views, reports.tables and reports.plotdata; the building
blocks and the document shell are reports.markup's. ``reports.html.render`` calls
:func:`render` for a result of kind ``"profile"``.
"""

from __future__ import annotations

from loadtune.results import ProfileResult

from . import plotdata, plots, tables, views
from .markup import (
    as_pair,
    data_table,
    document,
    esc,
    figure,
    grid,
    kv_table,
    not_measured,
    para,
    section,
)

__all__ = ["PROFILE_SECTIONS", "render"]

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


def render(result: ProfileResult) -> str:
    """The profile page: every section of PROFILE_SECTIONS, in order.

    Args:
        result: The profile.

    Returns:
        The complete document.
    """
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
        section(anchor, title, *as_pair(sections[anchor](result)))
        for anchor, title in PROFILE_SECTIONS
    )
    c = result.config
    sub = (
        f"{result.backend} DataLoader, batch_size={c.batch_size}, num_workers={c.num_workers}, "
        f"prefetch_factor={c.prefetch_factor}, pin_memory={c.pin_memory}"
        + (f" · taken {result.created}" if result.created else "")
    )
    heading = f"<h1>Profile of <code>{esc(result.target)}</code></h1>"
    return document(f"loadtune profile: {result.target}", heading, sub, PROFILE_SECTIONS, body)


def _summary(result: ProfileResult) -> str:
    cards = []
    for card in views.summary_cards(result):
        extra = ""
        if card.label == "bottleneck":
            extra = "".join(
                f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>"
                for k, v in views.evidence_rows(result)
            )
            extra = f'<dl class="evidence">{extra}</dl>' if extra else ""
        cards.append(
            f'<div class="card {esc(card.level)}"><div class="label">{esc(card.label)}</div>'
            f'<div class="value">{esc(card.value)}</div>'
            f'<div class="note">{esc(card.note)}</div>{extra}</div>'
        )
    out = f'<div class="cards">{"".join(cards)}</div>'
    cache = views.cache_line(result)
    if cache is not None:
        out += para(f"sample cache: {cache}")
    d = result.diagnosis
    if d is not None and d.recommendations:
        out += f'<div class="todo"><strong>Do this:</strong> {esc(d.recommendations[0])}</div>'
    missing = views.unavailable(result)
    if missing:
        items = "".join(f"<li><b>{esc(n)}</b>: {esc(r)}</li>" for n, r in missing)
        out += f'<div class="na"><strong>Not measured in this run:</strong><ul>{items}</ul></div>'
    return out


def _diagnosis(result: ProfileResult) -> str | tuple[str, str]:
    d = result.diagnosis
    if d is None:
        return not_measured("the result holds no diagnosis (the run measured too little to judge)")
    level = "ok" if d.bottleneck == "consumer" else "bad"
    out = (
        f'<p class="verdict"><span class="pill {level}">{esc(views.bottleneck_title(d.bottleneck))}'
        f"</span> {esc(d.explanation)}</p>"
    )
    if d.runner_up:
        out += (
            f'<p class="runner">Runner-up: <b>{esc(views.bottleneck_title(d.runner_up))}</b>: '
            f"{esc(d.runner_up_explanation)}</p>"
        )
    if d.recommendations:
        out += "<h3>What to change</h3><ol>" + "".join(
            f"<li>{esc(r)}</li>" for r in d.recommendations
        )
        out += "</ol>"
    curve = plotdata.prediction(result)
    left = figure(
        plots.curve(curve) if curve else None,
        "Samples/s the throughput model predicts for each num_workers, coloured by what "
        "limits it; the star is the throughput measured at the current setting.",
        "no prediction: the model needs the stages and cpu probes",
    )
    right = ""
    if views.evidence_rows(result):
        right += "<h3>Evidence</h3>" + kv_table(views.evidence_rows(result))
    if views.model_rows(result):
        right += "<h3>Model inputs</h3>" + kv_table(views.model_rows(result))
        right += para(
            "The model bounds the batch rate by the workers, the cores and the main "
            "process; prefetch_factor absorbs variance but moves no bound.",
            "small",
        )
    return out + grid(left, right), "What holds the pipeline back, and the numbers behind it."


def _timeline(result: ProfileResult) -> str | tuple[str, str]:
    reason = views.probe_reason(result, "stages")
    if reason:
        return not_measured(reason)
    data = plotdata.timeline(result)
    if data is None:
        return not_measured("no batch was taken in the measured window")
    stages = result.probes["stages"]
    note = ""
    if stages.detail.get("mode") == "external":
        note = para(
            "This loader is not loadtune's, so only the consumer's waits are seen; "
            "loadtune's DataLoader also shows when each worker was busy.",
            "small",
        )
    return (
        figure(
            plots.timeline(data),
            "Top: how long the training loop waited for each batch, at the moment it got it. "
            "Below: when it was waiting (red) and when each worker was working on a batch "
            "(blue); gaps in a worker's row are time it had nothing to do."
            + (
                " Dashed orange lines: the worker pool changed size (from→to)."
                if data.changes
                else ""
            ),
        )
        + note,
        f"The measured window ({views.fmt_s(data.window_s)}), batch by batch.",
    )


def _stages(result: ProfileResult) -> str | tuple[str, str]:
    reason = views.probe_reason(result, "stages")
    if reason:
        return not_measured(reason)
    rows = views.stage_rows(result)
    if not rows:
        return not_measured("no batch was taken in the measured window")
    data = plotdata.stage_bars(result)
    table = data_table(
        ("stage", "mean", "median", "p95", "what it is"),
        [(*row, views.STAGE_HELP.get(row[0], "")) for row in rows],
        numeric=(1, 2, 3),
    )
    return (
        grid(
            figure(
                plots.bars(data) if data else None,
                "Bars: the mean; ticks: the 95th percentile; red: the wait, the time the "
                "training loop lost.",
            ),
            table,
        ),
        "Where each batch's time went, per batch. Worker stages overlap each other and the "
        "training step; only the wait is time the training loop lost.",
    )


def _pool(result: ProfileResult) -> str:
    """The changes of the worker pool's size (``num_workers="auto"``), or nothing."""
    rows = views.pool_rows(result)
    if not rows:
        return ""
    return (
        "<h3>Worker pool changes</h3>"
        + data_table(("at", "from", "to", "why"), rows, numeric=(0, 1, 2))
        + para(
            "num_workers='auto' grew or shrank the pool; at: seconds since the window "
            "opened (negative: during the warm-up). The batch timeline marks each change.",
            "small",
        )
    )


def _workers(result: ProfileResult) -> str | tuple[str, str]:
    reason = views.probe_reason(result, "cpu")
    if reason:
        return not_measured(reason) + _pool(result)
    data = plotdata.worker_cpu(result)
    table = data_table(
        ("process", "pid", "cpu", "cpu wait", "busy", "memory"),
        views.worker_rows(result),
        numeric=(1, 2, 3, 4, 5),
    )
    return (
        grid(
            figure(plots.line_chart(data) if data else None, "100% is one core in use."),
            table
            + para(
                "cpu: CPU time over the window, in % of one core; cpu wait: time it was "
                "ready to run but had no CPU; busy: share of the window a worker spent on "
                "its batches; memory: peak of its own pages (USS).",
                "small",
            ),
        )
        + _pool(result),
        "How hard each process worked, over time.",
    )


def _cpu(result: ProfileResult) -> str:
    reason = views.probe_reason(result, "cpu")
    if reason:
        return not_measured(reason)
    machine, load = plotdata.machine_cpu(result), plotdata.load_average(result)
    charts = grid(
        figure(plots.line_chart(machine) if machine else None),
        figure(plots.line_chart(load) if load else None),
    )
    return charts + kv_table(tables.cpu_rows(result))


def _memory(result: ProfileResult) -> str | tuple[str, str]:
    cache = views.cache_line(result)
    cache_text = para(f"sample cache: {cache}") if cache is not None else ""
    reason = views.probe_reason(result, "memory")
    if reason:
        return not_measured(reason) + cache_text
    data = plotdata.memory(result)
    table = data_table(
        ("process", "pid", "peak RSS", "peak USS", "peak PSS"),
        tables.memory_process_rows(result),
        numeric=(1, 2, 3, 4),
    )
    return (
        grid(
            figure(
                plots.line_chart(data) if data else None,
                "Solid: each process's own pages (USS); dashed: all processes with shared "
                "pages split between them (PSS), and /dev/shm in use.",
            ),
            kv_table(tables.memory_rows(result)) + cache_text,
        )
        + table,
        "RSS counts shared pages in every process that maps them; USS is a process's own; "
        "PSS splits shared pages between the processes that share them.",
    )


def _io(result: ProfileResult) -> str | tuple[str, str]:
    reason = views.probe_reason(result, "io")
    if reason:
        return not_measured(reason)
    rates, wait = plotdata.io_rates(result), plotdata.iowait(result)
    table = data_table(
        ("process", "read", "read from device", "written", "read calls"),
        tables.io_rows(result),
        numeric=(1, 2, 3, 4),
    )
    missing = result.probes["io"].detail.get("iowait")
    return (
        grid(
            figure(plots.line_chart(rates) if rates else None),
            figure(
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
        return not_measured(reason)
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
    nodes = data_table(
        ("node", "cpus", "memory", "free"), tables.numa_node_rows(result), numeric=(2, 3)
    )
    placement = data_table(
        ("process", "pid", "allowed cpus", "allowed nodes", "ran on"),
        tables.placement_rows(result),
        numeric=(1,),
    )
    body = grid(nodes, para("; ".join(facts) + "." if facts else "", "small"))
    return body + placement, f"{s.get('nodes', 0):.0f} NUMA node(s); where each process ran."


def _gpu(result: ProfileResult) -> str | tuple[str, str]:
    reason = views.probe_reason(result, "gpu")
    if reason:
        return not_measured(reason)
    return (
        kv_table(tables.gpu_rows(result)),
        "Copying one real batch to the GPU from pageable and from pinned memory.",
    )


def _share_style(share: float) -> str:
    """A bar behind the cell's text, as long as the share (a number we formatted)."""
    pct = f"{100 * min(1.0, max(0.0, share)):.1f}%"
    return f"background:linear-gradient(90deg,#ffe0b2 {pct},transparent {pct})"


def _share_table(rows: list[tables.HotFunction]) -> str:
    body = "".join(
        "<tr>"
        f'<td class="num share" style="{_share_style(r.share)}">{esc(views.fmt_pct(r.share))}</td>'
        f'<td class="num">{r.samples}</td>'
        f"<td><code>{esc(r.function)}</code></td>"
        f'<td title="{esc(r.file)}">{esc(r.where)}</td>'
        "</tr>"
        for r in rows
    )
    head = '<th class="num">share</th><th class="num">samples</th><th>function</th><th>where</th>'
    return f'<table class="t hot"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _hot(result: ProfileResult) -> str | tuple[str, str]:
    reason = views.probe_reason(result, "pyspy")
    if reason:
        return not_measured(reason)
    groups = tables.hot_groups(result)
    if not groups:
        return not_measured("py-spy recorded no samples")
    out = ""
    for n, (group, samples) in enumerate(groups):
        self_rows = tables.hot_functions(result, group, "self", 15)
        total_rows = tables.hot_functions(result, group, "total", 15)
        title = {"all": "all processes", "workers": "all workers"}.get(group, group)
        inner = "<h4>by self time (running in the function itself)</h4>" + _share_table(self_rows)
        inner += "<h4>by total time (anywhere on the stack)</h4>" + _share_table(total_rows)
        out += (
            f"<details{' open' if n == 0 else ''}><summary>{esc(title)} "
            f'<span class="muted">({samples} samples)</span></summary>{inner}</details>'
        )
    procs = tables.pyspy_process_rows(result)
    if procs:
        out += "<h3>Recorders</h3>" + data_table(
            ("process", "pid", "status", "samples"), procs, numeric=(1, 3)
        )
    return out, (
        "Where the processes spent their CPU, sampled by py-spy (idle threads not sampled). "
        "The whole profile opens in speedscope from the speedscope file."
    )


def _system(result: ProfileResult) -> str:
    return grid(
        "<h3>Machine</h3>" + kv_table(views.system_rows(result)),
        "<h3>This run</h3>" + kv_table(views.run_rows(result)),
    )
