"""autotune, interleave and `loadtune autotune`: the space, trials, resume, sharing, verdicts.

The workloads sleep per sample, so their truth is known: n workers deliver about n times
the samples of one (sleeping takes no CPU, so this holds on 2 cores), and a trial takes a
few tenths of a second.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import cli
import loadtune
from loadtune import ConfigError, DataLoader, LoaderConfig, autotune
from loadtune.measure import interleave, log_t_interval, t_quantile
from loadtune.results import ABResult, TrialResult, TuneResult, load
from loadtune.targets import LoaderFactory, resolve
from loadtune.tune import _decide, _postgres_driver, build_space, parse_memory, parse_space

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


class Sleepy(torch.utils.data.Dataset):
    """Each sample sleeps ``delay`` seconds: throughput grows with the worker count."""

    def __init__(self, delay: float = 0.002, n: int = 100_000) -> None:
        self.delay, self.n = delay, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        time.sleep(self.delay)
        return torch.zeros(8)


class FailsWithManyWorkers(Sleepy):
    """Raises in any worker of a loader with more than one worker."""

    def __getitem__(self, i: int) -> torch.Tensor:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 1:
            raise ValueError(f"cannot share the handle among {info.num_workers} workers")
        return super().__getitem__(i)


def _fast(**kw: object) -> dict[str, object]:
    """Small windows, one short A/B, an in-memory study: a whole run in a few seconds."""
    return {"storage": None, "batches": 20, "warmup": 3, "rounds": 2, "finalists": 1, **kw}


# -- the space -------------------------------------------------------------------------------


def test_space_forms_agree() -> None:
    text = parse_space("num_workers=1..6, prefetch_factor=2, batch_size=64|128, pin_memory=true")
    as_json = parse_space(
        '{"num_workers": "1..6", "prefetch_factor": 2, "batch_size": [128, 64], "pin_memory": true}'
    )
    as_python = parse_space(
        {"num_workers": (1, 6), "prefetch_factor": 2, "batch_size": [64, 128], "pin_memory": True}
    )
    assert text == as_json == as_python
    assert text["num_workers"].values() == (1, 2, 3, 4, 5, 6)
    assert text["prefetch_factor"].fixed and text["batch_size"].values() == (64, 128)
    # a saved space reads back as it was
    saved = {k: v.to_dict() for k, v in text.items()}
    assert parse_space(saved) == text


def test_default_space_follows_the_machine_and_the_arguments() -> None:
    base = LoaderConfig(num_workers=0, batch_size=32)
    space = build_space(base, accelerator=False, cores=3)
    assert space["num_workers"].values() == tuple(range(7))
    assert space["prefetch_factor"].values() == tuple(range(1, 17))
    assert space["pin_memory"].values() == (False,)  # no accelerator: not searched
    assert space["batch_size"].values() == (32,)  # no batch sizes given: kept
    space = build_space(base, accelerator=True, batch_sizes=[128, 64], max_workers=2)
    assert space["pin_memory"].values() == (False, True)
    assert space["batch_size"].values() == (64, 128)
    assert space["num_workers"].values() == (0, 1, 2)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("num_workers=0..x", "space: num_workers='x' is not a whole number or true/false"),
        ("threads=4", "space: unknown setting 'threads'"),
        ("num_workers=4..2", "space: num_workers range 4..2 is empty"),
        ("prefetch_factor=0", "space: prefetch_factor must be >= 1, got 0"),
        ("pin_memory=0..1", "space: pin_memory is true or false, not a range"),
        ("num_workers", "space entry 'num_workers' must look like name=value"),
        ('{"num_workers": ', "space is not valid JSON"),
    ],
)
def test_bad_space_is_a_config_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_space(spec)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_memory_sizes() -> None:
    assert parse_memory("2GiB") == 2 * 2**30
    assert parse_memory("512 MiB") == 512 * 2**20
    assert parse_memory("1.5GB") == 1.5e9
    assert parse_memory(1000) == 1000.0
    with pytest.raises(ConfigError, match="not a size"):
        parse_memory("lots")


# -- the interval and the A/B test -----------------------------------------------------------


def test_t_quantiles_match_the_tables() -> None:
    table = {(1, 0.975): 12.706, (4, 0.975): 2.776, (30, 0.975): 2.042, (2, 0.995): 9.925}
    for (df, p), value in table.items():
        assert t_quantile(df, p) == pytest.approx(value, abs=5e-4)
    # logs 0, 0.1, 0.2: mean 0.1, sd 0.1, n 3 -> 0.1 +- t(2) * 0.1 / sqrt(3)
    low, high = log_t_interval([1.0, math.exp(0.1), math.exp(0.2)])
    half = t_quantile(2) * 0.1 / 3**0.5
    assert (low, high) == (pytest.approx(math.exp(0.1 - half)), pytest.approx(math.exp(0.1 + half)))


def _sleepy_factory(delay: float = 0.002, batch_size: int = 4) -> LoaderFactory:
    data = Sleepy(delay)
    return resolve(DataLoader(data, batch_size=batch_size))


def test_interleave_keeps_when_nothing_differs() -> None:
    factory = _sleepy_factory()
    config = LoaderConfig(num_workers=0, batch_size=4)
    ab = interleave(factory, config, config, rounds=4, batches=15, warmup=3)
    assert ab.verdict == "keep" and "keep the current settings" in ab.reason
    # looks after rounds 3 and 4, each at 97.5%; it stops at 3 only if 1.05 is ruled out
    assert ab.rounds in (3, 4) and len(ab.ratios) == len(ab.incumbent_samples_per_s) == ab.rounds
    assert ab.method == "t-interval on log ratios; 2 looks at 97.5% each (Bonferroni: 95% overall)"
    assert ab.interval == log_t_interval(list(ab.ratios), 0.975)


def test_interleave_applies_a_real_gain() -> None:
    factory = _sleepy_factory()
    a, b = LoaderConfig(num_workers=0, batch_size=4), LoaderConfig(num_workers=3, batch_size=4)
    ab = interleave(factory, a, b, rounds=5, batches=15, warmup=3)
    # three sleeping workers fetch about three times as fast as the main process alone
    assert ab.verdict == "apply" and 2.0 < ab.speedup < 4.0, ab
    assert ab.interval[0] > 1.05
    assert ab.rounds == 3  # that clear a gain is settled at the first look
    again = ABResult.from_dict(json.loads(json.dumps(ab.to_dict())))
    assert again == ab


# -- the decision (fake A/B tests: exact) ----------------------------------------------------


def _trial(number: int, workers: int, rate: float, memory: float = 50e6) -> TrialResult:
    cfg = LoaderConfig(num_workers=workers, batch_size=8)
    return TrialResult(number, cfg, "complete", samples_per_s=rate, peak_memory_bytes=memory)


def _fake_ab(
    speedups: dict[int, float], base: float = 100.0
) -> tuple[Callable[[LoaderConfig, float | None], ABResult], list[int]]:
    """compare() for _decide: the speedup by num_workers, a tight interval around it."""
    asked = []

    def compare(cfg: LoaderConfig, rate: float | None) -> ABResult:
        asked.append(cfg.num_workers)
        s = speedups[cfg.num_workers]
        low, high = s * 0.98, s * 1.02
        b_low = base * low
        ok = b_low >= rate if rate is not None else low > 1.05
        return ABResult(
            incumbent=LoaderConfig(batch_size=8),
            candidate=cfg,
            rounds=4,
            incumbent_samples_per_s=(base,) * 4,
            candidate_samples_per_s=(base * s,) * 4,
            ratios=(s,) * 4,
            speedup=s,
            interval=(low, high),
            min_gain=0.05,
            verdict="apply" if ok else "keep",
            reason="fake",
            target_rate=rate,
            candidate_interval=(b_low, base * high),
        )

    return compare, asked


def test_decide_prefers_fewer_workers_within_min_gain() -> None:
    inc = LoaderConfig(batch_size=8)
    trials = [_trial(0, 0, 100.0), _trial(1, 8, 400.0), _trial(2, 4, 390.0), _trial(3, 2, 200.0)]
    compare, asked = _fake_ab({8: 4.0, 4: 3.9, 2: 2.0})
    d = _decide(trials, inc, compare, finalists=2, min_gain=0.05, target_rate=None)
    assert asked == [8, 4]  # the fastest, then the cheapest within 5% of it
    assert d.verdict == "apply" and d.tuned.num_workers == 4


def test_decide_keeps_when_no_interval_clears_the_gain() -> None:
    inc = LoaderConfig(batch_size=8)
    trials = [_trial(0, 0, 100.0), _trial(1, 2, 103.0)]
    compare, _ = _fake_ab({2: 1.03})
    d = _decide(trials, inc, compare, finalists=2, min_gain=0.05, target_rate=None)
    assert d.verdict == "keep" and d.tuned == inc
    assert d.reason.startswith("keep the current settings: the best candidate")
    assert "not surely more than 5% faster" in d.reason


def test_decide_replaces_an_incumbent_that_fails() -> None:
    inc = LoaderConfig(batch_size=8)
    failed = TrialResult(0, inc, "failed", reason="ValueError: boom")
    trials = [failed, _trial(1, 4, 400.0), _trial(2, 2, 395.0)]
    d = _decide(
        trials,
        inc,
        lambda cfg, rate: "the current settings: ValueError: boom",  # A/B impossible
        finalists=2,
        min_gain=0.05,
        target_rate=None,
    )
    assert d.verdict == "apply" and d.tuned.num_workers == 2  # the cheaper of the two
    assert d.reason.endswith("the current config fails (ValueError: boom)") and d.ab is None


def test_decide_with_a_target_rate_takes_the_cheapest_that_reaches_it() -> None:
    inc = LoaderConfig(batch_size=8)
    trials = [_trial(0, 0, 100.0), _trial(1, 8, 400.0), _trial(2, 3, 260.0), _trial(3, 2, 190.0)]
    compare, asked = _fake_ab({8: 4.0, 3: 2.6, 2: 1.9})
    d = _decide(trials, inc, compare, finalists=2, min_gain=0.05, target_rate=250.0)
    assert asked == [3] and d.verdict == "apply" and d.tuned.num_workers == 3
    # the incumbent reaches the rate already and nothing cheaper exists: keep, no A/B
    compare, asked = _fake_ab({})
    d = _decide(trials, inc, compare, finalists=2, min_gain=0.05, target_rate=50.0)
    assert asked == [] and d.verdict == "keep"


# -- whole runs ------------------------------------------------------------------------------


def test_apply_round_trips_the_tuned_file(tmp_path: Path) -> None:
    loader = DataLoader(Sleepy(), batch_size=4, num_workers=0)
    calls = []
    result = autotune(
        loader,
        **_fast(space="num_workers=0..2,prefetch_factor=2,persistent_workers=false", trials=3),
        out=tmp_path / "tuned.toml",
        progress=lambda *args: calls.append(args),
    )
    assert isinstance(result, TuneResult) and result.verdict in ("apply", "keep")
    assert {t.config.num_workers for t in result.trials} == {0, 1, 2}
    # one progress call per trial: (trial, config, samples/s, best so far)
    assert [c[0] for c in calls] == list(result.trials)
    rates = [c[2] for c in calls]
    assert [c[1] for c in calls] == [t.config for t in result.trials]
    assert [c[3] for c in calls] == [max(r for r in rates[: i + 1]) for i in range(3)]
    tuned = loadtune.apply(tmp_path / "tuned.toml", loader)
    assert LoaderConfig.from_loader(tuned) == result.tuned
    assert type(tuned) is DataLoader and tuned.dataset is loader.dataset
    saved = load(tmp_path / "tune.json")
    assert isinstance(saved, TuneResult) and saved.to_dict() == result.to_dict()
    text = (tmp_path / "tuned.toml").read_text()
    assert "[measurement]" in text and f'verdict = "{result.verdict}"' in text


def test_a_time_budget_ends_the_search() -> None:
    loader = DataLoader(Sleepy(), batch_size=4)
    result = autotune(loader, **_fast(time_budget=3.0), model=False)
    assert result.stopped == "time budget spent" and result.trials
    with pytest.raises(ConfigError, match="resume needs a storage"):
        autotune(loader, storage=None, resume=True)


def test_a_failing_config_is_recorded_and_the_study_goes_on() -> None:
    loader = DataLoader(FailsWithManyWorkers(), batch_size=4)
    result = autotune(
        loader, **_fast(space="num_workers=0..3,prefetch_factor=2,persistent_workers=false")
    )
    by_workers = {t.config.num_workers: t for t in result.trials}
    assert set(by_workers) == {0, 1, 2, 3}  # the space was exhausted, failures and all
    for n in (2, 3):
        assert by_workers[n].state == "failed"
        assert by_workers[n].reason.startswith("ValueError: Caught ValueError in DataLoader")
        assert by_workers[n].samples_per_s is None
    assert by_workers[0].state == by_workers[1].state == "complete"
    # the model's profile ran two workers, which fail: the model says so and is not used
    assert result.model["reason"].startswith("the profile failed: ValueError")
    assert result.tuned.num_workers in (0, 1)


def test_a_config_over_the_memory_limit_is_infeasible() -> None:
    loader = DataLoader(Sleepy(), batch_size=4)
    result = autotune(
        loader,
        **_fast(space="num_workers=1..2,prefetch_factor=2,persistent_workers=false"),
        memory_limit="4MiB",
        model=False,
    )
    workers = [t for t in result.trials if t.config.num_workers > 0]
    assert len(workers) == 2
    for t in workers:  # a forked worker alone adds well over 4 MiB (about 8 MiB measured)
        assert t.state == "infeasible" and t.peak_memory_bytes > 4 * 2**20
        assert "over the 4 MiB limit" in t.reason
    assert result.memory_limit == 4 * 2**20
    assert result.tuned.num_workers == 0  # only the incumbent ran within the limit


def test_a_clear_loser_is_pruned() -> None:
    loader = DataLoader(Sleepy(0.003), batch_size=2, num_workers=2)
    base = LoaderConfig(num_workers=2, batch_size=2)
    initial = [base.with_(prefetch_factor=p) for p in (1, 3, 4)] + [base.with_(num_workers=0)]
    result = autotune(
        loader,
        **_fast(space="num_workers=0..2,persistent_workers=false", trials=5, batches=25),
        initial=initial,
        model=False,
    )
    states = {t.config: t for t in result.trials}
    loser = states[base.with_(num_workers=0)]
    # four finished trials with two workers, then one at about a quarter of their rate
    assert [t.state for t in result.trials[:4]] == ["complete"] * 4
    assert loser.state == "pruned" and "below the 25th percentile" in loser.reason
    # the pruner compares with the others' rates at the same point of their windows; their
    # median is a robust stand-in for those on a noisy machine (the true gap is 4x)
    assert loser.samples_per_s < statistics.median(t.samples_per_s for t in result.trials[:4])


# -- storage: resume and sharing -------------------------------------------------------------

_SCRIPT = """
import sys, time, torch
from loadtune import DataLoader, autotune

class Sleepy(torch.utils.data.Dataset):
    def __len__(self): return 100000
    def __getitem__(self, i):
        time.sleep(0.002)
        return torch.zeros(8)

if __name__ == "__main__":
    storage, study, trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
    resume = "--resume" in sys.argv
    r = autotune(DataLoader(Sleepy(), batch_size=4), storage=storage,
                 study_name=None if study == "-" else study, resume=resume, trials=trials,
                 space="num_workers=0..4,persistent_workers=false,prefetch_factor=1..4",
                 batches=20, warmup=3, rounds=2, finalists=1, model=False)
    print("STUDY", r.study_name, len(r.trials))
"""


def _stored(storage: str, name: str) -> list:
    import optuna

    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def _measured(trials: list) -> list:
    return [t for t in trials if t.user_attrs.get("loadtune_role") == "measure"]


def _finished(trials: list) -> list:
    """Measured to the end (complete, pruned, failed or infeasible): not interrupted."""
    return [t for t in _measured(trials) if t.user_attrs.get("loadtune_state") != "running"]


def _run_script(tmp_path: Path, *args: str) -> subprocess.Popen:
    script = tmp_path / "tune_script.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _sqlite_progress(path: Path) -> tuple[str | None, int]:
    """(study name, finished trials) read straight from the file, read-only: opening it
    through Optuna while the other process creates the tables would race it for them."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            names = [r[0] for r in db.execute("SELECT study_name FROM studies")]
            done = db.execute(
                "SELECT COUNT(*) FROM trial_user_attributes WHERE key = 'loadtune_state' "
                "AND value_json != '\"running\"'"
            ).fetchone()[0]
    except sqlite3.Error:
        return None, 0
    return (names[0] if names else None), done


def test_resume_after_a_killed_process_repeats_no_finished_trial(tmp_path: Path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = _run_script(tmp_path, storage, "-", "8")
    deadline = time.monotonic() + 60
    name, done = None, 0
    while time.monotonic() < deadline and proc.poll() is None and done < 3:
        time.sleep(0.05)
        name, done = _sqlite_progress(tmp_path / "study.db")
    assert name is not None and done >= 3 and proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: t.user_attrs["loadtune_config"] for t in _finished(_stored(storage, name))}
    assert 3 <= len(before) < 8

    resumed = _run_script(tmp_path, storage, "-", "8", "--resume")
    out, err = resumed.communicate(timeout=90)
    assert resumed.returncode == 0, err
    assert f"STUDY {name} 8" in out  # the same study, 8 trials in all
    trials = _stored(storage, name)
    finished = _finished(trials)
    configs = Counter(json.dumps(t.user_attrs["loadtune_config"], sort_keys=True) for t in finished)
    assert len(finished) == 8 and max(configs.values()) == 1  # none measured twice
    after = {t.number: t.user_attrs["loadtune_config"] for t in finished}
    assert all(after[n] == c for n, c in before.items())  # the finished ones kept, not redone
    hosts = {t.user_attrs["loadtune_host"] for t in finished}
    assert len(hosts) == 2
    # a trial cut off by the kill is failed and measured again once, not lost
    for t in _measured(trials):
        if t.user_attrs.get("loadtune_state") == "running":
            assert t.state == optuna.trial.TrialState.FAIL
            retry = [r for r in finished if r.user_attrs.get("loadtune_retry_of") == t.number]
            assert len(retry) == 1


def _postgres_url() -> str:
    url = os.environ.get("LOADTUNE_TEST_POSTGRES")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("LOADTUNE_TEST_POSTGRES is unset under CI: .ci/run should have started it")
        pytest.skip("LOADTUNE_TEST_POSTGRES is unset: no PostgreSQL server to share a study on")
    return url


def test_two_processes_share_one_study_on_postgresql(tmp_path: Path) -> None:
    import optuna

    url = _postgres_url()
    name = f"test-shared-{uuid.uuid4().hex[:8]}"
    driver_url = url.replace("postgresql://", f"postgresql+{_postgres_driver()}://", 1)
    try:
        procs = [_run_script(tmp_path, url, name, "10") for _ in range(2)]
        results = [p.communicate(timeout=120) for p in procs]
        for p, (_, err) in zip(procs, results, strict=True):
            assert p.returncode == 0, err
        trials = _stored(driver_url, name)
        finished = _finished(trials)
        configs = Counter(
            json.dumps(t.user_attrs["loadtune_config"], sort_keys=True) for t in finished
        )
        assert len(finished) == 10  # none lost: the budget is the study's, not each process's
        assert max(configs.values()) == 1  # none run twice
        assert not [t for t in _measured(trials) if t.state.name == "RUNNING"]
        assert len({t.user_attrs["loadtune_host"] for t in finished}) == 2  # both measured
        for _, (out, _) in zip(procs, results, strict=True):
            assert f"STUDY {name} 10" in out
    finally:
        try:
            optuna.delete_study(study_name=name, storage=driver_url)
        except Exception:
            pass


# -- the command line ------------------------------------------------------------------------


def _target(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.py"
    path.write_text(
        textwrap.dedent(
            """
            import time, torch

            class Sleepy(torch.utils.data.Dataset):
                def __len__(self): return 100000
                def __getitem__(self, i):
                    time.sleep(0.002)
                    return torch.zeros(8)

            dataset = Sleepy()
            """
        )
    )
    return path


def test_cli_autotune_prints_the_verdict_and_writes_its_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _target(tmp_path)
    out = tmp_path / "tuned.json"
    code = cli.main(
        [
            "autotune",
            f"{path}:dataset",
            "--batch-size",
            "4",
            "--space",
            "num_workers=0..2,prefetch_factor=2,persistent_workers=false",
            "--storage",
            f"sqlite:///{tmp_path / 'l.db'}",
            "--batches",
            "20",
            "--rounds",
            "2",
            "--finalists",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    result = load(tmp_path / "tune.json")
    lines = stdout.splitlines()
    assert lines[0] == f"verdict: {result.reason}"
    assert lines[1].startswith(f"A/B: {result.ab.speedup:.2f}x, 95% interval")
    assert f"wrote {out}, {tmp_path / 'tune.json'}" in stdout
    assert f"    num_workers={result.tuned.num_workers}," in stdout
    assert f"loader = loadtune.apply({str(out)!r}, loader)" in stdout
    assert loadtune.config.read(out)[0] == result.tuned
    assert result.storage == f"sqlite:///{tmp_path / 'l.db'}" and result.study_name


@pytest.mark.parametrize(
    "args, message",
    [
        (["--space", "num_workers=0..x"], "space: num_workers='x' is not a whole number"),
        (["--storage", "loadtune.db"], "storage 'loadtune.db' is not a database URL"),
        (["--config", "missing.json"], "cannot read config 'missing.json'"),
        (["--memory-limit", "lots"], "memory limit 'lots' is not a size"),
        (["--out", "tuned.yaml"], "--out 'tuned.yaml': the file name should end in .json"),
        (["--rounds", "1"], "rounds must be >= 2"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    path = _target(tmp_path)
    code = cli.main(["autotune", f"{path}:dataset", "--storage", "none", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"loadtune: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "tune.json").exists()


def test_an_unreachable_server_is_one_line_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _target(tmp_path)
    url = "postgresql://loadtune:secret@127.0.0.1:1/nothing"
    code = cli.main(["autotune", f"{path}:dataset", "--storage", url])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("loadtune: error: cannot open the trial storage 'postgresql+")
    assert "://loadtune:***@127.0.0.1:1/nothing': " in err
    assert "secret" not in err
