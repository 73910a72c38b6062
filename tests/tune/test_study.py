"""The study in storage: resuming after a kill, two processes sharing one on PostgreSQL.

See NOTE [ Trials in storage ] in loadtune/tune/study.py.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from loadtune.tune.study import _postgres_driver

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
                 space="num_workers=0..4,persistent_workers=false,prefetch_factor=1..4,"
                       "fetch_concurrency=1",
                 batches=20, warmup=3, rounds=2, finalists=1, model=False, patience=None)
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
