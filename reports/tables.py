"""The per-probe tables of a profile report: CPU, memory, I/O, NUMA, GPU and py-spy.

Like reports.views (which holds the summary), each function returns rows of plain strings
for the renderers to lay out, or an empty list when the probe has nothing to show (ask
``views.probe_reason`` why).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from loadtune.results import ProfileResult

from .views import fmt_bytes, fmt_cpus, fmt_pct, fmt_ratio, fmt_s, fmt_value, measured

__all__ = [
    "HotFunction",
    "cpu_rows",
    "gpu_rows",
    "hot_functions",
    "hot_groups",
    "io_rows",
    "memory_process_rows",
    "memory_rows",
    "numa_node_rows",
    "placement_rows",
    "pyspy_process_rows",
]


def cpu_rows(result: ProfileResult) -> list[tuple[str, str]]:
    """The cpu probe's summary, one labelled value per row."""
    cpu = measured(result, "cpu")
    if cpu is None:
        return []
    s, d = cpu.summary, cpu.detail
    labels = (
        ("main_cpu_pct", "main process (% of one core)"),
        ("main_cpu_wait_pct", "main process waiting for a CPU"),
        ("workers_cpu_pct", "all workers (% of one core)"),
        ("workers_cpu_per_worker_pct", "per worker, mean"),
        ("workers_cpu_wait_pct", "workers waiting for a CPU"),
        ("system_cpu_pct", "machine (% of all CPUs)"),
        ("cores", "usable cores"),
        ("load_avg_1m_peak", "peak load average (1 min)"),
        ("involuntary_ctx_switches", "involuntary context switches"),
    )
    rows = [(label, fmt_value(key, s[key])) for key, label in labels if key in s]
    if "per_cpu_pct" in d:
        rows.append(
            (
                "per CPU (min / mean / max)",
                f"{d['per_cpu_min_pct']:.0f}% / {d['per_cpu_mean_pct']:.0f}% / "
                f"{d['per_cpu_max_pct']:.0f}%",
            )
        )
    return rows


def memory_rows(result: ProfileResult) -> list[tuple[str, str]]:
    """The memory probe's summary: peaks, /dev/shm, available memory, copy-on-read."""
    memory = measured(result, "memory")
    if memory is None:
        return []
    s, d = memory.summary, memory.detail
    labels = (
        ("peak_total_rss_bytes", "peak RSS, all processes (shared pages counted twice)"),
        ("peak_total_pss_bytes", "peak PSS, all processes (shared pages split)"),
        ("peak_workers_uss_bytes", "peak USS, all workers (their own pages)"),
        ("peak_shm_used_bytes", "peak /dev/shm used"),
        ("shm_total_bytes", "/dev/shm size"),
        ("min_available_bytes", "lowest available memory"),
    )
    rows = [(label, fmt_value(key, s[key])) for key, label in labels if key in s]
    if "copy_on_read" in d:
        flagged = d.get("copy_on_read_workers") or []
        rows.append(
            (
                "copy-on-read growth",
                f"yes: {', '.join(flagged)}" if flagged else "none seen",
            )
        )
    if d.get("shm"):
        rows.append(("/dev/shm", str(d["shm"])))
    return rows


def memory_process_rows(result: ProfileResult) -> list[tuple[str, str, str, str, str]]:
    """(process, pid, peak RSS, peak USS, peak PSS) per process."""
    memory = measured(result, "memory")
    if memory is None:
        return []
    return [
        (
            str(row.get("role", "?")),
            str(row.get("pid")),
            fmt_bytes(row.get("peak_rss_bytes")),
            fmt_bytes(row.get("peak_uss_bytes")),
            fmt_bytes(row.get("peak_pss_bytes")),
        )
        for row in memory.detail.get("processes", [])
    ]


def io_rows(result: ProfileResult) -> list[tuple[str, str, str, str, str]]:
    """(process, read, device read, written, read ops) per process, from the io probe.

    "read" is what the process asked for through read() (page cache or disk); "device
    read" is what reached the block device.
    """
    io = measured(result, "io")
    if io is None:
        return []
    return [
        (
            str(row.get("role", "?")),
            fmt_bytes(row.get("read_bytes")),
            fmt_bytes(row.get("device_read_bytes")),
            fmt_bytes(row.get("write_bytes")),
            fmt_value("ops", row.get("read_ops")),
        )
        for row in io.detail.get("processes", [])
    ]


# --------------------------------------------------------------------------- numa, gpu


def numa_node_rows(result: ProfileResult) -> list[tuple[str, str, str, str]]:
    """(node, cpus, memory, free) per NUMA node of the numa probe's topology."""
    numa = measured(result, "numa")
    if numa is None:
        return []
    return [
        (
            str(n.get("id")),
            fmt_cpus(n.get("cpus")),
            fmt_bytes(n.get("mem_total_bytes")),
            fmt_bytes(n.get("mem_free_bytes")),
        )
        for n in (numa.detail.get("topology") or {}).get("nodes", [])
    ]


def placement_rows(result: ProfileResult) -> list[tuple[str, str, str, str, str]]:
    """(process, pid, allowed cpus, allowed nodes, ran on) per process.

    "ran on" gives each node's share of the samples that saw the process on a CPU.
    """
    numa = measured(result, "numa")
    if numa is None:
        return []
    rows = []
    for p in numa.detail.get("processes", []):
        shares = p.get("node_share") or {}
        ran = ", ".join(f"node {n} {fmt_pct(s)}" for n, s in shares.items()) or "not seen"
        if p.get("unmapped_share"):
            ran += f", unmapped {fmt_pct(p['unmapped_share'])}"
        nodes = ",".join(str(n) for n in p.get("affinity_nodes", ())) or "none"
        if p.get("affinity_changed"):
            nodes += " (changed)"
        rows.append(
            (
                str(p.get("role", "?")),
                str(p.get("pid")),
                fmt_cpus(p.get("affinity_cpus")),
                nodes,
                ran,
            )
        )
    return rows


def gpu_rows(result: ProfileResult) -> list[tuple[str, str]]:
    """The GPU transfer measurement: device, batch size, pageable and pinned copies, overlap."""
    gpu = measured(result, "gpu")
    if gpu is None:
        return []
    s, d = gpu.summary, gpu.detail
    rows = []
    if d.get("device"):
        rows.append(("device", f"{d['device']} (CUDA {d.get('cuda') or '?'})"))
    if "batch_bytes" in s:
        rows.append(("batch", fmt_bytes(s["batch_bytes"])))
    for kind in ("pageable", "pinned"):
        if f"{kind}_copy_s" in s:
            rows.append(
                (
                    f"{kind} copy",
                    f"{fmt_s(s[f'{kind}_copy_s'])} ({fmt_value('_gbps', s.get(f'{kind}_gbps'))})",
                )
            )
    if "pinned_speedup" in s:
        rows.append(("pinned speed-up", fmt_ratio(s["pinned_speedup"])))
    if "overlap_hidden_fraction" in s:
        rows.append(
            ("copy hidden behind compute", fmt_pct(s["overlap_hidden_fraction"]) + " (side stream)")
        )
    return rows


# --------------------------------------------------------------------------- py-spy


@dataclass(frozen=True, slots=True)
class HotFunction:
    """One function of py-spy's top list.

    Attributes:
        function: Its qualified name as py-spy reports it.
        file: The source file (absolute), or "" when py-spy had none (native frames).
        line: The line it is defined on, or None.
        samples: Samples it was in (as the leaf for "self", anywhere for "total").
        share: ``samples`` over the group's samples.
    """

    function: str
    file: str
    line: int | None
    samples: int
    share: float

    @property
    def where(self) -> str:
        """``pipeline.py:7``: the file's base name and the line."""
        if not self.file:
            return ""
        name = os.path.basename(self.file)
        return f"{name}:{self.line}" if self.line is not None else name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hot_functions(
    result: ProfileResult, group: str = "all", order: str = "self", limit: int = 10
) -> list[HotFunction]:
    """py-spy's top functions for a group of processes.

    Args:
        result: The profile.
        group: ``"all"``, ``"main"``, ``"workers"`` or one role (``"worker-0"``).
        order: ``"self"`` (the function itself was running) or ``"total"`` (it was on the
            stack).
        limit: At most this many rows.
    """
    pyspy = measured(result, "pyspy")
    if pyspy is None:
        return []
    ranked = (pyspy.detail.get("top") or {}).get(group) or {}
    return [
        HotFunction(
            function=str(row.get("function", "?")),
            file=str(row.get("file") or ""),
            line=row.get("line"),
            samples=int(row.get("samples", 0)),
            share=float(row.get("share", 0.0)),
        )
        for row in (ranked.get(order) or [])[:limit]
    ]


def hot_groups(result: ProfileResult) -> list[tuple[str, int]]:
    """(group, samples) for the groups py-spy ranked: all, main, workers, then each worker."""
    pyspy = measured(result, "pyspy")
    if pyspy is None:
        return []
    top = pyspy.detail.get("top") or {}
    workers = sorted(
        (g for g in top if g.startswith("worker-")),
        key=lambda g: int(g[7:]) if g[7:].isdigit() else 0,
    )
    order = ["all", "main", "workers", *workers]
    return [(g, int(top[g].get("samples", 0))) for g in order if g in top]


def pyspy_process_rows(result: ProfileResult) -> list[tuple[str, str, str, str]]:
    """(process, pid, status, samples) per recorded process; errors name what failed."""
    pyspy = measured(result, "pyspy")
    if pyspy is None:
        return []
    rows = []
    for row in pyspy.detail.get("processes", []):
        status = str(row.get("status", "?"))
        if row.get("error"):
            status += f": {row['error']}"
        samples = str(row.get("samples", "n/a"))
        if row.get("sample_errors"):
            samples += f" ({row['sample_errors']} dropped)"
        rows.append((str(row.get("role", "?")), str(row.get("pid")), status, samples))
    return rows
