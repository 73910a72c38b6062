"""IoProbe: exact bytes on a fake clock, loader workers reading files of known size, and
counters that cannot be read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from torch.utils.data import Dataset

from loadtune import DataLoader
from probes.base import Probe, ProbeResult, Watch
from probes.io import IoProbe

# Whatever else this process reads or writes between two samples (pytest, torch's threads):
# nothing in these tests, but a little slack costs no precision that matters here.
SLACK = 16 << 10
# The loader's task pipe: every batch's task is a short pickle the worker reads with read().
TASK_BYTES = 1 << 10


class Files(Dataset):
    """Sample i reads file i whole, through read() (so the page cache may serve it)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> int:
        with open(self.paths[i], "rb") as f:
            return len(f.read())


def write_files(folder: Path, count: int) -> list[Path]:
    """``count`` files of different, known sizes (100 kB and up)."""
    paths = []
    for i in range(count):
        path = folder / f"{i}.bin"
        path.write_bytes(os.urandom(100_000 + 1_000 * i))
        paths.append(path)
    return paths


def test_is_a_probe() -> None:
    assert isinstance(IoProbe(), Probe)
    assert IoProbe().name == "io"


def test_fake_clock_counts_exact_bytes_of_this_process(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3 << 20))
    probe = IoProbe()
    probe.start(Watch())
    probe.sample(50.0)
    with open(source, "rb", buffering=0) as f:
        assert len(f.read()) == 3 << 20
    probe.sample(52.0)
    with open(tmp_path / "out.bin", "wb", buffering=0) as f:
        f.write(b"x" * 500_000)
    probe.sample(54.0)
    result = probe.stop()

    assert result.available and result.name == "io"
    s = result.summary
    assert 3 << 20 <= s["main_read_bytes"] <= (3 << 20) + SLACK
    assert 500_000 <= s["main_write_bytes"] <= 500_000 + SLACK
    assert s["main_read_ops"] >= 1 and s["main_write_ops"] >= 1
    assert s["window_s"] == 4.0
    assert "workers_read_bytes" not in s  # no worker was watched: nothing measured
    (row,) = result.detail["processes"]
    assert (row["role"], row["pid"], row["samples"]) == ("main", os.getpid(), 3)
    assert row["read_bytes"] == s["main_read_bytes"]
    assert result.detail["counters"]["read_bytes"] == "read_chars"

    series = {x.name: x for x in result.series}
    reads = series["main_read_bytes_per_s"]
    assert reads.unit == "B/s" and reads.t == (2.0, 4.0)
    # 3 MiB in the first 2 fake seconds, nothing read in the next 2.
    assert reads.values[0] == pytest.approx((3 << 20) / 2, abs=SLACK)
    assert reads.values[1] == pytest.approx(0, abs=SLACK)
    writes = series["main_write_bytes_per_s"]
    assert writes.values[1] == pytest.approx(500_000 / 2, abs=SLACK)
    if "iowait" in result.detail:  # a system without iowait says so and reports no number
        assert "iowait_pct" not in s
    else:
        assert 0 <= s["iowait_pct"] <= s["iowait_peak_pct"] <= 100
        assert series["iowait_pct"].unit == "%"


def test_result_round_trips_through_json() -> None:
    probe = IoProbe()
    probe.start(Watch())
    for now in (1.0, 2.0, 3.0):
        probe.sample(now)
    result = probe.stop()
    assert ProbeResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_fewer_than_two_samples_is_unavailable() -> None:
    probe = IoProbe()
    probe.start(Watch())
    probe.sample(1.0)
    result = probe.stop()
    assert not result.available and "fewer than two samples" in result.reason


def test_denied_counters_make_the_probe_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(self: psutil.Process) -> None:
        raise psutil.AccessDenied(self.pid, msg="/proc/<pid>/io")

    monkeypatch.setattr(psutil.Process, "io_counters", denied)
    probe = IoProbe()
    probe.start(Watch())
    probe.sample(0.0)
    probe.sample(1.0)
    result = probe.stop()
    assert not result.available
    assert "access denied" in result.reason and "main" in result.reason
    assert result.summary == {}


def test_platform_without_counters_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(psutil.Process, "io_counters")  # as on macOS
    probe = IoProbe()
    probe.start(Watch())
    probe.sample(0.0)
    probe.sample(1.0)
    result = probe.stop()
    assert not result.available and "not supported" in result.reason


def test_vanished_and_missing_pids_do_not_raise() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        probe = IoProbe()
        probe.start(Watch(worker_pids=lambda: [child.pid, gone.pid]))
        probe.sample(0.0)
        probe.sample(1.0)
        child.kill()
        child.wait()
        probe.sample(2.0)
        result = probe.stop()
    finally:
        child.kill()
        child.wait()
    rows = {row["role"]: row for row in result.detail["processes"]}
    assert set(rows) == {"main", "worker-0"}
    assert rows["worker-0"]["alive"] is False and rows["worker-0"]["samples"] == 2


def test_workers_read_exactly_the_files(tmp_path: Path) -> None:
    paths = write_files(tmp_path, 24)
    sizes = [p.stat().st_size for p in paths]
    loader = DataLoader(Files(paths), batch_size=3, num_workers=2, persistent_workers=True)
    # A first epoch starts the (persistent) workers, so their start-up reads (torch reads
    # its own sources while seeding) fall before the probe starts.
    it = iter(loader)
    assert [b.tolist() for b in it] == [sizes[b : b + 3] for b in range(0, 24, 3)]
    probe = IoProbe()
    probe.start(Watch(worker_pids=lambda: [w.pid for w in it._workers]))
    probe.sample(time.monotonic())
    assert iter(loader) is it  # the second epoch, on the same workers
    for _ in range(len(loader)):
        next(it)
        probe.sample(time.monotonic())
    result = probe.stop()
    assert list(it) == []

    rows = {row["role"]: row for row in result.detail["processes"]}
    for worker in (0, 1):
        # Round-robin dispatch: batch k (samples 3k..3k+2) goes to worker k mod 2.
        expected = sum(sizes[i] for i in range(24) if (i // 3) % 2 == worker)
        read = rows[f"worker-{worker}"]["read_bytes"]
        assert expected <= read <= expected + 8 * TASK_BYTES
    assert sum(sizes) <= result.summary["workers_read_bytes"] <= sum(sizes) + 16 * TASK_BYTES
    assert result.summary["workers_read_bytes_per_s"] == pytest.approx(
        result.summary["workers_read_bytes"] / result.summary["window_s"]
    )
    names = {s.name for s in result.series}
    assert {"worker-0_read_bytes_per_s", "worker-1_write_bytes_per_s"} <= names


def test_workers_born_while_watched_count_from_zero(tmp_path: Path) -> None:
    paths = write_files(tmp_path, 12)
    loader = DataLoader(Files(paths), batch_size=3, num_workers=2)
    live: list = []
    probe = IoProbe()
    probe.start(Watch(worker_pids=lambda: [w.pid for w in live[0]._workers] if live else []))
    probe.sample(time.monotonic())
    it = iter(loader)  # workers start reading before the probe first sees them
    live.append(it)
    for _ in range(len(loader)):
        next(it)
        probe.sample(time.monotonic())
    result = probe.stop()
    assert list(it) == []

    # Counted from the workers' birth: every file is in, plus their start-up reads.
    assert result.summary["workers_read_bytes"] >= sum(p.stat().st_size for p in paths)
