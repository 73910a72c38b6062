"""autotune(): the whole run, from the target to the TuneResult and the tuned file.

Checks the arguments, builds the space, opens the study, seeds and runs the search, makes
the decision and writes the results; each step lives in its own module.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import system
from ..config import LoaderConfig
from ..errors import ConfigError
from ..measure import Step, make_step
from ..results import ABResult, TrialResult, TuneResult, save
from ..targets import LoaderFactory, resolve
from .ab import interleave_all
from .decide import _decide, _describe
from .output import write_tuned
from .search import _model_pick, _Search
from .space import build_space, parse_memory
from .study import _masked, _open_study, _storage, _study_name, _trial_results
from .trial import _reason

_DEFAULT_TRIALS = 20
_PATIENCE = 3


def autotune(
    loader_or_target: Any,
    *,
    backend: str = "auto",
    max_workers: int | None = None,
    batch_sizes: Sequence[int] | None = None,
    space: Mapping[str, Any] | str | None = None,
    trials: int | None = None,
    time_budget: float | None = None,
    target_rate: float | None = None,
    memory_limit: float | str | None = None,
    min_gain: float = 0.05,
    storage: str | None = "sqlite:///loadtune.db",
    study_name: str | None = None,
    resume: bool = False,
    seed: int = 0,
    batches: int = 40,
    warmup: int = 5,
    step_ms: float | None = None,
    step: Step = None,
    progress: Callable[[TrialResult, LoaderConfig, float | None, float | None], None] | None = None,
    finalists: int = 2,
    rounds: int = 5,
    patience: int | None = _PATIENCE,
    initial: Sequence[LoaderConfig] = (),
    model: bool = True,
    out: str | os.PathLike | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> TuneResult:
    """Search loader settings with Optuna, A/B-test the best against the current ones.

    See NOTE [ Search and decision ] for the space, the sampler, the pruning and the rule
    that decides; NOTE [ Trials in storage ] for resuming and sharing a study.

    Args:
        loader_or_target: A DataLoader, Dataset, callable or TARGET string (see
            targets.resolve), or a LoaderFactory.
        backend: ``"auto"``, ``"loadtune"`` or ``"torch"`` (as in targets.resolve).
        max_workers: Upper bound of num_workers (default: 2 x the usable cores).
        batch_sizes: Batch sizes to try; without it the batch size is kept.
        space: Fixes or narrows settings (see :func:`parse_space`). On loadtune's
            DataLoader with a map-style dataset it holds fetch_concurrency (1..32) too.
        trials: The most trials to measure in the study, counting those a resumed or
            shared study has already measured (default 20 when no time budget is given
            either); the search usually stops earlier, converged (see ``patience``).
        time_budget: Seconds for the whole run, A/B test included; the search stops early
            enough to leave the A/B its time.
        target_rate: Samples/s wanted: find the cheapest config (fewest workers, then least
            memory) that reaches it, instead of the fastest.
        memory_limit: Bytes (or ``"2GiB"``) a config's loader may add (NOTE [ Loader
            memory ]); a trial that goes over is stopped and recorded infeasible.
        min_gain: The least speedup worth a change (0.05: 5%).
        storage: Optuna storage URL (``sqlite:///loadtune.db``, ``postgresql://...``), or
            None for an in-memory study that cannot be resumed.
        study_name: Join or continue this study (several processes can share one).
            Without it the name comes from the target and the space: a new study each run,
            or with ``resume`` the latest one.
        resume: Continue the latest study of this target and space: finished trials are
            not measured again, an interrupted one is measured again.
        seed: Seeds the sampler (offset by the trials a resumed study holds).
        batches: Batches in each timed window (trials and A/B alike).
        warmup: Batches before each window, not timed.
        step_ms: Simulated training step per batch, in milliseconds.
        step: A callable run on every batch instead (the real training step).
        progress: Called after each trial with (trial, config, samples/s or None, best
            samples/s so far or None).
        finalists: Configs to A/B-test against the incumbent, all in the same rounds:
            the cheapest within ``min_gain`` of the fastest in the search, the fastest, ...
        rounds: The most interleaved rounds of the A/B test (at least 2); it stops as
            soon as every interval has decided (3 rounds for a clear result).
        patience: Stop the search once this many trials in a row were not more than
            ``min_gain`` faster than the best before them (None: never; run ``trials``).
        initial: Configs to measure first, after the model's pick and the incumbent.
        model: Profile the baseline and seed the study with the model's pick.
        out: Write the tuned config here (JSON, or TOML for ``.toml``) with a
            ``measurement`` section, and ``tune.json`` beside it.
        on_phase: Called with a short description when a phase starts.

    Returns:
        The TuneResult.

    Raises:
        ConfigError: a bad space, storage URL, memory limit, budget or patience (one
            line).
        TargetError: a bad target.

    Example:
        >>> import torch
        >>> from loadtune import DataLoader, autotune
        >>> data = torch.utils.data.TensorDataset(torch.zeros(4096, 2))
        >>> result = autotune(DataLoader(data, batch_size=16), storage=None, model=False,
        ...                   space="num_workers=0,fetch_concurrency=1", batches=8, rounds=2)
        >>> result.verdict
        'keep'
    """
    started = time.monotonic()
    if trials is not None and trials < 1:
        raise ConfigError(f"trials must be >= 1, got {trials}")
    if time_budget is not None and time_budget <= 0:
        raise ConfigError(f"time_budget must be > 0 seconds, got {time_budget}")
    if target_rate is not None and target_rate <= 0:
        raise ConfigError(f"target_rate must be > 0 samples/s, got {target_rate}")
    if min_gain < 0:
        raise ConfigError(f"min_gain must be >= 0, got {min_gain}")
    if rounds < 2:
        raise ConfigError(f"rounds must be >= 2 (the interval needs a spread), got {rounds}")
    if batches < 1:
        raise ConfigError(f"batches must be >= 1, got {batches}")
    if resume and storage is None:
        raise ConfigError("resume needs a storage: an in-memory study is gone when it ends")
    limit = parse_memory(memory_limit)
    if trials is None and time_budget is None:
        trials = _DEFAULT_TRIALS
    if patience is not None and patience < 1:
        raise ConfigError(f"patience must be >= 1 trial (or None), got {patience}")
    machine = system.collect()
    factory = resolve(loader_or_target, backend=backend)
    incumbent = factory.baseline
    dims = build_space(
        incumbent,
        max_workers=max_workers,
        batch_sizes=batch_sizes,
        space=space,
        cores=machine.usable_cores,
        concurrency=_concurrency_applies(factory),
    )
    opened = _storage(storage)
    settings = {"batches": batches, "warmup": warmup, "step_ms": step_ms}
    default_name = _study_name(factory, dims, settings)
    study, name = _open_study(opened, study_name, default_name, resume, seed, trials or 20)
    phase = on_phase or (lambda text: None)
    consumer = make_step(step_ms, step)
    deadline = started + time_budget if time_budget is not None else None
    windows: list[float] = []

    def reserve(k: int = finalists) -> float:
        # Time to leave for the A/B: k finalists settled at the first look (3 rounds of
        # 2 x (k + 1) windows) at the median trial's length; nothing before a trial ends.
        per = sorted(windows)[len(windows) // 2] if windows else 0.0
        return min(3, rounds) * 2 * (k + 1) * per

    search = _Search(
        study=study,
        storage=opened,
        factory=factory,
        space=dims,
        trials=trials,
        deadline=deadline,
        reserve=reserve,
        batches=batches,
        warmup=warmup,
        step=consumer,
        memory_limit=limit,
        seed=seed,
        progress=None,
        min_gain=min_gain,
        patience=patience,
    )

    def on_trial(t: TrialResult, c: LoaderConfig, rate: float | None, best: float | None) -> None:
        if t.state == "complete" and t.duration_s:
            windows.append(t.duration_s)
        if progress is not None:
            progress(t, c, rate, best)

    search.progress = on_trial
    model_info: dict[str, Any] = {"reason": "not asked for"}
    if model and search.finished():
        model_info = {"reason": "the study had measured trials already"}
    elif model:
        phase("profiling the current settings for the throughput model")
        pick, model_info = _model_pick(
            factory, dims, batches=batches, warmup=warmup, step_ms=step_ms, step=step
        )
        if pick is not None:  # first: a far slower incumbent is then pruned as a clear loser
            search.enqueue(pick, "model")
    search.enqueue(incumbent, "incumbent")
    for config in initial:
        search.enqueue(config, "initial")
    phase("searching")
    for _ in range(3):
        stopped = search.run()
        search.settle(timeout=60.0)
        # A trial counted while in flight may have ended unmeasured (its process died, or
        # it was a duplicate): then the budget is not spent after all, so search on.
        if trials is None or search.finished() >= trials or not search.time_left():
            break
        if not stopped.endswith("trials measured"):
            break
    found = _trial_results(study)

    def compare(
        candidates: Sequence[LoaderConfig],
        rate: float | None,
        rank: Callable[[LoaderConfig], Any] | None,
    ) -> tuple[list[ABResult], list[str]]:
        names = "; ".join(_describe(c, incumbent) for c in candidates)
        phase(f"A/B: {names} against the current settings")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="This DataLoader will create")
                return interleave_all(
                    factory,
                    incumbent,
                    candidates,
                    rounds=rounds,
                    batches=batches,
                    seconds=_window_cap(found, candidates),
                    warmup=warmup,
                    step=consumer,
                    min_gain=min_gain,
                    target_rate=rate,
                    rank=rank,
                )
        except Exception as exc:
            return [], [f"the current settings: {_reason(exc)}"]

    k = finalists
    if deadline is not None:  # fit the A/B into what is left of the budget
        while k > 1 and time.monotonic() + reserve(k) > deadline:
            k -= 1
    decision = _decide(
        found, incumbent, compare, finalists=k, min_gain=min_gain, target_rate=target_rate
    )
    result = TuneResult(
        target=factory.target,
        backend=factory.backend,
        machine=machine,
        space={n: d.to_dict() for n, d in dims.items()},
        stopped=stopped,
        incumbent=incumbent,
        trials=tuple(found),
        tuned=decision.tuned,
        verdict=decision.verdict,
        reason=decision.reason,
        ab=decision.ab,
        finalists=decision.finalists,
        min_gain=min_gain,
        target_rate=target_rate,
        memory_limit=limit,
        storage=_masked(storage) if storage else None,
        study_name=name,
        model=model_info,
        step=f"{step_ms:g} ms" if step_ms else getattr(step, "__qualname__", None),
        duration_s=time.monotonic() - started,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    if out is not None:
        write_tuned(result, out)
        save(result, Path(out).parent / "tune.json")
    return result


def _concurrency_applies(factory: LoaderFactory) -> bool:
    """Whether fetch_concurrency is worth searching: loadtune's DataLoader on a map-style
    dataset whose fetches can overlap (with ``per_sample_seed`` and no ``aget``, a lock runs
    one ``__getitem__`` at a time: threads would only add overhead)."""
    import inspect

    import torch.utils.data as tud

    if factory.backend != "loadtune":
        return False
    try:
        loader = factory(factory.baseline)
    except Exception:
        return False  # the search reports the failure with its reason
    dataset = loader.dataset
    if isinstance(dataset, tud.IterableDataset):
        return False
    if getattr(loader, "per_sample_seed", False):
        return inspect.iscoroutinefunction(getattr(dataset, "aget", None))
    return True


def _window_cap(trials: Sequence[TrialResult], candidates: Sequence[LoaderConfig]) -> float | None:
    """How long an A/B window may last: 1.5 times the longest window of the candidates in the
    search. The incumbent is often several times slower; its windows then end early, with
    fewer batches, instead of making every round wait for it (None: nothing to go by)."""
    lengths = []
    for t in trials:
        m = t.measurement
        if t.config in candidates and m is not None and m.batches_per_s > 0:
            lengths.append(m.window_batches / m.batches_per_s)
    if len(lengths) < len(set(candidates)):
        return None
    return 1.5 * max(lengths)
