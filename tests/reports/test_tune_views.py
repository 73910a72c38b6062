"""reports.tuneviews and tunedata: what is said about a study and the numbers its figures draw.

Expected values are read off tests/data/tune_v1.json by hand: trials 0 (the incumbent,
1 worker, prefetch 2) to 20, 6 complete, 1 pruned, 4 failed (5 workers), 3 infeasible
(4 workers); two finalists, num_workers=3/prefetch_factor=1 chosen.
"""

from __future__ import annotations

import dataclasses

import pytest

from loadtune.config import LoaderConfig
from loadtune.results import TuneResult
from loadtune.tune import snippet as tune_snippet
from reports import tunedata, tuneviews


def test_varying_settings_and_the_trial_rows(tune: TuneResult) -> None:
    assert tuneviews.varying_settings(tune) == ["num_workers", "prefetch_factor"]
    rows = {r.number: r for r in tuneviews.trial_rows(tune)}
    assert [r.number for r in tuneviews.trial_rows(tune)] == [
        0, 1, 2, 3, 4, 6, 7, 9, 10, 12, 14, 16, 18, 20,
    ]  # fmt: skip
    assert rows[0] == tuneviews.TrialRow(
        0, ("1", "2"), "complete", "449", "48.5 MiB", "432.2 ms", "incumbent", "", "incumbent"
    )
    assert rows[10].role == "tuned" and rows[10].samples_per_s == "1,236"
    assert rows[3].settings == ("0", "-")  # no workers: prefetch_factor does not apply
    assert (rows[4].state, rows[4].samples_per_s, rows[4].memory) == ("failed", "n/a", "n/a")
    assert rows[1].memory == "232.4 MiB" and rows[1].reason.startswith("the loader used 219 MiB")
    assert rows[20].samples_per_s == "875" and rows[20].state == "pruned"
    notes = tuneviews.trial_notes(tune)
    assert [n for n, _ in notes] == [
        "#1 infeasible",
        "#4 failed",
        "#6 infeasible",
        "#12 failed",
        "#14 failed",
        "#16 failed",
        "#18 infeasible",
        "#20 pruned",
    ]


def test_headline_says_verdict_rates_and_the_ab(tune: TuneResult) -> None:
    rows = dict(tuneviews.tune_headline(tune))
    assert rows["verdict"] == "apply: use num_workers=3, prefetch_factor=1"
    assert rows["why"] == tune.reason
    assert rows["current"] == (
        "446 samples/s: num_workers=1, prefetch_factor=2, batch_size=4, pin_memory=False, "
        "persistent_workers=False"
    )
    assert rows["tuned"] == "1,295 samples/s: num_workers=3, prefetch_factor=1"
    assert rows["A/B"] == (
        "2.90x, 95% interval 2.89x to 2.92x over 3 interleaved rounds (a change needs above 1.05x)"
    )
    assert rows["search"].startswith(
        "14 trials (6 complete, 1 pruned, 4 failed, 3 infeasible) in 11.75 s"
    )
    assert tuneviews.tuned_rates(tune) == (
        pytest.approx(445.9519345361065),
        pytest.approx(1294.5054570218713),
    )


def test_keep_without_an_ab_reads_the_search(tune: TuneResult) -> None:
    keep = dataclasses.replace(tune, ab=None, finalists=(), verdict="keep", tuned=tune.incumbent)
    assert tuneviews.verdict_text(keep) == "keep: your current settings stay"
    # the incumbent's own search trial, 449 samples/s, for both
    assert tuneviews.tuned_rates(keep) == (tune.trials[0].samples_per_s,) * 2
    assert tuneviews.finalist_rows(keep) == []
    assert tunedata.ab_rounds(keep) is None


def test_finalists_and_rounds(tune: TuneResult) -> None:
    assert tuneviews.finalist_rows(tune) == [
        ("num_workers=3, prefetch_factor=1", "3", "2.90x", "2.89x to 2.92x", "chosen"),
        ("num_workers=2, prefetch_factor=3", "3", "2.05x", "1.95x to 2.13x", "faster"),
    ]
    assert tuneviews.round_rows(tune.ab) == [
        ("1", "441", "1,278", "2.90x"),
        ("2", "446", "1,295", "2.90x"),
        ("3", "458", "1,330", "2.91x"),
    ]
    data = tunedata.ab_rounds(tune)
    assert data.threshold == pytest.approx(1.05)
    assert [(t.label, t.chosen) for t in data.tests] == [
        ("num_workers=3, prefetch_factor=1", True),
        ("num_workers=2, prefetch_factor=3", False),
    ]
    assert data.tests[1].ratios == tune.finalists[1].ratios
    assert data.tests[1].interval == tuple(tune.finalists[1].interval)


def test_space_and_run_rows(tune: TuneResult) -> None:
    assert tuneviews.space_rows(tune) == [
        ("num_workers", "0 to 5"),
        ("prefetch_factor", "1 to 4, log scale"),
        ("persistent_workers", "False (fixed)"),
        ("pin_memory", "False (fixed)"),
        ("batch_size", "4 (fixed)"),
    ]
    run = dict(tuneviews.tune_run_rows(tune))
    assert run["memory limit"] == "128.0 MiB"
    assert run["storage"] == "in memory (cannot be resumed)"
    assert run["model's pick"] == ("num_workers=4, predicted 1,825 samples/s (limited by workers)")


@pytest.mark.parametrize("backend", ["loadtune", "torch"])
@pytest.mark.parametrize("path", [None, "out/tuned.toml"])
@pytest.mark.parametrize("workers", [0, 3])
@pytest.mark.parametrize("fetch", [None, (4, [1, 4, 16]), (4, [4])])
def test_snippet_is_the_tune_modules(
    tune: TuneResult,
    backend: str,
    path: str | None,
    workers: int,
    fetch: tuple[int, list[int]] | None,
) -> None:
    # fetch: (the tuned fetch_concurrency, the choices the space gave it)
    space = dict(tune.space)
    if fetch is not None:
        space["fetch_concurrency"] = {"choices": fetch[1]}
    tuned = LoaderConfig(
        num_workers=workers, batch_size=8, fetch_concurrency=fetch[0] if fetch else None
    )
    result = dataclasses.replace(tune, backend=backend, tuned=tuned, space=space)
    assert tuneviews.snippet(result, path) == tune_snippet(result, path)
    searched = fetch is not None and len(fetch[1]) > 1
    assert ("    fetch_concurrency=4,\n" in tuneviews.snippet(result)) == searched


def test_snippet_text(tune: TuneResult) -> None:
    assert tuneviews.snippet(tune, "t.json") == (
        "from loadtune import DataLoader\n\n"
        "loader = DataLoader(\n"
        "    dataset,\n"
        "    batch_size=4,\n"
        "    num_workers=3,\n"
        "    prefetch_factor=1,\n"
        "    persistent_workers=False,\n"
        "    pin_memory=False,\n"
        ")\n"
        "\n# or keep everything else your loader has:\nimport loadtune\n\n"
        "loader = loadtune.apply('t.json', loader)\n"
    )


def test_throughput_grid_places_every_trial(tune: TuneResult) -> None:
    grid = tunedata.throughput_grid(tune)
    assert grid.workers == (0, 1, 2, 3, 4, 5)
    assert grid.prefetch == (None, 1, 2, 3, 4)  # no workers first
    assert grid.tuned == (3, 1) and grid.incumbent == (1, 2) and grid.others == ()
    cells = {(c.workers, c.prefetch): c for c in grid.cells}
    assert len(cells) == len(tune.trials)  # no pair was measured twice here
    assert cells[(3, 1)].samples_per_s == tune.trials[8].samples_per_s  # trial 10
    assert cells[(0, None)].samples_per_s == tune.trials[3].samples_per_s
    assert (cells[(2, 1)].state, cells[(2, 1)].samples_per_s) == ("pruned", None)
    assert cells[(5, 4)].state == "failed" and cells[(4, 3)].state == "infeasible"
    assert cells[(5, 4)].trials == (16,)


def test_throughput_grid_keeps_the_best_of_a_pair(tune: TuneResult) -> None:
    # The same pair measured again with another batch size: the cell keeps the faster.
    again = dataclasses.replace(
        tune.trials[0],
        number=21,
        config=LoaderConfig(num_workers=1, prefetch_factor=2, batch_size=8),
        samples_per_s=500.0,
    )
    grid = tunedata.throughput_grid(dataclasses.replace(tune, trials=(*tune.trials, again)))
    cell = next(c for c in grid.cells if (c.workers, c.prefetch) == (1, 2))
    assert cell.samples_per_s == 500.0 and cell.trials == (0, 21)
    assert grid.others == ("batch_size",)
    assert tunedata.throughput_grid(dataclasses.replace(tune, trials=())) is None


def test_study_is_rebuilt_with_the_saved_numbers(tune: TuneResult) -> None:
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState

    study = tunedata.study(tune)
    assert [t.number for t in study.trials] == list(range(21))
    by_number = {t.number: t for t in tune.trials}
    for trial in study.trials:
        saved = by_number.get(trial.number)
        if saved is None:  # a suggestion the search had measured already
            assert trial.state == TrialState.FAIL and trial.params == {}
            continue
        expected = {
            "complete": TrialState.COMPLETE,
            "pruned": TrialState.PRUNED,
            "infeasible": TrialState.PRUNED,
            "failed": TrialState.FAIL,
        }[saved.state]
        assert trial.state == expected
        assert trial.value == (saved.samples_per_s if saved.state == "complete" else None)
    assert study.trials[3].params == {"num_workers": 0}  # prefetch_factor does not apply
    assert study.trials[10].params == {"num_workers": 3, "prefetch_factor": 1}
    assert study.trials[10].distributions["prefetch_factor"] == IntDistribution(1, 4, log=True)
    assert study.best_trial.number == 10


def test_an_incumbent_outside_the_space_is_no_param(tune: TuneResult) -> None:
    space = {**tune.space, "num_workers": {"low": 2, "high": 5, "log": False}}
    narrowed = dataclasses.replace(tune, space=space)
    assert tunedata.study_params(narrowed, tune.incumbent) == {"prefetch_factor": 2}
    assert tunedata.study(narrowed).trials[0].params == {"prefetch_factor": 2}


def test_importance_reason(tune: TuneResult) -> None:
    assert tunedata.importance_reason(tune) is None
    complete = [t for t in tune.trials if t.state == "complete"]
    one = dataclasses.replace(tune, trials=tuple(complete[:1]))
    assert tunedata.importance_reason(one) == (
        "it needs at least 2 complete trials; this study has 1"
    )
    same = tuple(dataclasses.replace(t, samples_per_s=100.0) for t in complete)
    assert tunedata.importance_reason(dataclasses.replace(tune, trials=same)) == (
        "every complete trial measured the same samples/s: there is nothing to explain"
    )
    fixed = {**tune.space, "prefetch_factor": {"choices": [2]}}
    assert tunedata.importance_reason(dataclasses.replace(tune, space=fixed)) == (
        "only num_workers took more than one value in the complete trials, so it would "
        "explain all of the difference by definition"
    )


def test_a_target_rate_is_judged_by_the_candidates_own_interval(tune: TuneResult) -> None:
    from reports import html

    ab = dataclasses.replace(tune.ab, target_rate=1000.0, candidate_interval=(1250.0, 1340.0))
    aimed = dataclasses.replace(tune, ab=ab, finalists=(ab,), target_rate=1000.0)
    assert dict(tuneviews.tune_headline(aimed))["A/B"] == (
        "2.90x, 95% interval 2.89x to 2.92x over 3 interleaved rounds; "
        "candidate 1,250 to 1,340 samples/s (target 1,000)"
    )
    assert tunedata.ab_rounds(aimed).threshold is None  # no speedup bar to draw
    assert dict(tuneviews.tune_run_rows(aimed))["goal"] == (
        "the cheapest config reaching 1,000 samples/s"
    )
    assert "its own 95% interval of samples/s lies above the rate" in html.render(aimed)


def test_cards(tune: TuneResult) -> None:
    cards = {c.label: c for c in tuneviews.tune_cards(tune)}
    assert list(cards) == ["verdict", "current", "tuned", "A/B speedup", "search"]
    assert (cards["verdict"].value, cards["verdict"].level) == ("apply", "ok")
    assert cards["verdict"].note == "apply: use num_workers=3, prefetch_factor=1"
    assert (cards["current"].value, cards["tuned"].value) == ("446 samples/s", "1,295 samples/s")
    assert cards["A/B speedup"].value == "2.90x"
    assert cards["A/B speedup"].note.startswith("95% interval 2.89x to 2.92x over 3 interleaved")
    keep = dataclasses.replace(tune, verdict="keep", tuned=tune.incumbent)
    assert {c.label: c.level for c in tuneviews.tune_cards(keep)}["verdict"] == ""
