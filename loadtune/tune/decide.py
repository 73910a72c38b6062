"""The decision: which finalists to A/B-test against the incumbent, and what to do then.

Pure functions of the trials and of a ``compare`` callable (the interleaved A/B test), so
that the rules can be tested with fake A/B results.

# NOTE [ Search and decision ]
The aim is not only the fastest config but the cheapest one as fast (within ``min_gain``),
found in a small fraction of what measuring every config would take, and a verdict that
survives the noise of a shared machine.

1. Space: num_workers 0..max_workers (2 x usable cores unless told), prefetch_factor 1..16
   (log scale) and persistent_workers only when num_workers > 0, pin_memory only where an
   accelerator exists, batch_size only when batch sizes are given, fetch_concurrency 1..32
   (log scale) on loadtune's DataLoader with a map-style dataset; ``space`` fixes or
   narrows any of them.
2. Seeds: the throughput model's pick first (a short profile of the baseline run through
   ``diagnose.predict`` at every fetch_concurrency the space allows: the fewest workers,
   then the fewest fetches in flight, predicted within 3% of the best), then the incumbent
   (usually far slower, so often stopped early as a clear loser: the A/B test measures it
   properly), then any ``initial`` configs.
3. Following the best: whenever a trial is the fastest so far, its neighbours (one worker
   fewer and more, prefetch_factor and fetch_concurrency halved and doubled, the next batch
   size, pin_memory switched) are queued. The model usually points at the right region,
   and a step at a time is how its error is corrected; queued trials go before the sampler.
4. Sampler: multivariate TPE with ``group=True`` (the conditional settings form their own
   group) and the constant liar (several processes can share one study), for whatever the
   queue does not cover. A suggestion already measured is not measured again: the closest
   unmeasured config is queued instead.
5. Trials: each builds a fresh loader, excludes start-up and warm-up (time to first batch is
   kept apart; the warm-up takes the batches the config holds in flight too, see
   ``measure.steady_warmup``), and times a window of ``batches``. Every fifth of the window
   it reports the running samples/s; under 60% of the best complete trial's at the same
   point, it is stopped (pruned): a clear loser, which no noise makes a finalist. Nothing
   closer is pruned, so that a cheap config as fast as the best is always measured to the
   end. An exception (a crash, a dead worker, out of memory) fails the trial, which is
   recorded with its reason; going over ``memory_limit`` stops it as infeasible (an Optuna
   constraint, so TPE steers away). The study goes on either way.
6. Stop: after ``trials`` (20 by default), when the time budget leaves only the A/B test's
   time, or converged: once ``patience`` (3) trials in a row were not more than
   ``min_gain`` faster than the best before them (the incumbent and ``initial`` configs are
   no steps of the search and do not count), and no seed waits.
7. Decision: the finalists are the cheapest config within ``min_gain`` of the fastest in
   the search, the fastest config with more workers (or fetch threads) than that one (else
   the fastest), then the next fastest (at most two by default; cost: fewest workers, then
   least memory in 16 MiB steps, then fewest fetch threads, then the shallowest prefetch).
   They are A/B-tested against the incumbent all at once, in the same interleaved rounds
   (``ab.interleave_all``). The rounds stop as soon as every candidate has won (the 95%
   interval of its speedup above ``1 + min_gain``) or lost (its estimate not above it), and
   no costlier winner measures more than ``min_gain`` faster than a cheaper one without
   being sure of it yet. Only a winner can replace the incumbent. Of the winners, those no
   other one beats surely (the 95% interval of their ratio, round by round, above
   ``1 + min_gain``) are as fast as the fastest, and the cheapest of them is chosen: so
   the "as fast" that lets the cheaper config win rests on interval-backed rates, not on
   single search windows. With ``target_rate`` the goal is the cheapest config whose own
   95% interval of samples/s is above the rate. Otherwise the verdict is "keep", said
   plainly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import LoaderConfig
from ..results import ABResult, TrialResult
from .ab import surely_faster

# compare(candidates, target_rate, rank) -> (an ABResult per candidate that ran, an error
# line per candidate that could not): the A/B test (``_ab.interleave_all``; ``rank`` is each
# candidate's cost), or a fake in tests.
Compare = Callable[
    [Sequence[LoaderConfig], float | None, Callable[[LoaderConfig], Any] | None],
    tuple[list[ABResult], list[str]],
]


def _cost(t: TrialResult) -> tuple[int, int, int, int]:
    """Cheaper first: fewer workers (processes), then less memory (in 16 MiB steps: finer is
    noise), then fewer fetch threads (cheap, but not free), then a shallower prefetch."""
    memory = t.peak_memory_bytes
    c = t.config
    return (
        c.num_workers,
        math.floor(memory / 2**24) if memory is not None else 1 << 62,  # unknown: last
        c.fetch_concurrency or 1,
        c.prefetch_factor or 0,
    )


def _finalists(
    trials: Sequence[TrialResult], incumbent: LoaderConfig, k: int, min_gain: float
) -> list[TrialResult]:
    """The cheapest within min_gain of the fastest, then the fastest of the dearer configs
    (else the fastest), then, from three finalists on, the next fastest.

    Judged on the search's single windows, which a busy machine can make wrong by more
    than min_gain; the A/B test judges them again (NOTE [ Search and decision ]). So the
    cheapest goes first (with one finalist, it is the one tested), and the second is the
    fastest config with more workers (or as many, with more fetch threads): whether that
    step up is worth it is the question the search's noise leaves most open.
    """
    done = [
        t
        for t in trials
        if t.state == "complete" and t.config != incumbent and t.samples_per_s is not None
    ]
    if not done or k < 1:
        return []
    fastest = sorted(done, key=lambda t: -(t.samples_per_s or 0.0))
    top = fastest[0].samples_per_s or 0.0
    cheapest = min(
        (t for t in done if (t.samples_per_s or 0) * (1 + min_gain) >= top),
        key=lambda t: (_cost(t), -(t.samples_per_s or 0.0)),
    )

    dearer = [t for t in fastest if _size(t.config) > _size(cheapest.config)]
    # Past the first two, the next fastest: with two finalists, one that differs from the
    # cheapest only in prefetch depth would cost A/B rounds over what matters least.
    out = [cheapest]
    for t in dearer[:1] + fastest[:1] + (fastest[1:] if k > 2 else []):
        if len(out) >= k:
            break
        if all(t.config != o.config for o in out):
            out.append(t)
    return out


def _size(config: LoaderConfig) -> tuple[int, int]:
    """Processes, then threads: what a step up in cost means (prefetch and memory aside)."""
    return (config.num_workers, config.fetch_concurrency or 1)


def _describe(config: LoaderConfig, incumbent: LoaderConfig | None = None) -> str:
    """The settings of ``config`` that differ from ``incumbent``: ``num_workers=4, ...``."""
    values, base = config.to_dict(), (incumbent.to_dict() if incumbent else {})
    changed = [f"{k}={v}" for k, v in values.items() if base.get(k, object()) != v]
    return ", ".join(changed) or "the same settings"


def _cheaper(a: TrialResult, b: TrialResult) -> str:
    """Why ``a`` costs less than ``b``, in a few words."""
    ca, cb = _cost(a), _cost(b)
    if ca[0] < cb[0]:
        return f"{a.config.num_workers} workers instead of {b.config.num_workers}"
    if ca[1] < cb[1]:
        return "less memory"
    if ca[2] < cb[2]:
        return "fewer fetch threads"
    return "a shallower prefetch"


@dataclass(frozen=True, slots=True)
class _Decision:
    """What :func:`_decide` chose, and the A/B results behind it."""

    tuned: LoaderConfig
    verdict: str
    reason: str
    ab: ABResult | None
    finalists: tuple[ABResult, ...]


def _decide(
    trials: Sequence[TrialResult],
    incumbent: LoaderConfig,
    compare: Compare,
    *,
    finalists: int,
    min_gain: float,
    target_rate: float | None,
) -> _Decision:
    """Pick the tuned config from the search and the A/B test (NOTE [ Search and decision ]).

    Args:
        trials: The study's trials.
        incumbent: The settings the loader has now.
        compare: Runs the A/B test of some candidates against the incumbent.
        finalists: The most candidates to A/B-test.
        min_gain: The least speedup worth a change.
        target_rate: Samples/s wanted, or None for the fastest.

    Returns:
        The decision.
    """
    inc = next((t for t in trials if t.config == incumbent and t.state == "complete"), None)
    inc_bad = next(
        (t for t in trials if t.config == incumbent and t.state in ("failed", "infeasible")),
        None,
    )
    # A pruned incumbent was stopped as a clear loser: its rate at that point still counts.
    inc_seen = inc or next(
        (t for t in trials if t.config == incumbent and t.state == "pruned"), None
    )
    done = [t for t in trials if t.state == "complete" and t.config != incumbent]
    if not done:
        why = "no other config completed its trial" if trials else "no trial was measured"
        return _Decision(incumbent, "keep", f"keep the current settings: {why}", None, ())
    prefix = ""
    if target_rate is not None:
        reach = sorted((t for t in done if (t.samples_per_s or 0) >= target_rate), key=_cost)
        inc_reaches = inc_seen is not None and (inc_seen.samples_per_s or 0) >= target_rate
        if inc_reaches:
            reach = [t for t in reach if _cost(t) < _cost(inc_seen)]  # type: ignore[arg-type]
        if reach:
            results, errors = compare([t.config for t in reach[:finalists]], target_rate, None)
            by_config = {ab.candidate: ab for ab in results}
            for t in reach[:finalists]:  # cheapest first
                ab = by_config.get(t.config)
                if ab is not None and ab.verdict == "apply":
                    return _Decision(
                        t.config,
                        "apply",
                        f"apply {_describe(t.config, incumbent)}: the cheapest config that "
                        f"reaches {target_rate:,.0f} samples/s ({ab.reason})",
                        ab,
                        tuple(results),
                    )
            shown = results[0].reason if results else "; ".join(errors)
            return _Decision(
                incumbent,
                "keep",
                f"keep the current settings: no cheaper config surely reaches "
                f"{target_rate:,.0f} samples/s ({shown})",
                results[0] if results else None,
                tuple(results),
            )
        if inc_reaches:
            return _Decision(
                incumbent,
                "keep",
                f"keep the current settings: they reach {target_rate:,.0f} samples/s and no "
                "cheaper config did in the search",
                None,
                (),
            )
        prefix = f"no config reached {target_rate:,.0f} samples/s in the search, so: "
    picks = _finalists(trials, incumbent, finalists, min_gain)
    if inc is None and inc_bad is not None:
        # The incumbent fails or breaks the memory limit: it is no option at all, and there
        # is nothing to A/B-test against. The cheapest finalist (within min_gain of the
        # fastest in the search) takes its place.
        broken = "goes over the memory limit" if inc_bad.state == "infeasible" else "fails"
        t = picks[0]
        return _Decision(
            t.config,
            "apply",
            f"{prefix}apply {_describe(t.config, incumbent)}: the current config {broken} "
            f"({inc_bad.reason})",
            None,
            (),
        )
    trial_of = {t.config: t for t in picks}
    results, errors = compare([t.config for t in picks], None, lambda c: _cost(trial_of[c]))
    results = sorted(results, key=lambda ab: -ab.speedup)
    passing = [ab for ab in results if ab.verdict == "apply"]
    if passing:
        # Of the configs that surely beat the incumbent, those no other one surely beats by
        # more than min_gain are as fast as the fastest: the cheapest of them wins.
        eligible = [
            ab for ab in passing if not any(surely_faster(o, ab, min_gain) for o in passing)
        ] or passing[:1]
        ab = min(eligible, key=lambda a: _cost(trial_of[a.candidate]))
        t = trial_of[ab.candidate]
        why = ab.reason
        faster = [o for o in passing if o is not ab and o.speedup > ab.speedup]
        if faster:
            top = faster[0]
            why += (
                f"; {_describe(top.candidate, incumbent)} measured {top.speedup:.2f}x, not "
                f"surely more than {min_gain:.0%} faster than this, which needs "
                f"{_cheaper(t, trial_of[top.candidate])}"
            )
        return _Decision(
            t.config,
            "apply",
            f"{prefix}apply {_describe(t.config, incumbent)}: {why}",
            ab,
            tuple(results),
        )
    if not results:
        return _Decision(
            incumbent,
            "keep",
            f"{prefix}keep the current settings: the A/B test could not run ({'; '.join(errors)})",
            None,
            (),
        )
    ab = results[0]
    return _Decision(
        incumbent,
        "keep",
        f"{prefix}keep the current settings: the best candidate "
        f"({_describe(ab.candidate, incumbent)}) was {ab.speedup:.2f}x, 95% interval "
        f"{ab.interval[0]:.2f}x to {ab.interval[1]:.2f}x over {ab.rounds} interleaved rounds: "
        f"not surely more than {min_gain:.0%} faster",
        ab,
        tuple(results),
    )
