"""What every renderer says about a result: rows and sentences, independent of looks.

Each function reads a saved result and returns plain strings (rows of a table, a sentence,
a number already formatted), so that the terminal and the HTML renderer say the same thing
and a test can check what is said without parsing either. The per-probe tables are in
``reports.tables``, the numbers for figures in ``reports.plotdata``, a comparison of two
profiles in ``reports.compare``; how anything looks is the renderers' business.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from loadtune.results import ProfileResult, TuneResult
from probes.base import ProbeResult

__all__ = [
    "BOTTLENECK_TITLES",
    "Card",
    "STAGES",
    "STAGE_HELP",
    "bottleneck_title",
    "cache_line",
    "evidence_rows",
    "fmt_bytes",
    "fmt_cpus",
    "fmt_pct",
    "fmt_rate",
    "fmt_ratio",
    "fmt_s",
    "fmt_value",
    "measured",
    "model_rows",
    "pool_rows",
    "probe_reason",
    "profile_headline",
    "resource_rows",
    "run_rows",
    "stage_rows",
    "summary_cards",
    "system_rows",
    "unavailable",
    "worker_rows",
]

# --------------------------------------------------------------------------- formatting


def fmt_rate(x: float | None) -> str:
    """A rate without its unit: ``1,502`` at 100 and above, ``93.9`` below."""
    return "n/a" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def fmt_s(x: float | None) -> str:
    """Seconds in the unit that reads best: ``2.50 s``, ``12.2 ms``, ``181 µs``."""
    if x is None:
        return "n/a"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.1f} ms"
    return f"{x * 1e6:.0f} µs"


def fmt_bytes(x: float | None) -> str:
    """Bytes in binary units: ``9.0 MiB``."""
    if x is None:
        return "n/a"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(x) >= size:
            return f"{x / size:.1f} {unit}"
    return f"{x:.0f} B"


def fmt_pct(fraction: float | None) -> str:
    """A fraction as a percentage: ``0.69`` -> ``69%``; below 1% one decimal is kept."""
    if fraction is None:
        return "n/a"
    if fraction == 0 or abs(fraction) >= 0.01:
        return f"{fraction:.0%}"
    return f"{fraction:.1%}"


def fmt_ratio(ratio: float | None) -> str:
    """A ratio B/A: ``1.58x``."""
    if ratio is None:
        return "n/a"
    return f"{ratio:.2f}x" if ratio < 100 else f"{ratio:,.0f}x"


def fmt_value(key: str, value: Any) -> str:
    """A named number, formatted by the unit its name ends with (``_s``, ``_bytes``, ...)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if key.endswith("_bytes_per_s"):
        return f"{fmt_bytes(value)}/s"
    if key.endswith("_per_s"):
        return f"{fmt_rate(value)}/s"
    if key.endswith("_bytes"):
        return fmt_bytes(value)
    if key.endswith(("_fraction", "_share")):
        return fmt_pct(value)
    if key.endswith("_pct"):
        return f"{value:.0f}%"
    if key.endswith("_gbps"):
        return f"{value:.2f} GB/s"
    if key.endswith(("_s", "_s_per_batch")):
        return fmt_s(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.3g}"


def _label(key: str) -> str:
    """``worker_busy_fraction`` -> ``worker busy fraction``."""
    return key.replace("_", " ")


# --------------------------------------------------------------------------- probes


def measured(result: ProfileResult, name: str) -> ProbeResult | None:
    """The probe's result when it ran and measured, else None."""
    found = result.probes.get(name)
    return found if found is not None and found.available else None


def probe_reason(result: ProfileResult, name: str) -> str | None:
    """Why a probe has nothing to show, or None when it measured.

    A probe missing from the result was not run (``--probes`` left it out); an
    unavailable one says why itself.
    """
    found = result.probes.get(name)
    if found is None:
        return "this probe was not run (it was left out of --probes)"
    if not found.available:
        return found.reason or "the probe did not say why"
    return None


def unavailable(result: ProfileResult) -> list[tuple[str, str]]:
    """(probe, reason) for every probe that ran but could not measure."""
    return [(p.name, p.reason) for p in result.probes.values() if not p.available]


# --------------------------------------------------------------------------- summary

BOTTLENECK_TITLES = {
    "io_latency": "I/O latency",
    "io_bandwidth": "I/O bandwidth",
    "worker_cpu": "worker CPU",
    "ipc_transfer": "moving batches between processes",
    "main_process": "the main process",
    "gpu_transfer": "GPU transfer",
    "memory": "memory",
    "consumer": "the training step (data keeps up)",
}


def bottleneck_title(name: str) -> str:
    """A bottleneck's name for people: ``io_latency`` -> ``I/O latency``."""
    return BOTTLENECK_TITLES.get(name, name)


def _config_text(result: ProfileResult) -> str:
    c = result.config
    return (
        f"{result.backend} DataLoader, batch_size={c.batch_size}, num_workers={c.num_workers}, "
        f"prefetch_factor={c.prefetch_factor}, pin_memory={c.pin_memory}"
    )


def profile_headline(result: ProfileResult) -> list[tuple[str, str]]:
    """The summary: target, config, throughput, stall, time to first batch, verdict."""
    m = result.measurement
    rows = [
        ("target", result.target),
        ("config", _config_text(result)),
        (
            "throughput",
            f"{fmt_rate(m.samples_per_s)} samples/s, {fmt_rate(m.batches_per_s)} batches/s "
            f"({m.window_batches} batches after {m.warmup_batches} warm-up)",
        ),
        ("data stall", f"{fmt_pct(m.stall_fraction)} of the time the consumer waited for data"),
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


@dataclass(frozen=True, slots=True)
class Card:
    """One headline number: what it is, its value, a sentence, and how it reads.

    Attributes:
        label: What the number is ("throughput").
        value: The number with its unit.
        note: One sentence of context.
        level: ``"ok"``, ``"warn"``, ``"bad"`` or ``""`` (no judgement).
    """

    label: str
    value: str
    note: str = ""
    level: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stall_level(stall: float) -> str:
    # Below 10% the loader keeps up (the threshold diagnose uses); above half, the
    # accelerator would sit idle most of the time.
    return "ok" if stall < 0.10 else "warn" if stall < 0.5 else "bad"


def summary_cards(result: ProfileResult) -> list[Card]:
    """Throughput, data stall, time to first batch and the verdict, as cards."""
    m = result.measurement
    overall = (
        f"; {fmt_rate(m.overall_samples_per_s)}/s including start-up"
        if m.overall_samples_per_s is not None
        else ""
    )
    cards = [
        Card(
            "throughput",
            f"{fmt_rate(m.samples_per_s)} samples/s",
            f"{fmt_rate(m.batches_per_s)} batches/s over {m.window_batches} batches{overall}",
        ),
        Card(
            "data stall",
            fmt_pct(m.stall_fraction),
            "of the window the training loop waited for data",
            _stall_level(m.stall_fraction),
        ),
        Card(
            "time to first batch",
            fmt_s(m.time_to_first_batch_s),
            "from iter(loader) to the first batch (worker start-up)",
        ),
    ]
    d = result.diagnosis
    if d is not None:
        level = "ok" if d.bottleneck == "consumer" else "bad"
        cards.append(Card("bottleneck", bottleneck_title(d.bottleneck), d.explanation, level))
    else:
        cards.append(Card("bottleneck", "not diagnosed", "the result holds no diagnosis"))
    return cards


def evidence_rows(result: ProfileResult) -> list[tuple[str, str]]:
    """(name, value) for each number the verdict rests on, the rule's score last."""
    d = result.diagnosis
    if d is None:
        return []
    items = sorted(d.evidence.items(), key=lambda kv: kv[0] == "score")
    return [(_label(k), fmt_value(k, v)) for k, v in items]


_MODEL_LABELS = {
    "worker_s_per_batch": "a worker's time per batch (D_w)",
    "worker_cpu_share": "share of it on a CPU (u)",
    "serial_s_per_batch": "main process's serial time per batch (D_s)",
    "main_cpu_s_per_batch": "main process's CPU time per batch",
    "cores": "usable cores (K)",
}


def model_rows(result: ProfileResult) -> list[tuple[str, str]]:
    """The throughput model's measured inputs (NOTE [ Throughput model ] in diagnose.py)."""
    d = result.diagnosis
    if d is None:
        return []
    return [(_MODEL_LABELS.get(k, _label(k)), fmt_value(k, v)) for k, v in d.model.items()]


def run_rows(result: ProfileResult) -> list[tuple[str, str]]:
    """How the measurement was taken: target, loader, window, step, when, files written."""
    m = result.measurement
    rows = [
        ("target", result.target),
        ("loader", _config_text(result)),
        (
            "window",
            f"{m.window_batches} batches after {m.warmup_batches} warm-up, "
            f"{m.repeats} repeat{'s' if m.repeats != 1 else ''}",
        ),
        ("training step", result.step or "none (batches are taken as fast as they come)"),
    ]
    if result.created:
        rows.append(("taken", result.created))
    for kind, path in result.artifacts.items():
        rows.append((f"{kind} file", path))
    return rows


def system_rows(result: ProfileResult | TuneResult) -> list[tuple[str, str]]:
    """The machine: CPU, cores, memory, /dev/shm, NUMA nodes, Python, torch, CUDA."""
    s = result.machine
    nodes = (
        f"{len(s.numa_nodes)}: "
        + "; ".join(f"node {n.id} cpus {fmt_cpus(n.cpus)}" for n in s.numa_nodes)
        if s.numa_nodes
        else "not reported by this system"
    )
    return [
        ("cpu", s.cpu_model),
        (
            "cores",
            f"{s.logical_cores} logical, {s.physical_cores or '?'} physical, "
            f"{s.usable_cores} usable",
        ),
        (
            "memory",
            f"{fmt_bytes(s.memory_total)} total, {fmt_bytes(s.memory_available)} available",
        ),
        ("/dev/shm", f"{fmt_bytes(s.shm_total)} total, {fmt_bytes(s.shm_free)} free"),
        ("numa nodes", nodes),
        ("python", s.python),
        ("platform", s.platform),
        ("torch", s.torch),
        (
            "cuda",
            "available: " + ", ".join(s.cuda_devices)
            if s.cuda_available
            else f"not available: {s.cuda_reason}",
        ),
    ]


def fmt_cpus(cpus: Any) -> str:
    """CPUs in the sysfs notation: ``[0, 1, 2, 5]`` -> ``0-2,5``."""
    values = sorted(int(c) for c in cpus or ())
    parts: list[str] = []
    start = prev = None
    for c in values:
        if prev is not None and c == prev + 1:
            prev = c
            continue
        if start is not None:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
        start = prev = c
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(parts) or "none"


# --------------------------------------------------------------------------- stages

STAGES = ("wait", "queue", "fetch", "collate", "pack", "transport", "unpack")

STAGE_HELP = {
    "wait": "the training loop blocked in next(): the data stall",
    "queue": "dispatch until a worker started on it",
    "fetch": "the dataset's __getitem__ for every sample",
    "collate": "collate_fn",
    "pack": "the worker writing the batch into shared memory",
    "transport": "end of collate until usable in the main process (includes time queued)",
    "unpack": "the main process turning it back into tensors",
}


def stage_rows(result: ProfileResult) -> list[tuple[str, str, str, str]]:
    """(stage, mean, median, p95) per stage, from the stages probe."""
    stages = measured(result, "stages")
    if stages is None:
        return []
    s = stages.summary
    return [
        (
            name,
            fmt_s(s.get(f"{name}_mean_s")),
            fmt_s(s.get(f"{name}_median_s")),
            fmt_s(s.get(f"{name}_p95_s")),
        )
        for name in STAGES
        if f"{name}_mean_s" in s
    ]


# --------------------------------------------------------------------------- processes


def worker_rows(result: ProfileResult) -> list[tuple[str, ...]]:
    """(process, pid, cpu %, cpu wait %, busy, memory) per process.

    CPU and CPU wait (runnable without a CPU) are in % of one core, from the cpu probe;
    busy is the share of the window a worker spent on its batches, from the stages probe;
    memory is the process's peak USS (its own pages), else its peak RSS.
    """
    cpu = measured(result, "cpu")
    if cpu is None:
        return []
    memory = measured(result, "memory")
    mem_rows: dict[Any, Any] = {}
    if memory is not None:
        for row in memory.detail.get("processes", []):
            mem_rows[row.get("pid")] = row
    stages = measured(result, "stages")
    idle: dict[str, float] = {}
    if stages is not None:
        for row in stages.detail.get("workers") or []:
            idle[f"worker-{row['worker_id']}"] = row.get("idle_fraction")
    rows = []
    for row in cpu.detail.get("processes", []):
        role, pid = row.get("role", "?"), row.get("pid")
        pct, wait = row.get("cpu_pct"), row.get("cpu_wait_pct")
        busy = idle.get(role)
        mem = mem_rows.get(pid, {})
        rss = mem.get("peak_uss_bytes") or mem.get("peak_rss_bytes")
        rows.append(
            (
                str(role),
                str(pid),
                "n/a" if pct is None else f"{pct:.0f}%",
                "n/a" if wait is None else f"{wait:.0f}%",
                "n/a" if busy is None else fmt_pct(1 - busy),
                fmt_bytes(rss),
            )
        )
    return rows


def pool_rows(result: ProfileResult) -> list[tuple[str, str, str, str]]:
    """(time, from, to, why) per change of the worker pool's size (``num_workers="auto"``).

    Time is in seconds since the measured window opened (negative: during the warm-up).
    Empty when the pool kept its size or the loader does not record changes.
    """
    stages = measured(result, "stages")
    if stages is None:
        return []
    return [
        (f"{float(c['time_s']):.2f} s", str(c["from"]), str(c["to"]), str(c.get("reason", "")))
        for c in stages.detail.get("worker_history") or ()
    ]


def cache_line(result: ProfileResult) -> str | None:
    """The sample cache's hit rate and size in one line, or None without a cache probe.

    ``93.1% hits (1,234 of 1,325), 512.0 MiB held of 1.0 GiB``: lookups over the window,
    the bytes held at its end.
    """
    cache = measured(result, "cache")
    if cache is None:
        return None
    s = cache.summary
    hits, misses = int(s.get("hits", 0)), int(s.get("misses", 0))
    if hits + misses == 0:
        text = "no lookups in the window"
    else:
        pct = s.get("hit_rate_pct", 100.0 * hits / (hits + misses))
        text = f"{pct:.1f}% hits ({hits:,} of {hits + misses:,})"
    if "bytes_held" in s:
        limit = s.get("max_bytes")
        text += f", {fmt_bytes(s['bytes_held'])} held" + (
            f" of {fmt_bytes(limit)}" if limit else ""
        )
    return text


def resource_rows(result: ProfileResult) -> list[tuple[str, str]]:
    """The resource figures in a few lines: peak memory, /dev/shm, the sample cache, CPU, I/O."""
    rows: list[tuple[str, str]] = []
    memory = measured(result, "memory")
    if memory is not None:
        s = memory.summary
        parts = [f"{fmt_bytes(s.get('peak_total_rss_bytes'))} RSS"]
        if "peak_total_pss_bytes" in s:
            parts.append(f"{fmt_bytes(s['peak_total_pss_bytes'])} PSS")
        text = ", ".join(parts) + " (all processes)"
        if "peak_workers_uss_bytes" in s:
            text += f"; workers' own {fmt_bytes(s['peak_workers_uss_bytes'])}"
        rows.append(("peak memory", text))
        if "peak_shm_used_bytes" in s:
            of = f" of {fmt_bytes(s['shm_total_bytes'])}" if "shm_total_bytes" in s else ""
            rows.append(("/dev/shm", f"{fmt_bytes(s['peak_shm_used_bytes'])} used at peak{of}"))
        flagged = memory.detail.get("copy_on_read_workers") or []
        if flagged:
            rows.append(("copy-on-read", f"memory grows steadily in {', '.join(flagged)}"))
    cache = cache_line(result)
    if cache is not None:
        rows.append(("sample cache", cache))
    cpu = measured(result, "cpu")
    if cpu is not None:
        s = cpu.summary
        parts = []
        if "main_cpu_pct" in s:
            parts.append(f"main {s['main_cpu_pct']:.0f}%")
        if "workers_cpu_pct" in s:
            parts.append(f"workers {s['workers_cpu_pct']:.0f}%")
        text = ", ".join(parts) + " of one core" if parts else ""
        if "system_cpu_pct" in s:
            cores = f" of {s['cores']:.0f} cores" if "cores" in s else ""
            text += f"{'; ' if text else ''}machine {s['system_cpu_pct']:.0f}%{cores}"
        if text:
            rows.append(("cpu", text))
        waits = [
            f"{who} {s[key]:.0f}%"
            for who, key in (("main", "main_cpu_wait_pct"), ("workers", "workers_cpu_wait_pct"))
            if key in s
        ]
        if waits:
            rows.append(("waiting for a cpu", ", ".join(waits)))
    io = measured(result, "io")
    if io is not None:
        s = io.summary
        parts = []
        if "workers_read_bytes_per_s" in s:
            parts.append(f"workers read {fmt_bytes(s['workers_read_bytes_per_s'])}/s")
        if "iowait_pct" in s:
            parts.append(f"iowait {s['iowait_pct']:.0f}%")
        if parts:
            rows.append(("i/o", ", ".join(parts)))
    return rows
