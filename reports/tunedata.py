"""The numbers behind the tune report's figures, and the Optuna study rebuilt from its trials.

Like reports.plotdata for a profile: each function reads a saved TuneResult and returns a
small frozen dataclass of plain numbers, or None when there is nothing to draw; plots.py
draws them. The two figures Optuna draws itself (the optimisation history and the
parameter importances) take a study: :func:`study` rebuilds one in memory from the saved
trials alone, so the report needs neither the study's storage nor the process that ran it.
optuna is imported inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from loadtune.results import TuneResult

from .tuneviews import changed_text, is_free

__all__ = [
    "ABRounds",
    "ABTest",
    "GridCell",
    "ThroughputGrid",
    "ab_rounds",
    "importance_reason",
    "study",
    "study_params",
    "throughput_grid",
]

#: Settings that mean something only with worker processes (as in loadtune.config).
WORKER_ONLY = ("prefetch_factor", "persistent_workers")


@dataclass(frozen=True, slots=True)
class GridCell:
    """The trials of one (num_workers, prefetch_factor) pair.

    Attributes:
        workers: num_workers.
        prefetch: prefetch_factor (None with no workers: it does not apply).
        samples_per_s: The best complete trial's samples/s here, or None when none completed.
        state: ``"complete"`` when one completed, else the state of the last trial here.
        trials: The trial numbers measured here.
    """

    workers: int
    prefetch: int | None
    samples_per_s: float | None
    state: str
    trials: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ThroughputGrid:
    """Measured samples/s over num_workers x prefetch_factor.

    Attributes:
        workers: The columns: every num_workers measured, ascending.
        prefetch: The rows: every prefetch_factor measured, ascending, None (no workers)
            first when measured.
        cells: The pairs that were measured (the others were not).
        tuned: (num_workers, prefetch_factor) of the tuned config.
        incumbent: (num_workers, prefetch_factor) of the current config.
        others: The other settings that varied; a cell shows the best over them.
    """

    workers: tuple[int, ...]
    prefetch: tuple[int | None, ...]
    cells: tuple[GridCell, ...]
    tuned: tuple[int, int | None]
    incumbent: tuple[int, int | None]
    others: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def throughput_grid(result: TuneResult) -> ThroughputGrid | None:
    """Every trial placed by its num_workers and prefetch_factor (None without trials)."""
    if not result.trials:
        return None
    cells: dict[tuple[int, int | None], list[Any]] = {}
    for t in result.trials:
        key = (t.config.num_workers, t.config.prefetch_factor)
        cells.setdefault(key, []).append(t)
    out = []
    for (workers, prefetch), trials in cells.items():
        done = [t.samples_per_s for t in trials if t.state == "complete" and t.samples_per_s]
        out.append(
            GridCell(
                workers=workers,
                prefetch=prefetch,
                samples_per_s=max(done) if done else None,
                state="complete" if done else trials[-1].state,
                trials=tuple(t.number for t in trials),
            )
        )
    varying: dict[str, set[str]] = {}
    for t in result.trials:
        for k, v in t.config.to_dict().items():
            varying.setdefault(k, set()).add(repr(v))
    others = tuple(
        k for k, v in varying.items() if len(v) > 1 and k not in ("num_workers", "prefetch_factor")
    )
    prefetch = sorted({c.prefetch for c in out}, key=lambda p: -1 if p is None else p)
    return ThroughputGrid(
        workers=tuple(sorted({c.workers for c in out})),
        prefetch=tuple(prefetch),
        cells=tuple(sorted(out, key=lambda c: (c.workers, c.prefetch or 0))),
        tuned=(result.tuned.num_workers, result.tuned.prefetch_factor),
        incumbent=(result.incumbent.num_workers, result.incumbent.prefetch_factor),
        others=others,
    )


@dataclass(frozen=True, slots=True)
class ABTest:
    """One finalist's interleaved A/B test against the current settings.

    Attributes:
        label: The settings it changes.
        ratios: Each round's candidate/current samples/s.
        speedup: The median ratio.
        interval: The 95% interval of the speedup.
        chosen: Whether it is the tuned config.
    """

    label: str
    ratios: tuple[float, ...]
    speedup: float
    interval: tuple[float, float]
    chosen: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ABRounds:
    """Every finalist's A/B rounds.

    ``threshold`` is the speedup a candidate's interval had to clear (1 + min_gain), or
    None with a target rate, where its own interval of samples/s had to clear the rate.
    """

    tests: tuple[ABTest, ...]
    threshold: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ab_rounds(result: TuneResult) -> ABRounds | None:
    """The finalists' round ratios and intervals (None when no A/B test was made)."""
    finalists = result.finalists or ((result.ab,) if result.ab is not None else ())
    if not finalists:
        return None
    tests = tuple(
        ABTest(
            label=changed_text(ab.candidate, ab.incumbent),
            ratios=tuple(ab.ratios),
            speedup=ab.speedup,
            interval=(ab.interval[0], ab.interval[1]),
            chosen=result.verdict == "apply" and ab.candidate == result.tuned,
        )
        for ab in finalists
    )
    return ABRounds(tests, None if result.target_rate is not None else 1.0 + result.min_gain)


# --------------------------------------------------------------------------- the study


def _within(dim: dict[str, Any], value: Any) -> bool:
    if "choices" in dim:
        return value in dim["choices"]
    return isinstance(value, int) and dim["low"] <= value <= dim["high"]


def study_params(result: TuneResult, config: Any) -> dict[str, Any]:
    """The Optuna params of a trial's config, as the study had them.

    A param is a setting the space leaves free, holding a value inside the space (an
    incumbent outside it was measured as given, not suggested); prefetch_factor and
    persistent_workers are params only with workers.
    """
    values = config.to_dict()
    out = {}
    for name, dim in result.space.items():
        if name in WORKER_ONLY and not config.num_workers:
            continue
        if name in values and is_free(dim) and _within(dim, values[name]):
            out[name] = values[name]
    return out


def study(result: TuneResult) -> Any:
    """An in-memory Optuna study holding the saved trials, numbered as they were.

    Complete trials carry their samples/s as the value (direction: maximise); pruned and
    infeasible ones are PRUNED (as the search told them), failed ones FAIL. The numbers the
    search left out (suggestions it had measured already) are filled with FAIL trials, so
    the study's trial numbers are the result's.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution
    from optuna.trial import TrialState, create_trial

    dists: dict[str, Any] = {}
    for name, dim in result.space.items():
        if not is_free(dim):
            continue
        if "choices" in dim:
            dists[name] = CategoricalDistribution(list(dim["choices"]))
        else:
            dists[name] = IntDistribution(dim["low"], dim["high"], log=bool(dim.get("log")))
    states = {"complete": TrialState.COMPLETE, "failed": TrialState.FAIL}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        out = optuna.create_study(direction="maximize", study_name=result.study_name)
    finally:
        optuna.logging.set_verbosity(verbosity)
    number = 0
    for t in sorted(result.trials, key=lambda t: t.number):
        for _ in range(number, t.number):
            out.add_trial(create_trial(state=TrialState.FAIL))
        params = study_params(result, t.config)
        state = states.get(t.state, TrialState.PRUNED)
        if state == TrialState.COMPLETE and t.samples_per_s is None:
            state = TrialState.FAIL  # a value is what makes a trial complete in Optuna
        out.add_trial(
            create_trial(
                state=state,
                value=t.samples_per_s if state == TrialState.COMPLETE else None,
                params=params,
                distributions={k: dists[k] for k in params},
            )
        )
        number = t.number + 1
    return out


def importance_reason(result: TuneResult) -> str | None:
    """Why parameter importance cannot be computed from this study, or None when it can.

    It needs at least 2 complete trials, at least 2 settings that took more than one
    value among them (one alone would explain all the variation by definition), and
    throughputs that are not all the same.
    """
    done = [t for t in result.trials if t.state == "complete" and t.samples_per_s is not None]
    if len(done) < 2:
        return f"it needs at least 2 complete trials; this study has {len(done)}"
    seen: dict[str, set[str]] = {}
    for t in done:
        for k, v in study_params(result, t.config).items():
            seen.setdefault(k, set()).add(repr(v))
    free = [k for k, v in seen.items() if len(v) > 1]
    if not free:
        return "no setting took more than one value in the complete trials"
    if len(free) == 1:
        return (
            f"only {free[0]} took more than one value in the complete trials, so it would "
            "explain all of the difference by definition"
        )
    if len({t.samples_per_s for t in done}) == 1:
        return "every complete trial measured the same samples/s: there is nothing to explain"
    return None
