"""Tests for probes.pyspy: the rate rule, bad options, and real recordings of workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from torch.utils.data import Dataset, get_worker_info

from loadtune import DataLoader
from probes.base import Probe, Watch
from probes.pyspy import (
    _SAMPLING_MARK,
    DEFAULT_NICE,
    PySpyProbe,
    choose_rate,
    cpu_seconds,
    find_pyspy,
)

HOT_SECONDS = 0.005
BATCHES = 150  # x 4 samples x 5 ms = 3 s of CPU shared by two workers


def hot_in_worker_0() -> int:
    """Spin for HOT_SECONDS in this very frame (no Python callee), so it is the leaf."""
    start = time.perf_counter()
    spins = 0
    while time.perf_counter() - start < HOT_SECONDS:
        spins += 1
    return spins


def hot_in_worker_1() -> int:
    """The same as hot_in_worker_0, under another name: run by worker 1 only."""
    start = time.perf_counter()
    spins = 0
    while time.perf_counter() - start < HOT_SECONDS:
        spins += 1
    return spins


HOT = {0: hot_in_worker_0, 1: hot_in_worker_1}


class HotDataset(Dataset):
    """Sample i is i, after HOT_SECONDS of CPU in hot_in_worker_<id> of the worker it is in."""

    def __len__(self) -> int:
        return BATCHES * 4

    def __getitem__(self, i: int) -> int:
        info = get_worker_info()
        HOT[info.id if info is not None else 0]()
        return i


def _pyspy_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() == "py-spy":
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _missing_pid() -> int:
    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid += 1
    return pid


needs_pyspy = pytest.mark.skipif(find_pyspy() is None, reason="py-spy is not installed")


# --- unavailable ---------------------------------------------------------------------------


def test_unavailable_without_executable() -> None:
    probe = PySpyProbe()
    assert isinstance(probe, Probe)
    probe.start(Watch(options={"pyspy_exe": "/nonexistent/bin/py-spy"}))
    probe.sample(time.monotonic())
    result = probe.stop()
    assert not result.available
    assert "/nonexistent/bin/py-spy" in result.reason
    assert result.summary == {}


@needs_pyspy
def test_unavailable_for_missing_pid_quotes_pyspy() -> None:
    pid = _missing_pid()
    probe = PySpyProbe()
    probe.start(Watch(main_pid=pid))
    result = probe.stop()
    assert not result.available
    assert f"main (pid {pid})" in result.reason
    # py-spy's own error line, quoted: "Error: Failed to get process executable name..."
    assert "Error:" in result.reason
    assert _pyspy_children() == []


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"pyspy_rate": "fast"}, "pyspy_rate must be a positive integer, got 'fast'"),
        ({"pyspy_rate": 0}, "pyspy_rate must be a positive integer, got 0"),
        ({"pyspy_rate": 2.5}, "pyspy_rate must be a positive integer, got 2.5"),
        ({"pyspy_nice": "low"}, "pyspy_nice must be a non-negative integer, got 'low'"),
        ({"pyspy_nice": -1}, "pyspy_nice must be a non-negative integer, got -1"),
        ({"window_s": "long"}, "window_s must be a number of seconds, got 'long'"),
    ],
)
def test_bad_options_are_the_reason(options: dict[str, Any], reason: str) -> None:
    probe = PySpyProbe()
    probe.start(Watch(options=options))
    result = probe.stop()
    assert (result.available, result.reason) == (False, reason)
    assert _pyspy_children() == []


# --- the rate rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("processes", "cores", "window_s", "rate"),
    [
        # 1% of the cores at 0.5 ms a sample: 0.02 / (3 x 0.0005) = 13.3 Hz
        (3, 2, None, 13),
        (3, 2, 10.0, 13),  # 1000 samples in 10 s would take 100 Hz: the budget caps it
        (3, 2, 80.0, 12),  # 1000 samples in 80 s: 12.5 Hz, under the budget's 13.3
        (3, 2, 500.0, 10),  # 2 Hz would do; never below 10 Hz
        (3, 2, 0.0, 13),  # an unknown (zero) window is no window
        (9, 16, None, 35),  # 0.16 / (9 x 0.0005) = 35.6
        (9, 16, 60.0, 16),
        (1, 1, None, 20),  # exactly 0.01 / 0.0005
        (17, 1, None, 10),  # the budget would give 1.2 Hz: the floor holds
        (1, 64, None, 100),  # 1280 Hz: the ceiling holds
        (0, 0, None, 20),  # nonsense counts are taken as one
    ],
)
def test_choose_rate(processes: int, cores: int, window_s: float | None, rate: int) -> None:
    assert choose_rate(processes, cores, window_s) == rate


@needs_pyspy
def test_default_rate_follows_the_rule_for_the_processes_watched() -> None:
    spinners: list[subprocess.Popen] = []
    try:
        for _ in range(2):
            spinners.append(_spinner())
        probe = PySpyProbe()
        probe.start(Watch(worker_pids=lambda: [p.pid for p in spinners], options={"window_s": 90}))
        result = probe.stop()
    finally:
        for proc in spinners:
            proc.kill()
            proc.communicate()
    assert result.available, result.reason
    cores = len(os.sched_getaffinity(0))
    assert result.detail["rate_per_s"] == choose_rate(3, cores, 90.0)
    assert result.detail["rate_rule"] == f"choose_rate: 3 processes, {cores} cores, window ~90 s"
    assert _pyspy_children() == []


def test_cpu_seconds_of_a_child_agree_with_psutil() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
            "print('done', flush=True)\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"
        ours = cpu_seconds(child.pid)
        times = psutil.Process(child.pid).cpu_times()
    finally:
        child.kill()
        child.communicate()
    assert ours is not None and ours >= 0.3
    # psutil counts in ticks of 10 ms, per counter (user and system)
    assert ours == pytest.approx(times.user + times.system, abs=0.025)
    assert cpu_seconds(_missing_pid()) is None


# --- real recordings -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hot_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two workers spinning in very_hot_function_for_pyspy, recorded by the probe."""
    if find_pyspy() is None:
        pytest.skip("py-spy is not installed")
    out = tmp_path_factory.mktemp("pyspy") / "profile.speedscope.json"
    loader = DataLoader(HotDataset(), batch_size=4, num_workers=2)
    it = iter(loader)
    try:
        workers = [w.pid for w in it._workers]
        watch = Watch(
            worker_pids=lambda: [w.pid for w in it._workers],
            options={"pyspy_out": str(out), "pyspy_rate": 100, "pyspy_top": 100},
        )
        probe = PySpyProbe()
        probe.start(watch)
        # start() has waited for every recorder to attach
        attached = [_SAMPLING_MARK in rec.log_text() for rec in probe._recorders.values()]
        children = _pyspy_children()
        nice_during = sorted(child.nice() for child in children)
        for _ in it:
            probe.sample(time.monotonic())
        result = probe.stop()
        left_after = _pyspy_children()
    finally:
        it._shutdown()
    return {
        "result": result,
        "out": out,
        "workers": workers,
        "recorders_during": len(children),
        "attached": attached,
        "nice_during": nice_during,
        "left_after": left_after,
    }


def test_each_worker_has_its_own_hot_function(hot_run: dict[str, Any]) -> None:
    result = hot_run["result"]
    assert result.available, result.reason
    top = result.detail["top"]
    for n, role in enumerate(("worker-0", "worker-1")):
        hot = top[role]["self"][0]
        assert hot["function"] == HOT[n].__name__
        assert Path(hot["file"]).resolve() == Path(__file__).resolve()
        assert hot["line"] == HOT[n].__code__.co_firstlineno
        assert hot["share"] > 0.3
        # One recorder per process: the other worker's function is not in this one's table
        other = HOT[1 - n].__name__
        rows = top[role]["self"] + top[role]["total"]
        assert other not in {r["function"] for r in rows}
    # All workers together: the two hot functions lead, with the samples of their workers
    leading = {r["function"]: r["samples"] for r in top["workers"]["self"][:2]}
    assert leading == {
        "hot_in_worker_0": top["worker-0"]["self"][0]["samples"],
        "hot_in_worker_1": top["worker-1"]["self"][0]["samples"],
    }
    assert {r["function"] for r in top["main"]["self"]}.isdisjoint(leading)
    # Inclusive time: __getitem__ (py-spy names it by qualified name on Python 3.11+, by
    # plain name before) is on every stack that holds a hot function.
    total = {r["function"]: r["samples"] for r in top["workers"]["total"]}
    getitem = total.get("HotDataset.__getitem__", total.get("__getitem__", 0))
    assert getitem >= sum(leading.values())


def test_recorders_run_niced_and_report_their_cpu(hot_run: dict[str, Any]) -> None:
    result = hot_run["result"]
    assert hot_run["attached"] == [True, True, True]
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + DEFAULT_NICE)
    assert hot_run["nice_during"] == [expected] * 3
    rows = result.detail["processes"]
    assert [r["nice"] for r in rows] == [expected] * 3
    for row in rows:
        assert 0.0 < row["start_cpu_s"] < row["cpu_s"]
    summary = result.summary
    assert summary["recorder_start_cpu_s"] == sum(r["start_cpu_s"] for r in rows)
    assert summary["recorder_cpu_s"] == pytest.approx(
        sum(r["cpu_s"] for r in rows) - summary["recorder_start_cpu_s"]
    )


def test_counts_add_up(hot_run: dict[str, Any]) -> None:
    result = hot_run["result"]
    top, summary = result.detail["top"], result.summary
    assert summary["samples"] == top["all"]["samples"]
    assert summary["samples_workers"] == top["worker-0"]["samples"] + top["worker-1"]["samples"]
    assert summary["samples"] == summary["samples_main"] + summary["samples_workers"]
    rows = result.detail["processes"]
    assert [(r["role"], r["status"]) for r in rows] == [
        ("main", "ok"),
        ("worker-0", "ok"),
        ("worker-1", "ok"),
    ]
    assert [r["pid"] for r in rows] == [os.getpid(), *hot_run["workers"]]
    assert sum(r["samples"] for r in rows) == summary["samples"]
    assert result.detail["rate_per_s"] == 100 == summary["rate_per_s"]
    assert result.detail["rate_rule"] == "pyspy_rate=100"
    assert result.detail["nonblocking"] is True
    assert summary["processes"] == 3
    json.dumps(result.to_dict())  # JSON-ready


def test_speedscope_file(hot_run: dict[str, Any]) -> None:
    result = hot_run["result"]
    assert result.detail["speedscope"] == str(hot_run["out"])
    doc = json.loads(hot_run["out"].read_text())
    assert {"$schema", "shared", "profiles"} <= doc.keys()
    assert [p["name"] for p in doc["profiles"]] == [
        f"{r['role']} (pid {r['pid']})" for r in result.detail["processes"]
    ]
    frames = doc["shared"]["frames"]
    for profile, row in zip(doc["profiles"], result.detail["processes"], strict=True):
        assert profile["type"] == "sampled"
        assert len(profile["samples"]) == len(profile["weights"])
        assert sum(profile["weights"]) == profile["endValue"] == row["samples"]
        assert all(0 <= i < len(frames) for stack in profile["samples"] for i in stack)
    assert {"hot_in_worker_0", "hot_in_worker_1"} <= {f["name"] for f in frames}


def test_no_pyspy_left_behind(hot_run: dict[str, Any]) -> None:
    assert hot_run["recorders_during"] == 3
    assert hot_run["left_after"] == []
    assert _pyspy_children() == []


SPIN = """\
def spin_in_child():
    print("spinning", flush=True)
    while True:
        pass

spin_in_child()
"""


def _spinner() -> subprocess.Popen:
    # Return once the child is in spin_in_child, so that no sample lands in its start-up.
    proc = subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "spinning\n"
    return proc


@needs_pyspy
def test_new_worker_pid_gets_a_recorder() -> None:
    """A pid that appears after start() (a restarted worker) is recorded from then on."""
    spinners: list[subprocess.Popen] = []
    try:
        first = _spinner()
        spinners.append(first)
        second = _spinner()
        spinners.append(second)
        workers = [first.pid]
        probe = PySpyProbe()
        probe.start(Watch(worker_pids=lambda: list(workers)))
        time.sleep(0.4)
        workers.append(second.pid)
        probe.sample(time.monotonic())
        time.sleep(0.6)
        result = probe.stop()
    finally:
        for proc in spinners:
            proc.kill()
            proc.communicate()
    assert result.available, result.reason
    rows = result.detail["processes"]
    assert [(r["role"], r["pid"], r["status"]) for r in rows] == [
        ("main", os.getpid(), "ok"),
        ("worker-0", first.pid, "ok"),
        ("worker-1", second.pid, "ok"),
    ]
    for role in ("worker-0", "worker-1"):
        hot = result.detail["top"][role]["self"][0]
        assert (hot["function"], hot["file"], hot["line"]) == ("spin_in_child", "<string>", 1)
        # Every sample after "spinning" is in spin_in_child; the margin is for a sample
        # caught leaving print() and for stacks torn by --nonblocking.
        assert hot["share"] > 0.9
    assert result.detail["speedscope"] is None
    assert _pyspy_children() == []
