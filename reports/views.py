"""What every renderer shows about a result: rows and sentences, independent of looks."""

from __future__ import annotations

from typing import Any

from loadtune.results import ProfileResult

__all__ = ["fmt_bytes", "fmt_rate", "fmt_s", "profile_headline", "stage_rows", "worker_rows"]


def fmt_rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def fmt_s(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.1f} ms"
    return f"{x * 1e6:.0f} µs"


def fmt_bytes(x: float | None) -> str:
    if x is None:
        return "n/a"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(x) >= size:
            return f"{x / size:.1f} {unit}"
    return f"{x:.0f} B"


def profile_headline(result: ProfileResult) -> list[tuple[str, str]]:
    """The summary: throughput, stall, time to first batch, config, verdict."""
    m, c = result.measurement, result.config
    rows = [
        ("target", result.target),
        (
            "config",
            f"{result.backend} DataLoader, batch_size={c.batch_size}, num_workers={c.num_workers}, "
            f"prefetch_factor={c.prefetch_factor}, pin_memory={c.pin_memory}",
        ),
        (
            "throughput",
            f"{fmt_rate(m.samples_per_s)} samples/s, {fmt_rate(m.batches_per_s)} batches/s "
            f"({m.window_batches} batches after {m.warmup_batches} warm-up)",
        ),
        ("data stall", f"{m.stall_fraction:.0%} of the time the consumer waited for data"),
        ("first batch", fmt_s(m.time_to_first_batch_s)),
    ]
    if result.step:
        rows.append(("training step", result.step))
    d = result.diagnosis
    if d is not None:
        rows.append(("bottleneck", f"{d.bottleneck}: {d.explanation}"))
        if d.runner_up:
            rows.append(("runner-up", f"{d.runner_up}: {d.runner_up_explanation}"))
        if d.recommendations:
            rows.append(("do this", d.recommendations[0]))
    return rows


_STAGES = ("wait", "queue", "fetch", "collate", "pack", "transport", "unpack")


def stage_rows(result: ProfileResult) -> list[tuple[str, str, str, str]]:
    """(stage, mean, median, p95) per stage, from the stages probe."""
    stages = result.probes.get("stages")
    if stages is None or not stages.available:
        return []
    s = stages.summary
    rows = []
    for name in _STAGES:
        if f"{name}_mean_s" in s:
            rows.append(
                (
                    name,
                    fmt_s(s.get(f"{name}_mean_s")),
                    fmt_s(s.get(f"{name}_median_s")),
                    fmt_s(s.get(f"{name}_p95_s")),
                )
            )
    return rows


def worker_rows(result: ProfileResult) -> list[tuple[str, ...]]:
    """(process, pid, cpu %, busy, memory) per process, from the cpu/stages/memory probes."""
    cpu = result.probes.get("cpu")
    if cpu is None or not cpu.available:
        return []
    memory = result.probes.get("memory")
    mem_rows: dict[Any, Any] = {}
    if memory is not None and memory.available:
        for row in memory.detail.get("processes", []):
            mem_rows[row.get("pid")] = row
    stages = result.probes.get("stages")
    idle: dict[str, float] = {}
    if stages is not None and stages.available:
        for row in stages.detail.get("workers") or []:
            idle[f"worker-{row['worker_id']}"] = row.get("idle_fraction")
    rows = []
    for row in cpu.detail.get("processes", []):
        role, pid = row.get("role", "?"), row.get("pid")
        pct = row.get("cpu_pct")
        busy = idle.get(role)
        mem = mem_rows.get(pid, {})
        rss = mem.get("peak_uss_bytes") or mem.get("peak_rss_bytes")
        rows.append(
            (
                str(role),
                str(pid),
                "n/a" if pct is None else f"{pct:.0f}%",
                "n/a" if busy is None else f"{1 - busy:.0%}",
                fmt_bytes(rss),
            )
        )
    return rows
