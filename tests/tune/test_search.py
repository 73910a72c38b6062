"""The search: the neighbours it queues, when it has converged, the model's pick."""

from __future__ import annotations

from typing import Any

import pytest

from loadtune import DataLoader, LoaderConfig, autotune
from loadtune.results import PredictionPoint
from loadtune.tune import parse_space
from loadtune.tune.search import _cheapest_predicted, _Search, neighbours

from .workloads import Sleepy, fast

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")

SPACE = parse_space(
    "num_workers=0..4,prefetch_factor=1..16,persistent_workers=false|true,pin_memory=false,"
    "batch_size=8,fetch_concurrency=1..32"
)


def _short(configs: list[LoaderConfig]) -> list[tuple[int, int | None, int | None]]:
    return [(c.num_workers, c.prefetch_factor, c.fetch_concurrency) for c in configs]


def test_neighbours_step_each_free_setting_once_each_way() -> None:
    cfg = LoaderConfig(num_workers=2, prefetch_factor=4, batch_size=8, fetch_concurrency=8)
    assert _short(neighbours(cfg, SPACE)) == [
        (1, 4, 8),  # a worker fewer, then more
        (3, 4, 8),
        (2, 2, 8),  # prefetch halved, doubled
        (2, 8, 8),
        (2, 4, 4),  # fetch_concurrency halved, doubled
        (2, 4, 16),
    ]
    # at the ends of the ranges there is one step only; without workers, no prefetch
    edge = LoaderConfig(num_workers=0, batch_size=8, fetch_concurrency=32)
    assert _short(neighbours(edge, SPACE)) == [(1, 2, 32), (0, None, 16)]
    # a setting the space fixes is not stepped; a list of choices steps to the next one
    listed = parse_space("num_workers=2,prefetch_factor=2,pin_memory=false,batch_size=8")
    listed["fetch_concurrency"] = parse_space("fetch_concurrency=1|4|16")["fetch_concurrency"]
    assert _short(neighbours(cfg.with_(prefetch_factor=2, fetch_concurrency=4), listed)) == [
        (2, 2, 1),
        (2, 2, 16),
    ]


def _search(study: Any, patience: int | None = 2) -> _Search:
    return _Search(
        study=study,
        storage=None,
        factory=None,  # type: ignore[arg-type]
        space=SPACE,
        trials=None,
        deadline=None,
        reserve=lambda: 0.0,
        batches=10,
        warmup=1,
        step=None,
        memory_limit=None,
        seed=0,
        progress=None,
        min_gain=0.05,
        patience=patience,
    )


def _add(
    study: Any,
    state: str,
    rate: float | None,
    steps: dict[int, float] | None = None,
    source: str = "sampler",
) -> None:
    import optuna

    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE
            if state == "complete"
            else optuna.trial.TrialState.PRUNED,
            value=rate if state == "complete" else None,
            intermediate_values=steps or {},
            user_attrs={
                "loadtune_role": "measure",
                "loadtune_state": state,
                "loadtune_rate": rate,
                "loadtune_source": source,
            },
            distributions={},
            params={},
        )
    )


def test_the_search_converges_after_patience_trials_without_a_real_gain() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    search = _search(study)
    _add(study, "complete", 100.0)  # the first trial is a gain
    assert (search.stale(), search.converged()) == (0, False)
    _add(study, "complete", 104.0)  # +4%: not more than min_gain, though the best now
    _add(study, "complete", 200.0)  # +92% over 104: a gain
    assert search.stale() == 0 and search.best_rate() == 200.0
    _add(study, "pruned", 90.0)  # a pruned trial brings nothing
    assert (search.stale(), search.converged()) == (1, False)
    _add(study, "complete", 209.0)  # +4.5% over 200: nothing either
    assert (search.stale(), search.converged()) == (2, True)
    # the incumbent is no step of the search: it neither counts nor resets, unless a gain
    _add(study, "pruned", 20.0, source="incumbent")
    assert search.stale() == 2
    # a seed still waiting is measured before the search may stop
    study.enqueue_trial({}, user_attrs={"loadtune_source": "model"})
    assert not search.converged()
    assert not _search(study, patience=None).converged()


def test_a_trial_is_judged_against_the_best_at_the_same_point() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    _add(study, "complete", 100.0, {1: 80.0, 2: 95.0})
    _add(study, "complete", 90.0, {1: 85.0, 2: 88.0})
    _add(study, "pruned", 10.0, {1: 500.0})  # a pruned trial is no reference
    assert _search(study)._best_at() == {1: 85.0, 2: 95.0}


def test_the_model_picks_the_cheapest_prediction_near_the_best() -> None:
    def point(workers: int, rate: float) -> PredictionPoint:
        return PredictionPoint(num_workers=workers, prefetch_factor=2, samples_per_s=rate, bound="")

    points = [
        (1, point(1, 100.0)),
        (1, point(4, 400.0)),
        (16, point(1, 395.0)),  # as fast as 4 workers, with 16 fetches in one
        (32, point(1, 400.0)),
        (8, point(2, 400.0)),
    ]
    k, pick = _cheapest_predicted(points)
    assert (k, pick.num_workers) == (16, 1)  # fewest workers first, then fewest threads
    assert _cheapest_predicted([(None, point(3, 10.0)), (None, point(2, 9.8))])[1].num_workers == 2


def test_a_run_stops_when_it_has_converged_and_says_why() -> None:
    loader = DataLoader(Sleepy(), batch_size=4)
    result = autotune(
        loader,
        **fast(space="num_workers=0..4,prefetch_factor=1..4,persistent_workers=false"),
        trials=20,
        patience=2,
        model=False,
    )
    assert result.stopped == (
        "converged: 2 trials in a row were not more than 5% faster than the best before them"
    )
    assert len(result.trials) < 20
    done = list(result.trials)
    best = None
    for t in done[:-2]:  # the trials before the last two, in order
        if t.state == "complete":
            best = max(best or 0.0, t.samples_per_s)
    for t in done[-2:]:
        assert t.state != "complete" or t.samples_per_s <= best * 1.05
        if t.state == "complete":
            best = max(best, t.samples_per_s)
    # the search started at the incumbent (no model) and followed the best to its neighbours
    assert result.trials[0].source == "incumbent"
    assert {t.source for t in result.trials[1:]} <= {"neighbour", "sampler", "nearest"}
    assert "fetch_concurrency" in result.space  # our loader on a map-style dataset
