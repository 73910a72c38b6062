"""What every renderer says about a tuning study (a TuneResult): rows, sentences, the snippet.

Like reports.views for a profile: each function reads the saved TuneResult and returns
plain strings, so the terminal and the HTML page say the same thing and a test can check
what is said without parsing either. The numbers behind the tune page's figures are in
``reports.tunedata``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from loadtune.config import python_snippet
from loadtune.results import TRIAL_STATES, ABResult, TuneResult

from .views import Card, fmt_bytes, fmt_rate, fmt_ratio, fmt_s

if TYPE_CHECKING:
    from loadtune.config import LoaderConfig

__all__ = [
    "SHORT_NAMES",
    "TrialRow",
    "changed_text",
    "config_text",
    "finalist_rows",
    "is_free",
    "round_rows",
    "searched",
    "snippet",
    "space_rows",
    "trial_notes",
    "trial_rows",
    "tune_cards",
    "tune_headline",
    "tune_run_rows",
    "tuned_rates",
    "varying_settings",
    "verdict_text",
]

#: Narrow column headings for the settings (the terminal has 80 columns).
SHORT_NAMES = {
    "num_workers": "workers",
    "prefetch_factor": "prefetch",
    "persistent_workers": "persist",
    "pin_memory": "pin",
    "batch_size": "batch",
    "fetch_concurrency": "fetch",
}


def is_free(dim: Any) -> bool:
    """Whether a setting of a saved search space could take more than one value."""
    if not isinstance(dim, dict):
        return False
    if "choices" in dim:
        return len(dim["choices"]) > 1
    return dim.get("low") != dim.get("high")


def searched(result: TuneResult, name: str) -> bool:
    """Whether the study searched a setting (in its space, with more than one value)."""
    return is_free(result.space.get(name))


def config_text(config: LoaderConfig) -> str:
    """Every setting: ``num_workers=2, prefetch_factor=2, batch_size=4, ...``."""
    return ", ".join(f"{k}={v}" for k, v in config.to_dict().items())


def changed_text(config: LoaderConfig, incumbent: LoaderConfig) -> str:
    """The settings that differ from the incumbent's (``num_workers=3, prefetch_factor=1``)."""
    base = incumbent.to_dict()
    changed = [f"{k}={v}" for k, v in config.to_dict().items() if base.get(k) != v]
    return ", ".join(changed) or "the same settings"


def varying_settings(result: TuneResult) -> list[str]:
    """The settings that took more than one value among the trials, in the config's order."""
    seen: dict[str, set[str]] = {}
    for t in result.trials:
        for k, v in t.config.to_dict().items():
            seen.setdefault(k, set()).add(repr(v))
    return [k for k, values in seen.items() if len(values) > 1]


def verdict_text(result: TuneResult) -> str:
    """The verdict in a few words: what to do."""
    if result.verdict == "apply":
        return f"apply: use {changed_text(result.tuned, result.incumbent)}"
    return "keep: your current settings stay"


def tuned_rates(result: TuneResult) -> tuple[float | None, float | None]:
    """(current, tuned) samples/s: the A/B medians, else the search's trials.

    On "keep" the tuned config is the incumbent, so both are the incumbent's rate.
    """
    ab = result.ab
    if ab is not None:
        current = ab.incumbent_rate
        return current, ab.candidate_rate if result.verdict == "apply" else current
    inc = result.incumbent_trial
    current = inc.samples_per_s if inc is not None else None
    if result.verdict == "keep":
        return current, current
    tuned = next(
        (t for t in result.trials if t.config == result.tuned and t.state == "complete"), None
    )
    return current, tuned.samples_per_s if tuned is not None else None


def _ab_detail(ab: ABResult) -> str:
    """The interval, the rounds and the bar the candidate had to clear."""
    low, high = ab.interval
    text = (
        f"95% interval {fmt_ratio(low)} to {fmt_ratio(high)} "
        f"over {ab.rounds} interleaved round{'s' if ab.rounds != 1 else ''}"
    )
    if ab.target_rate is not None and ab.candidate_interval is not None:
        clow, chigh = ab.candidate_interval
        return text + (
            f"; candidate {fmt_rate(clow)} to {fmt_rate(chigh)} samples/s "
            f"(target {fmt_rate(ab.target_rate)})"
        )
    return text + f" (a change needs above {fmt_ratio(1 + ab.min_gain)})"


def _counts(result: TuneResult) -> str:
    states = [t.state for t in result.trials]
    order = [s for s in TRIAL_STATES if s in states] + sorted(set(states) - set(TRIAL_STATES))
    return ", ".join(f"{states.count(s)} {s}" for s in order) or "none"


def tune_headline(result: TuneResult) -> list[tuple[str, str]]:
    """The summary: target, verdict and why, current and tuned samples/s, the A/B, the search."""
    current, tuned = tuned_rates(result)
    rows = [
        ("target", result.target),
        ("verdict", verdict_text(result)),
        ("why", result.reason or "the result does not say"),
        ("current", f"{fmt_rate(current)} samples/s: {config_text(result.incumbent)}"),
        ("tuned", f"{fmt_rate(tuned)} samples/s: {changed_text(result.tuned, result.incumbent)}"),
    ]
    if result.ab is not None:
        rows.append(("A/B", f"{fmt_ratio(result.ab.speedup)}, {_ab_detail(result.ab)}"))
    else:
        rows.append(("A/B", "none: no finalist could be compared with the current settings"))
    rows.append(
        (
            "search",
            f"{len(result.trials)} trials ({_counts(result)}) in {fmt_s(result.duration_s)}; "
            f"stopped: {result.stopped or 'not recorded'}",
        )
    )
    if result.step:
        rows.append(("training step", result.step))
    return rows


def tune_cards(result: TuneResult) -> list[Card]:
    """The verdict, current and tuned samples/s, the speedup and the search, as cards."""
    current, tuned = tuned_rates(result)
    ab = result.ab
    if ab is not None:
        speedup = Card(
            "A/B speedup",
            fmt_ratio(ab.speedup),
            _ab_detail(ab),
            "ok" if ab.verdict == "apply" else "",
        )
    else:
        speedup = Card("A/B speedup", "n/a", "no finalist could be compared")
    return [
        Card(
            "verdict",
            result.verdict,
            verdict_text(result),
            "ok" if result.verdict == "apply" else "",
        ),
        Card("current", f"{fmt_rate(current)} samples/s", config_text(result.incumbent)),
        Card(
            "tuned",
            f"{fmt_rate(tuned)} samples/s",
            changed_text(result.tuned, result.incumbent),
            "ok" if result.verdict == "apply" else "",
        ),
        speedup,
        Card(
            "search",
            f"{len(result.trials)} trials",
            f"{_counts(result)}; {fmt_s(result.duration_s)}; "
            f"stopped: {result.stopped or 'not recorded'}",
        ),
    ]


@dataclass(frozen=True, slots=True)
class TrialRow:
    """One trial as the tables show it.

    Attributes:
        number: The Optuna trial number.
        settings: The values of ``varying_settings``, formatted ("-" where one does not
            apply: prefetch_factor with no workers).
        state: complete, pruned, failed or infeasible.
        samples_per_s: Formatted ("n/a" for a failed trial).
        memory: The loader's peak memory, formatted ("n/a" where it was not read).
        duration: The trial's wall time, formatted.
        source: Why it was measured (incumbent, model, sampler, ...).
        reason: Why it was pruned, failed or infeasible ("" when complete).
        role: ``"tuned"``, ``"incumbent"`` or "": the row of the config chosen or kept.
    """

    number: int
    settings: tuple[str, ...]
    state: str
    samples_per_s: str
    memory: str
    duration: str
    source: str
    reason: str
    role: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _setting(config: LoaderConfig, name: str) -> str:
    value = config.to_dict().get(name)
    return "-" if value is None else str(value)


def trial_rows(result: TuneResult) -> list[TrialRow]:
    """Every trial in trial order, its varying settings in the order of ``varying_settings``."""
    names = varying_settings(result)
    rows = []
    for t in result.trials:
        role = ""
        if t.state == "complete" and t.config == result.tuned:
            role = "tuned"
        elif t.state == "complete" and t.config == result.incumbent:
            role = "incumbent"
        rows.append(
            TrialRow(
                number=t.number,
                settings=tuple(_setting(t.config, n) for n in names),
                state=t.state,
                samples_per_s=fmt_rate(t.samples_per_s),
                # a failed trial's memory is not read (saved as 0 or None)
                memory=fmt_bytes(t.peak_memory_bytes)
                if t.peak_memory_bytes or t.state != "failed"
                else "n/a",
                duration=fmt_s(t.duration_s),
                source=t.source or "?",
                reason=t.reason,
                role=role,
            )
        )
    return rows


def trial_notes(result: TuneResult) -> list[tuple[str, str]]:
    """(``#4 failed``, why) for every trial that did not complete."""
    return [
        (f"#{t.number} {t.state}", t.reason or "no reason recorded")
        for t in result.trials
        if t.state != "complete"
    ]


def _ab_result(ab: ABResult, result: TuneResult) -> str:
    if result.verdict == "apply" and ab.candidate == result.tuned:
        return "chosen"
    return "faster" if ab.verdict == "apply" else "not enough"


def finalist_rows(result: TuneResult) -> list[tuple[str, str, str, str, str]]:
    """(candidate, rounds, speedup, 95% interval, result) per finalist's A/B test.

    The result is "chosen" (the tuned config), "faster" (it cleared the bar but a cheaper
    or faster one was chosen) or "not enough" (its interval did not clear the bar).
    """
    finalists = result.finalists or ((result.ab,) if result.ab is not None else ())
    return [
        (
            changed_text(ab.candidate, ab.incumbent),
            str(ab.rounds),
            fmt_ratio(ab.speedup),
            f"{fmt_ratio(ab.interval[0])} to {fmt_ratio(ab.interval[1])}",
            _ab_result(ab, result),
        )
        for ab in finalists
    ]


def round_rows(ab: ABResult) -> list[tuple[str, str, str, str]]:
    """(round, current samples/s, candidate samples/s, candidate/current) per A/B round."""
    return [
        (str(i + 1), fmt_rate(a), fmt_rate(b), fmt_ratio(r))
        for i, (a, b, r) in enumerate(
            zip(ab.incumbent_samples_per_s, ab.candidate_samples_per_s, ab.ratios, strict=True)
        )
    ]


def space_rows(result: TuneResult) -> list[tuple[str, str]]:
    """(setting, what was searched) for every setting of the space."""
    rows = []
    for name, dim in result.space.items():
        if not isinstance(dim, dict):
            rows.append((name, str(dim)))
        elif "choices" in dim:
            choices = list(dim["choices"])
            text = f"{choices[0]} (fixed)" if len(choices) == 1 else ", ".join(map(str, choices))
            rows.append((name, text))
        else:
            scale = ", log scale" if dim.get("log") else ""
            rows.append((name, f"{dim.get('low')} to {dim.get('high')}{scale}"))
    return rows


def tune_run_rows(result: TuneResult) -> list[tuple[str, str]]:
    """How the study ran: target, loader, goal, limits, the model's pick, study, timing."""
    rows = [
        ("target", result.target),
        ("loader", f"{result.backend} DataLoader"),
        (
            "goal",
            f"the cheapest config reaching {fmt_rate(result.target_rate)} samples/s"
            if result.target_rate is not None
            else f"the most samples/s; a change needs a gain of {result.min_gain:.0%} or more",
        ),
        (
            "memory limit",
            fmt_bytes(result.memory_limit) if result.memory_limit is not None else "none",
        ),
        ("training step", result.step or "none (batches are taken as fast as they come)"),
    ]
    m = result.model
    if m.get("reason"):
        rows.append(("model's pick", f"none: {m['reason']}"))
    elif "num_workers" in m:
        rows.append(
            (
                "model's pick",
                f"num_workers={m['num_workers']}, predicted {fmt_rate(m.get('samples_per_s'))} "
                f"samples/s (limited by {m.get('bound', '?')})",
            )
        )
    rows += [
        ("study", result.study_name or "unnamed"),
        ("storage", result.storage or "in memory (cannot be resumed)"),
        ("stopped", result.stopped or "not recorded"),
        ("duration", fmt_s(result.duration_s)),
    ]
    if result.created:
        rows.append(("finished", result.created))
    return rows


def snippet(result: TuneResult, config_path: str | None = None) -> str:
    """Python that builds a loader with the tuned settings (and the ``apply`` one-liner).

    The same text as ``loadtune.tune.snippet`` (both use ``loadtune.config.python_snippet``;
    a test keeps them equal).

    Args:
        result: The study.
        config_path: The tuned config file, for the ``loadtune.apply`` line; None leaves
            that line out.

    Returns:
        The snippet, ending in a newline.

    Example:
        >>> from loadtune.results import load
        >>> print(snippet(load("tests/data/tune_v1.json")))  # doctest: +SKIP
    """
    tuned = result.tuned
    if not searched(result, "fetch_concurrency"):  # otherwise the loader's own is kept
        tuned = replace(tuned, fetch_concurrency=None)
    return python_snippet(tuned, result.backend, config_path)
