"""MemoryProbe: exact growth on a fake clock, loader workers that allocate, that copy
inherited objects on read, or that stay flat; /dev/shm from another path; denied readings."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from torch.utils.data import Dataset

from loadtune import DataLoader
from probes.base import Probe, ProbeResult, Watch
from probes.memory import MemoryProbe, growth

MIB = 1 << 20

# USS/PSS at every sample (by default the probe reads them at most once a second, within a
# CPU budget)
EVERY = {"memory_full_interval": 0, "memory_full_budget": 0}


class Grow(Dataset):
    """Each sample allocates and keeps 5 MiB (written, so it is resident)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.kept: list[np.ndarray] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        self.kept.append(np.ones(5 * MIB, dtype=np.uint8))
        time.sleep(0.005)
        return i


class Touch(Dataset):
    """Sample i reads its own slice of a big list of floats built in the parent.

    Reading a float takes a reference, which writes its refcount: the page holding it turns
    private in the worker (NOTE [ Copy-on-read ]). 100 000 floats are about 2.3 MiB.
    """

    def __init__(self, n: int, per_sample: int = 100_000) -> None:
        self.n, self.per_sample = n, per_sample
        self.items = [float(i) for i in range(n * per_sample)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        for _ in self.items[i * self.per_sample : (i + 1) * self.per_sample]:
            pass
        time.sleep(0.005)
        return i


class Flat(Dataset):
    """Allocates nothing that lasts."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        time.sleep(0.005)
        return i


def run_loader(dataset: Dataset) -> ProbeResult:
    """Iterate a 2-worker loader (batches of 2), sampling after every batch."""
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    live: list = []
    probe = MemoryProbe()
    probe.start(
        Watch(worker_pids=lambda: [w.pid for w in live[0]._workers] if live else [], options=EVERY)
    )
    probe.sample(time.monotonic())
    it = iter(loader)
    live.append(it)
    for _ in range(len(loader)):
        next(it)
        probe.sample(time.monotonic())
    result = probe.stop()
    assert list(it) == []
    return result


def growth_rows(result: ProbeResult) -> dict[str, dict]:
    rows = {row["role"]: row for row in result.detail["growth"]}
    assert set(rows) == {"worker-0", "worker-1"}
    return rows


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    """A child process that does nothing, to stand in for a process the probe watches."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    child.kill()
    child.wait()


def test_is_a_probe() -> None:
    assert isinstance(MemoryProbe(), Probe)
    assert MemoryProbe().name == "memory"


def test_fake_clock_measures_exact_growth(sleeper: subprocess.Popen) -> None:
    # This process plays worker-0 and allocates 16 MiB per fake second. Earlier tests'
    # garbage is collected first, so that it is not freed in the middle of the measurement.
    gc.collect()
    probe = MemoryProbe()
    probe.start(Watch(main_pid=sleeper.pid, worker_pids=lambda: [os.getpid()], options=EVERY))
    kept = []
    for step in range(5):
        probe.sample(10.0 + step)
        kept.append(b"\x01" * (16 * MIB))
    result = probe.stop()
    del kept

    (row,) = result.detail["growth"]
    assert (row["role"], row["pid"], row["samples"]) == ("worker-0", os.getpid(), 5)
    # 4 intervals of 16 MiB between the first and the last sample; the interpreter's own
    # allocations and frees (pytest's, earlier tests' garbage) move USS by a MiB or so.
    assert row["uss_growth_bytes"] == pytest.approx(64 * MIB, abs=2 * MIB)
    assert row["uss_slope_bytes_per_s"] == pytest.approx(16 * MIB, abs=MIB)
    assert row["rss_growth_bytes"] == pytest.approx(row["uss_growth_bytes"], rel=0.05)
    assert row["steady_growth"] is True and row["copy_on_read"] is False
    s = result.summary
    assert s["worker-0_uss_growth_bytes"] == row["uss_growth_bytes"]
    assert s["worker-0_uss_slope_bytes_per_s"] == row["uss_slope_bytes_per_s"]
    assert s["peak_total_pss_bytes"] >= s["peak_workers_uss_bytes"] >= row["uss_last_bytes"]
    assert s["peak_total_rss_bytes"] >= s["peak_total_pss_bytes"]
    assert 0 < s["min_available_bytes"] <= psutil.virtual_memory().total
    assert result.detail["copy_on_read"] is False

    series = {x.name: x for x in result.series}
    uss = series["worker-0_uss_bytes"]
    assert uss.unit == "B" and uss.t == (0.0, 1.0, 2.0, 3.0, 4.0)
    assert {"main_rss_bytes", "main_pss_bytes", "total_pss_bytes", "available_bytes"} <= set(series)
    roles = {row["role"] for row in result.detail["processes"]}
    assert roles == {"main", "worker-0"}


def test_result_round_trips_through_json() -> None:
    probe = MemoryProbe()
    probe.start(Watch(worker_pids=lambda: [os.getpid()], options=EVERY))
    for now in (1.0, 2.0, 3.0, 4.0):
        probe.sample(now)
    result = probe.stop()
    assert ProbeResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_shm_is_read_from_the_given_path(tmp_path: Path) -> None:
    def used() -> int:
        st = os.statvfs(tmp_path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    before = used()
    probe = MemoryProbe()
    probe.start(Watch(options={"shm_path": str(tmp_path)}))
    probe.sample(0.0)
    probe.sample(1.0)
    result = probe.stop()
    after = used()

    assert result.detail["shm_path"] == str(tmp_path)
    assert "shm" not in result.detail
    # The file system is shared with other work; it moves little within a second.
    peak = result.summary["peak_shm_used_bytes"]
    assert min(before, after) - 64 * MIB <= peak <= max(before, after) + 64 * MIB
    st = os.statvfs(tmp_path)
    assert result.summary["shm_total_bytes"] == st.f_blocks * st.f_frsize
    assert next(s for s in result.series if s.name == "shm_used_bytes").t == (0.0, 1.0)


def test_missing_shm_path_is_reported_not_measured(tmp_path: Path) -> None:
    probe = MemoryProbe()
    probe.start(Watch(options={"shm_path": str(tmp_path / "absent")}))
    probe.sample(0.0)
    result = probe.stop()
    assert result.available
    assert "peak_shm_used_bytes" not in result.summary
    assert "absent" in result.detail["shm"]


def test_denied_full_info_falls_back_to_rss(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(self: psutil.Process) -> None:
        raise psutil.AccessDenied(self.pid, msg="smaps")

    monkeypatch.setattr(psutil.Process, "memory_full_info", denied)
    probe = MemoryProbe()
    probe.start(Watch())
    probe.sample(0.0)
    probe.sample(1.0)
    result = probe.stop()
    assert result.available
    assert result.summary["peak_total_rss_bytes"] > 0
    assert "peak_total_pss_bytes" not in result.summary
    assert "RSS only" in result.detail["uss_pss"][str(os.getpid())]
    (row,) = result.detail["processes"]
    assert "peak_uss_bytes" not in row and row["peak_rss_bytes"] > 0


def test_vanished_and_missing_pids_do_not_raise(sleeper: subprocess.Popen) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    probe = MemoryProbe()
    probe.start(Watch(worker_pids=lambda: [sleeper.pid, gone.pid], options=EVERY))
    probe.sample(0.0)
    probe.sample(1.0)
    sleeper.kill()
    sleeper.wait()
    probe.sample(2.0)
    result = probe.stop()
    rows = {row["role"]: row for row in result.detail["processes"]}
    assert set(rows) == {"main", "worker-0"}
    assert rows["worker-0"]["alive"] is False and rows["worker-0"]["samples"] == 2


@pytest.mark.parametrize(
    ("uss", "rss", "steady", "cow"),
    [
        # shared pages turning private: USS climbs, RSS stays
        ([100, 110, 120, 130, 140, 150], [300] * 6, True, True),
        # allocation: both climb together
        ([100, 110, 120, 130, 140, 150], [300, 310, 320, 330, 340, 350], True, False),
        # a jump at start-up, then flat: not growth
        ([100, 140, 150, 150, 150, 150], [300] * 6, False, False),
        # growth, then flat once the worker is done with its share
        ([100, 110, 120, 130, 140, 150, 150, 150, 150, 150, 150], [300] * 11, True, True),
        # too little to tell from noise
        ([100, 101, 102, 103, 104, 105], [300] * 6, False, False),
        # shrinking
        ([150, 140, 130, 120, 110, 100], [300] * 6, False, False),
    ],
)
def test_growth_tells_copy_on_read_from_allocation(
    uss: list[int], rss: list[int], steady: bool, cow: bool
) -> None:
    t = [0.5 * i for i in range(len(uss))]
    row = growth(t, [u * MIB for u in uss], [r * MIB for r in rss])
    assert row["steady_growth"] is steady and row["copy_on_read"] is cow
    assert row["uss_growth_bytes"] == (uss[-1] - uss[0]) * MIB


def test_growth_slope_is_least_squares() -> None:
    row = growth([0.0, 1.0, 2.0, 3.0], [0.0, 2.0 * MIB, 2.0 * MIB, 6.0 * MIB], [0.0] * 4)
    # cov(t, y) / var(t) = 9.0 / 5.0 MiB/s, by hand
    assert row["uss_slope_bytes_per_s"] == pytest.approx(1.8 * MIB)
    assert growth([1.0], [5.0], [5.0])["uss_slope_bytes_per_s"] is None


def test_workers_that_allocate_grow_steadily_without_copy_on_read() -> None:
    gc.collect()  # forked workers inherit no pending garbage to free mid-measurement
    result = run_loader(Grow(40))

    for role, row in growth_rows(result).items():
        # 20 samples of 5 MiB each; up to 3 batches (6 samples) may be done before the
        # worker's first reading (its 2 prefetched ones, and the one sent when the main
        # process took the first batch).
        assert 68 * MIB <= row["uss_growth_bytes"] <= 101 * MIB, role
        assert row["uss_slope_bytes_per_s"] > 0
        assert row["rss_growth_bytes"] == pytest.approx(row["uss_growth_bytes"], rel=0.1)
        assert row["steady_growth"] is True and row["copy_on_read"] is False
        assert result.summary[f"{role}_uss_slope_bytes_per_s"] > 0
    assert result.detail["copy_on_read"] is False


def test_workers_that_read_inherited_objects_are_flagged_copy_on_read() -> None:
    result = run_loader(Touch(40))

    for role, row in growth_rows(result).items():
        # 20 slices of ~2.3 MiB each turn private; the first reading may come after 4.
        assert row["uss_growth_bytes"] >= 30 * MIB, role
        # The pages were resident since the fork: anonymous RSS moves little (temporary
        # slices); the shared-memory blocks the batches travel in are not anonymous.
        assert row["rss_growth_bytes"] < 0.3 * row["uss_growth_bytes"]
        assert row["copy_on_read"] is True
    assert result.detail["copy_on_read"] is True
    assert result.detail["copy_on_read_workers"] == ["worker-0", "worker-1"]


def test_flat_workers_are_not_flagged() -> None:
    result = run_loader(Flat(40))

    for row in growth_rows(result).values():
        assert abs(row["uss_growth_bytes"]) < 4 * MIB
        assert row["steady_growth"] is False and row["copy_on_read"] is False
    assert result.detail["copy_on_read"] is False


class FakeCpu:
    """A CPU clock on which every USS/PSS reading of all processes costs ``cost`` seconds."""

    def __init__(self, cost: float) -> None:
        self.cost, self.now = cost, 0.0

    def __call__(self) -> float:
        # the probe reads the clock before and after each reading, and nowhere else
        self.now += self.cost
        return self.now


def test_uss_and_pss_are_read_once_per_interval_rss_every_sample() -> None:
    probe = MemoryProbe(cpu_clock=FakeCpu(0.0))
    probe.start(Watch(options={"memory_full_interval": 1.0}))
    for k in range(11):  # 0.0, 0.1, ... 1.0 s on a fake clock
        probe.sample(500.0 + 0.1 * k)
    main = probe._procs[os.getpid()]
    assert len(main.t) == 11 and len(main.rss) == 11
    assert main.full_t == [0.0, 1.0] and len(main.uss) == 2
    result = probe.stop()  # the last sample read USS already: nothing is read again
    assert result.detail["uss_pss_readings"] == 2
    assert main.full_t == [0.0, 1.0] and len(main.t) == 11


def test_uss_and_pss_readings_keep_within_their_cpu_budget() -> None:
    # Each reading costs 12.5 ms of CPU; at 0.5% of a core the next waits 2.5 s.
    probe = MemoryProbe(cpu_clock=FakeCpu(0.0125))
    probe.start(Watch(options={"memory_full_interval": 1.0, "memory_full_budget": 0.005}))
    for k in range(11):  # 0, 1, ... 10 s on a fake clock
        probe.sample(700.0 + k)
    main = probe._procs[os.getpid()]
    assert main.full_t == [0.0, 3.0, 6.0, 9.0]
    assert main.t == [float(k) for k in range(11)]
    result = probe.stop()
    # stop() reads once more for the last sample (t = 10), which then has all three
    assert main.full_t == [0.0, 3.0, 6.0, 9.0, 10.0]
    assert main.t == [float(k) for k in range(11)] and len(main.rss) == 11
    assert result.detail["uss_pss_readings"] == 5
    assert result.detail["uss_pss_cpu_s"] == pytest.approx(5 * 0.0125)
    series = {x.name: x for x in result.series}
    assert series["main_uss_bytes"].t == (0.0, 3.0, 6.0, 9.0, 10.0)
    assert series["main_pss_bytes"].t == (0.0, 3.0, 6.0, 9.0, 10.0)
    assert series["main_rss_bytes"].t == tuple(float(k) for k in range(11))
    assert series["total_pss_bytes"].t == (0.0, 3.0, 6.0, 9.0, 10.0)


def test_budget_zero_reads_uss_and_pss_at_every_interval() -> None:
    probe = MemoryProbe(cpu_clock=FakeCpu(10.0))  # absurdly dear, but no budget
    probe.start(Watch(options={"memory_full_interval": 2.0, "memory_full_budget": 0}))
    for k in range(5):
        probe.sample(900.0 + k)
    main = probe._procs[os.getpid()]
    assert main.full_t == [0.0, 2.0, 4.0]
