"""Two profiles side by side: the Comparison "result" and what to say about it.

``loadtune compare A.json B.json`` builds a :class:`Comparison`; the renderers draw it like
any result (its ``kind`` is ``"compare"``): throughput, stall, time to first batch and each
stage of A and B, with the ratio B/A and whether it is better or worse.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from loadtune.results import ProfileResult

from .views import STAGES, fmt_bytes, fmt_pct, fmt_rate, fmt_ratio, fmt_s, fmt_value, measured

__all__ = [
    "CompareRow",
    "Comparison",
    "compare_headline",
    "compare_rows",
    "compare_sources",
]


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two profiles side by side: before (A) and after (B); rendered like a result.

    Attributes:
        before: Profile A.
        after: Profile B.
        before_name: How A is called in the report.
        after_name: How B is called.
        before_path: The file A was read from ("" when it was not read from a file).
        after_path: The file B was read from.
    """

    before: ProfileResult
    after: ProfileResult
    before_name: str = "A"
    after_name: str = "B"
    before_path: str = ""
    after_path: str = ""

    kind = "compare"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "before_name": self.before_name,
            "after_name": self.after_name,
            "before_path": self.before_path,
            "after_path": self.after_path,
        }


@dataclass(frozen=True, slots=True)
class CompareRow:
    """One line of a comparison: the metric, A, B, and B/A (None where it means nothing).

    Attributes:
        metric: What is compared.
        before: A's value, formatted.
        after: B's value, formatted.
        ratio: B / A, or None (text values, a zero or missing A).
        better: ``"higher"`` or ``"lower"`` when one direction is an improvement, else "".
    """

    metric: str
    before: str
    after: str
    ratio: float | None = None
    better: str = ""

    @property
    def ratio_text(self) -> str:
        return fmt_ratio(self.ratio) if self.ratio is not None else ""

    @property
    def verdict(self) -> str:
        """``"better"``, ``"worse"`` or "" (no ratio, no direction, or within 2%)."""
        if self.ratio is None or not self.better or abs(self.ratio - 1.0) < 0.02:
            return ""
        up = self.ratio > 1.0
        return "better" if up == (self.better == "higher") else "worse"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a == 0:
        return None
    return b / a


def _number_row(metric: str, a: float | None, b: float | None, fmt: Any, better: str) -> CompareRow:
    return CompareRow(metric, fmt(a), fmt(b), _ratio(a, b), better)


def compare_rows(c: Comparison) -> list[CompareRow]:
    """Throughput, stall, first batch, each stage's mean, CPU, memory, verdict, settings."""
    a, b = c.before, c.after
    ma, mb = a.measurement, b.measurement
    rows = [
        _number_row("samples/s", ma.samples_per_s, mb.samples_per_s, fmt_rate, "higher"),
        _number_row("batches/s", ma.batches_per_s, mb.batches_per_s, fmt_rate, "higher"),
        _number_row("data stall", ma.stall_fraction, mb.stall_fraction, fmt_pct, "lower"),
        _number_row(
            "time to first batch",
            ma.time_to_first_batch_s,
            mb.time_to_first_batch_s,
            fmt_s,
            "lower",
        ),
    ]
    sa, sb = measured(a, "stages"), measured(b, "stages")
    for stage in STAGES:
        key = f"{stage}_mean_s"
        va = sa.summary.get(key) if sa is not None else None
        vb = sb.summary.get(key) if sb is not None else None
        if va is not None or vb is not None:
            rows.append(_number_row(f"{stage} (mean)", va, vb, fmt_s, "lower"))
    for probe, key, label, fmt in (
        ("cpu", "workers_cpu_pct", "workers' CPU", lambda v: fmt_value("_pct", v)),
        ("cpu", "main_cpu_pct", "main process CPU", lambda v: fmt_value("_pct", v)),
        ("memory", "peak_total_pss_bytes", "peak memory (PSS)", fmt_bytes),
    ):
        pa, pb = measured(a, probe), measured(b, probe)
        va = pa.summary.get(key) if pa is not None else None
        vb = pb.summary.get(key) if pb is not None else None
        if va is not None or vb is not None:
            rows.append(_number_row(label, va, vb, fmt, ""))
    da, db = a.diagnosis, b.diagnosis
    rows.append(
        CompareRow(
            "bottleneck",
            da.bottleneck if da is not None else "n/a",
            db.bottleneck if db is not None else "n/a",
        )
    )
    for key in ("num_workers", "prefetch_factor", "batch_size", "pin_memory"):
        va, vb = getattr(a.config, key), getattr(b.config, key)
        rows.append(CompareRow(key, str(va), str(vb)))
    if a.backend != b.backend:
        rows.append(CompareRow("backend", a.backend, b.backend))
    return rows


def compare_sources(c: Comparison) -> list[tuple[str, str]]:
    """(name, "file: target") for A and B."""
    return [
        (name, f"{path}: {r.target}" if path else r.target)
        for name, path, r in (
            (c.before_name, c.before_path, c.before),
            (c.after_name, c.after_path, c.after),
        )
    ]


def compare_headline(c: Comparison) -> str:
    """One sentence: B's throughput against A's, and the stall of each."""
    ma, mb = c.before.measurement, c.after.measurement
    ratio = _ratio(ma.samples_per_s, mb.samples_per_s)
    return (
        f"{c.after_name} runs at {fmt_ratio(ratio)} the throughput of {c.before_name} "
        f"({fmt_rate(ma.samples_per_s)} -> {fmt_rate(mb.samples_per_s)} samples/s); "
        f"data stall {fmt_pct(ma.stall_fraction)} -> {fmt_pct(mb.stall_fraction)}"
    )
