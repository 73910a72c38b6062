"""The search: seeding the study, asking it for configs, measuring them, and when to stop.

One :class:`_Search` per autotune run drives Optuna's ask/tell loop in this process; other
processes sharing the study run their own (NOTE [ Trials in storage ] in ``study.py``).
The seeds come first (NOTE [ Search and decision ] in ``decide.py``).
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import LoaderConfig
from ..measure import Step, steady_warmup
from ..results import TrialResult
from ..targets import LoaderFactory
from .space import Dim, _config_of, _distance, _key, _params, _suggest, grid
from .study import _budget_used, _Heartbeat, _me, _reap, _trial_result
from .trial import _measure_trial, _reason

_NEAR_BEST = 0.97  # the model's pick: the cheapest predicted within 3% of the best
_MAX_DUPLICATES = 50  # suggestions in a row already measured before the search gives up
_LOSER = 0.6  # a running rate under this share of the best finished trial's: pruned
_SEEDS = ("model", "incumbent", "initial", "retry")  # measured before the search may converge


@dataclass
class _Search:
    """What the search loop needs; the loop itself is :meth:`run`."""

    study: Any
    storage: Any
    factory: LoaderFactory
    space: dict[str, Dim]
    trials: int | None
    deadline: float | None
    reserve: Callable[[], float]
    batches: int
    warmup: int
    step: Step
    memory_limit: float | None
    seed: int
    progress: Callable[[TrialResult, LoaderConfig, float | None, float | None], None] | None
    min_gain: float = 0.05
    patience: int | None = None
    _duplicates: int = 0  # suggestions in a row already measured
    _best: float | None = None  # best samples/s this process has measured
    _next: list[LoaderConfig] = field(default_factory=list)  # neighbours to measure, in order

    def enqueue(self, config: LoaderConfig, source: str) -> None:
        """Queue a config unless the study has measured or queued it already."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False):
            same = t.user_attrs.get("loadtune_config") == config.to_dict()
            if same and (t.state == TrialState.WAITING or t.user_attrs.get("loadtune_role")):
                return
        self.study.enqueue_trial(
            _params(config, self.space),
            user_attrs={"loadtune_config": config.to_dict(), "loadtune_source": source},
        )

    def _finished_trials(self) -> list[Any]:
        """The study's trials measured to the end, by any process, in trial order."""
        return [
            t
            for t in self.study.get_trials(deepcopy=False)
            if t.user_attrs.get("loadtune_role") == "measure"
            and t.user_attrs.get("loadtune_state") not in (None, "running")
        ]

    def best_rate(self) -> float | None:
        """The best samples/s of a complete trial in the study, or None."""
        rates = [
            t.user_attrs.get("loadtune_rate")
            for t in self._finished_trials()
            if t.user_attrs.get("loadtune_state") == "complete"
        ]
        return max((r for r in rates if r is not None), default=None)

    def _best_at(self) -> dict[int, float]:
        """The best running rate of the complete trials at each report: a trial is compared
        with the others at the same point of their windows (the first fifth still carries
        some of the ramp from warm-up, for every config alike)."""
        out: dict[int, float] = {}
        for t in self._finished_trials():
            if t.user_attrs.get("loadtune_state") == "complete":
                for step, value in t.intermediate_values.items():
                    out[step] = max(out.get(step, value), value)
        return out

    def stale(self) -> int:
        """Finished trials in a row, at the end, that beat the best before them by no more
        than ``min_gain`` (a failed, pruned or infeasible trial beats nothing). The
        incumbent and the caller's configs are no steps of the search: they do not count,
        unless they beat the best."""
        best, run = None, 0
        for t in self._finished_trials():
            rate = t.user_attrs.get("loadtune_rate")
            given = t.user_attrs.get("loadtune_source") in ("incumbent", "initial")
            if t.user_attrs.get("loadtune_state") != "complete" or rate is None:
                run += not given
                continue
            if best is None or rate > best * (1 + self.min_gain):
                run = 0
            else:
                run += not given
            best = rate if best is None else max(best, rate)
        return run

    def converged(self) -> bool:
        """``patience`` trials in a row brought nothing, and no seed waits to be measured."""
        from optuna.trial import TrialState

        if not self.patience or self.stale() < self.patience:
            return False
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        return not any(t.user_attrs.get("loadtune_source") in _SEEDS for t in waiting)

    def follow(self, config: LoaderConfig) -> None:
        """Put the neighbours of a new best config (see :func:`neighbours`) first in line:
        those of an earlier best wait behind them."""
        near = neighbours(config, self.space)
        self._next = near + [c for c in self._next if c not in near]

    def _queue_next(self) -> None:
        """Queue the first unmeasured neighbour when nothing else waits in the study.

        Neighbours are queued one at a time, here, rather than all at once: a new best's
        neighbours then go before an older best's, which the study's first-in, first-out
        queue could not do.
        """
        from optuna.trial import TrialState

        if not self._next or self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return
        measured = self._measured()
        while self._next:
            config = self._next.pop(0)
            if _key(config) not in measured:
                self.enqueue(config, "neighbour")
                return

    def _measured(self, exclude: int = -1) -> set[str]:
        """Configs measured, being measured, claimed or queued (NOTE [ Trials in storage ])."""
        out = set()
        for t in self.study.get_trials(deepcopy=False):
            a = t.user_attrs
            if t.number == exclude:
                continue
            if a.get("loadtune_role") in ("measure", "claim") and "loadtune_config" in a:
                interrupted = t.state.name == "FAIL" and a.get("loadtune_state") == "running"
                if not interrupted:
                    out.add(_key(LoaderConfig.from_dict(a["loadtune_config"])))
            elif t.state.name == "WAITING" and "loadtune_config" in a:
                out.add(_key(LoaderConfig.from_dict(a["loadtune_config"])))
        return out

    def _nearest(self, config: LoaderConfig, number: int) -> LoaderConfig | None:
        measured = self._measured()
        left = [c for c in grid(self.space) if _key(c) not in measured]
        if not left:
            return None
        span = self.space["num_workers"].values()[-1] - self.space["num_workers"].values()[0]
        best = min(_distance(config, c, span) for c in left)
        ties = [c for c in left if _distance(config, c, span) == best]
        return random.Random(self.seed + number).choice(ties)

    def settle(self, timeout: float) -> None:
        """Wait for the trials other processes sharing the study still measure.

        Done when the study holds its budget of finished trials and nothing runs, or when
        nothing has run for three polls in a row (the others stopped for their own reasons).
        """
        from optuna.trial import TrialState

        end = time.monotonic() + timeout
        if self.deadline is not None:
            end = min(end, self.deadline)
        quiet = 0
        while time.monotonic() < end:
            _reap(self.study)
            trials = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if trials:
                quiet = 0
            else:
                quiet += 1
                if (self.trials is not None and self.finished() >= self.trials) or quiet >= 3:
                    return
            time.sleep(0.2)

    def time_left(self) -> bool:
        """Whether the time budget leaves room for another trial and the A/B."""
        return self.deadline is None or time.monotonic() + self.reserve() < self.deadline

    def run(self) -> str:
        """Measure trials until the budget is spent; returns why the search stopped."""
        import optuna

        owner = _me()
        while True:
            _reap(self.study)
            if self.trials is not None and _budget_used(self.study, 1 << 62) >= self.trials:
                return f"{self.trials} trials measured"
            if not self.time_left():
                return "time budget spent"
            self._queue_next()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ask() warns that heartbeats suit optimize()
                trial = self.study.ask()
            # From here on the trial has an owner and a heartbeat, so that a kill at any point
            # leaves nothing that _reap cannot fail (NOTE [ Trials in storage ]).
            try:
                with _Heartbeat(self.storage, trial._trial_id):
                    trial.set_user_attr("loadtune_host", owner[0])
                    trial.set_user_attr("loadtune_ctime", owner[1])
                    stop = self._trial(trial)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another process judged it abandoned and failed it: ask again
            if stop is not None:
                return stop
            if self.converged():
                return (
                    f"converged: {self.patience} trials in a row were not more than "
                    f"{self.min_gain:.0%} faster than the best before them"
                )

    def finished(self) -> int:
        """Trials measured to the end in the study, by any process."""
        return sum(
            1
            for t in self.study.get_trials(deepcopy=False)
            if t.user_attrs.get("loadtune_role") == "measure"
            and t.user_attrs.get("loadtune_state") not in (None, "running")
        )

    def _trial(self, trial: Any) -> str | None:
        """Run one asked trial; returns why the search must stop, or None to go on."""
        from optuna.trial import TrialState

        preset_data = trial.user_attrs.get("loadtune_config")
        preset = LoaderConfig.from_dict(preset_data) if preset_data else None
        source = trial.user_attrs.get("loadtune_source", "sampler")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = _suggest(trial, self.space, preset)
        # Claim the config, then look again: two processes that drew the same config at the
        # same moment both see the other's claim at the second look at the latest, so at most
        # one of them measures it (both may yield; the config is not lost then, only left for
        # a later suggestion).
        claimed = False
        if _key(config) not in self._measured(exclude=trial.number):
            for name, value in (
                ("loadtune_config", config.to_dict()),
                ("loadtune_source", source),
                ("loadtune_state", "running"),
                ("loadtune_role", "claim"),
            ):
                trial.set_user_attr(name, value)
            claimed = _key(config) not in self._measured(exclude=trial.number)
        if not claimed:
            trial.set_user_attr("loadtune_role", "duplicate")
            self.study.tell(trial, state=TrialState.FAIL)
            self._duplicates += 1
            near = self._nearest(config, trial.number)
            if near is None:
                return "every config in the space was measured"
            if self._duplicates > _MAX_DUPLICATES:
                return "the sampler kept suggesting configs already measured"
            self.enqueue(near, "nearest")
            return None
        self._duplicates = 0
        trial.set_user_attr("loadtune_role", "measure")
        if self.trials is not None and _budget_used(self.study, trial.number) > self.trials:
            trial.set_user_attr("loadtune_role", "unused")
            self.study.tell(trial, state=TrialState.FAIL)
            return f"{self.trials} trials measured"

        best = self.best_rate()
        at = self._best_at()

        def report(chunk: int, rate: float) -> str | None:
            trial.report(rate, chunk)
            ref = at.get(chunk, best)
            if ref is not None and rate < _LOSER * ref:
                return (
                    f"under {_LOSER:.0%} of the best finished trial's {ref:,.0f} samples/s at "
                    "that point: a clear loser"
                )
            return None

        seconds = None if self.deadline is None else max(1.0, self.deadline - time.monotonic())
        out = _measure_trial(
            self.factory,
            config,
            batches=self.batches,
            warmup=self.warmup,
            step=self.step,
            memory_limit=self.memory_limit,
            seconds=seconds,
            report=report,
        )
        for name, value in (
            ("loadtune_reason", out.reason),
            ("loadtune_rate", out.rate),
            ("loadtune_peak_memory", out.peak),
            ("loadtune_duration", out.duration),
            ("loadtune_measurement", out.measurement.to_dict() if out.measurement else None),
            ("loadtune_state", out.state),
        ):
            trial.set_user_attr(name, value)
        if out.state == "complete":
            self.study.tell(trial, out.rate)
            self._best = max(self._best or 0.0, out.rate or 0.0)
            if best is None or (out.rate or 0.0) > best:
                self.follow(config)
        elif out.state == "infeasible":
            assert self.memory_limit is not None
            trial.set_constraint("memory", (out.peak or 0.0) - self.memory_limit)
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            state = TrialState.PRUNED if out.state == "pruned" else TrialState.FAIL
            self.study.tell(trial, state=state)
        if self.progress is not None:
            result = _trial_result(self.study._storage.get_trial(trial._trial_id))
            if result is not None:
                self.progress(result, config, out.rate, self._best)
        return None


def _step(dim: Dim, value: Any, up: bool) -> Any:
    """The next value of a setting up or down its range (doubling on a log scale), or None."""
    values = dim.values()
    if value not in values:
        return None
    if dim.choices or not dim.log:
        i = values.index(value) + (1 if up else -1)
        return values[i] if 0 <= i < len(values) else None
    nxt = value * 2 if up else value // 2
    nxt = min(max(nxt, values[0]), values[-1])
    return None if nxt == value else nxt


def neighbours(config: LoaderConfig, space: Mapping[str, Dim]) -> list[LoaderConfig]:
    """The configs one step away from ``config`` in each free setting, the cheaper step first.

    A step is one worker more or fewer, prefetch_factor and fetch_concurrency doubled or
    halved, the next batch size, pin_memory switched. persistent_workers is left alone: it
    changes nothing inside one timed window (it keeps workers between epochs).

    Example:
        >>> from loadtune.tune import parse_space
        >>> space = parse_space("num_workers=0..4,prefetch_factor=1..16,"
        ...     "persistent_workers=false,pin_memory=false,batch_size=8")
        >>> [(c.num_workers, c.prefetch_factor)
        ...  for c in neighbours(LoaderConfig(num_workers=2, batch_size=8), space)]
        [(1, 2), (3, 2), (2, 1), (2, 4)]
    """
    values = {
        "num_workers": config.num_workers,
        "prefetch_factor": config.prefetch_factor or 2,
        "persistent_workers": config.persistent_workers,
        "pin_memory": config.pin_memory,
        "batch_size": config.batch_size,
        "fetch_concurrency": config.fetch_concurrency,
    }
    out: list[LoaderConfig] = []
    for name in ("num_workers", "prefetch_factor", "fetch_concurrency", "batch_size"):
        dim = space.get(name)
        if dim is None or dim.fixed or (name == "prefetch_factor" and not config.num_workers):
            continue
        for bigger in (False, True):
            nxt = _step(dim, values[name], bigger)
            if nxt is not None:
                changed = {**values, name: nxt}
                if name == "num_workers" and not config.num_workers:
                    prefetch = space["prefetch_factor"].values()
                    changed["prefetch_factor"] = 2 if 2 in prefetch else prefetch[0]
                out.append(_config_of(changed))
    if len(space["pin_memory"].values()) > 1:
        out.append(_config_of({**values, "pin_memory": not config.pin_memory}))
    return [c for c in out if c != config]


def _in_space(space: Mapping[str, Dim], name: str, value: Any) -> Any:
    """``value`` if the space allows it, else the space's first value for the setting."""
    allowed = space[name].values()
    return value if value in allowed else allowed[0]


def _cheapest_predicted(points: Sequence[tuple[int | None, Any]]) -> tuple[int | None, Any]:
    """Of (fetch_concurrency, PredictionPoint) pairs, the cheapest predicted within 3% of the
    best: fewest workers (processes), then fewest fetches in flight (threads)."""
    top = max(p.samples_per_s for _, p in points)
    return min(
        ((k, p) for k, p in points if p.samples_per_s >= _NEAR_BEST * top),
        key=lambda kp: (kp[1].num_workers, kp[0] or 0),
    )


def _model_pick(
    factory: LoaderFactory,
    space: Mapping[str, Dim],
    *,
    batches: int,
    warmup: int,
    step_ms: float | None,
    step: Step,
) -> tuple[LoaderConfig | None, dict[str, Any]]:
    """The throughput model's pick, from a short profile of the baseline.

    The pick is the cheapest config (fewest workers, then fewest fetches in flight per
    worker) predicted within 3% of the best prediction. A baseline without workers says
    nothing about a worker's time per batch, so the profile then runs with two workers (or
    the most the space allows, if fewer).
    """
    import inspect

    from ..diagnose import inputs, predict
    from ..profiling import profile

    workers = space["num_workers"].values()
    if len(workers) == 1 or workers[-1] == 0:
        return None, {"reason": "num_workers is fixed by the space"}
    base = factory.baseline
    if base.num_workers == 0:
        base = base.with_(num_workers=min(2, workers[-1]))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This DataLoader will create")
            result = profile(
                replace(factory, baseline=base),
                batches=max(20, batches // 2),
                warmup=steady_warmup(base, warmup),
                step_ms=step_ms,
                step=step,
                probes=("stages", "cpu"),
            )
    except Exception as exc:
        return None, {"reason": f"the profile failed: {_reason(exc)}"}
    inc = factory.baseline
    fetch = space.get("fetch_concurrency")
    ks: list[int | None] = [None]  # None: as profiled
    if (
        fetch is not None
        and not fetch.fixed
        and "fetch_concurrency" in inspect.signature(predict).parameters
    ):
        ks = [k for k in fetch.values() if k & (k - 1) == 0 or k == fetch.values()[-1]]
    measured = inputs(result)
    points = []
    for k in ks:
        kwargs = {} if k is None else {"fetch_concurrency": k}
        found, _ = predict(measured, range(max(1, workers[0]), workers[-1] + 1), **kwargs)
        points.extend((k, p) for p in found)
    if not points:
        return None, {"reason": "the profile did not measure what the model needs"}
    k, pick = _cheapest_predicted(points)
    concurrency = inc.fetch_concurrency if k is None else k
    config = _config_of(
        {
            "num_workers": pick.num_workers,
            "prefetch_factor": _in_space(space, "prefetch_factor", 2),
            "persistent_workers": _in_space(space, "persistent_workers", inc.persistent_workers),
            "pin_memory": _in_space(space, "pin_memory", inc.pin_memory),
            "batch_size": _in_space(space, "batch_size", inc.batch_size),
            "fetch_concurrency": _in_space(space, "fetch_concurrency", concurrency)
            if fetch is not None
            else None,
        }
    )
    info = {
        "num_workers": pick.num_workers,
        "samples_per_s": pick.samples_per_s,
        "bound": pick.bound,
        "profiled_num_workers": base.num_workers,
        "profiled_samples_per_s": result.measurement.samples_per_s,
    }
    if config.fetch_concurrency is not None:
        info["fetch_concurrency"] = config.fetch_concurrency
    return config, info
