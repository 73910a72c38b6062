"""What autotune hands over: the tuned config file and a Python snippet that builds it."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import LoaderConfig, python_snippet
from ..config import write as write_config
from ..results import TuneResult


def _searched(result: TuneResult, name: str) -> bool:
    """Whether the study searched a setting (in the space, with more than one value)."""
    dim = result.space.get(name)
    if not dim:
        return False
    if "choices" in dim:
        return len(dim["choices"]) > 1
    return dim.get("low") != dim.get("high")


def _tuned(result: TuneResult) -> LoaderConfig:
    """The tuned config as it is handed over: fetch_concurrency only when it was tuned, so
    that applying the file leaves a loader's own value alone otherwise."""
    if _searched(result, "fetch_concurrency"):
        return result.tuned
    return replace(result.tuned, fetch_concurrency=None)


def _machine_line(result: TuneResult) -> str:
    m = result.machine
    gpu = ", ".join(m.cuda_devices) if m.cuda_available else "no GPU"
    return (
        f"{m.usable_cores} cores usable, {m.memory_total / 2**30:.1f} GiB, {gpu}, torch {m.torch}"
    )


def write_tuned(result: TuneResult, path: str | os.PathLike) -> Path:
    """Write the tuned config (``loadtune.apply`` reads it) with a ``measurement`` section.

    ``fetch_concurrency`` is written when the study tuned it (loadtune's DataLoader).

    Args:
        result: What autotune decided.
        path: The file: TOML for a ``.toml`` suffix, JSON otherwise; written atomically.

    Returns:
        The path written.

    Example:
        >>> # write_tuned(result, "tuned.toml"); loader = loadtune.apply("tuned.toml", loader)
    """
    ab = result.ab
    inc = result.incumbent_trial
    measurement: dict[str, Any] = {
        "verdict": result.verdict,
        "reason": result.reason,
        "target": result.target,
        "incumbent_samples_per_s": ab.incumbent_rate if ab else inc.samples_per_s if inc else None,
        "tuned_samples_per_s": (
            ab.candidate_rate
            if ab and result.verdict == "apply"
            else ab.incumbent_rate
            if ab
            else inc.samples_per_s
            if inc
            else None
        ),
        "speedup": ab.speedup if ab and result.verdict == "apply" else 1.0,
        "interval_low": ab.interval[0] if ab else None,
        "interval_high": ab.interval[1] if ab else None,
        "interval_method": ab.method if ab else None,
        "ab_rounds": ab.rounds if ab else None,
        "min_gain": result.min_gain,
        "target_rate": result.target_rate,
        "trials": len(result.trials),
        "machine": _machine_line(result),
        "study": result.study_name,
        "created": result.created,
    }
    p = Path(path)
    write_config(_tuned(result), p, {"measurement": measurement})
    return p


def snippet(result: TuneResult, config_path: str | None = None) -> str:
    """Python that builds a loader with the tuned settings (and the ``apply`` one-liner).

    Args:
        result: What autotune decided.
        config_path: The tuned config file, for the ``loadtune.apply`` line.

    Returns:
        The code, ending in a newline.

    Example:
        >>> # print(snippet(result, "tuned.json"))
    """
    return python_snippet(_tuned(result), result.backend, config_path)
