"""The stages probe on hand-built events (exact), on real loader runs, and the trace export."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from loadtune import DataLoader
from probes import stages
from probes.base import Probe, ProbeResult, Watch
from probes.events import BatchEvent, EventLog
from probes.stages import StagesProbe, export_chrome_trace, trace_events

# --------------------------------------------------------------------------- helpers


class FakeClock:
    """A clock that reads whatever the test set last."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _event(
    batch: int,
    worker: int,
    pid: int,
    times: tuple[float, float, float, float, float, float, float],
    wait: float,
    samples: int = 4,
    nbytes: int = 400,
    unpack: float = 0.25,
) -> BatchEvent:
    """``times`` is (dispatch, fetch_start, fetch_end, collate_end, sent, ready, taken)."""
    dispatch, fetch_start, fetch_end, collate_end, sent, ready, taken = times
    return BatchEvent(
        epoch=0,
        batch=batch,
        worker_id=worker,
        pid=pid,
        dispatch=dispatch,
        fetch_start=fetch_start,
        fetch_end=fetch_end,
        collate_end=collate_end,
        sent=sent,
        ready=ready,
        taken=taken,
        wait=wait,
        nbytes=nbytes,
        samples=samples,
        pack=sent - collate_end,
        unpack=unpack,
    )


# Four batches from two workers; worker 1 was restarted between its two batches (new pid).
# The window is [100, 110]. Per batch: queue, fetch, collate, pack, transport, wait
#   b0: 1.0, 1.5, 0.5, 0.5, 1.0, 2.0 (waited [99, 101]: 1.0 of it in the window)
#   b1: 0.0, 3.0, 1.0, 0.5, 1.0, 1.0
#   b2: 0.0, 2.0, 0.5, 0.5, 1.0, 2.0
#   b3: 2.0, 3.0, 1.0, 0.5, 1.0, 3.0
# Busy (fetch_start..sent, clipped): worker 0: [100, 100.5] + [101, 104] = 3.5 s;
# worker 1: [100, 101.5] + [104, 108.5] = 6.0 s.
B0 = _event(0, 0, 1000, (97.0, 98.0, 99.5, 100.0, 100.5, 101.0, 101.0), wait=2.0)
B1 = _event(1, 1, 2000, (97.0, 97.0, 100.0, 101.0, 101.5, 102.0, 102.0), wait=1.0)
B2 = _event(2, 0, 1000, (101.0, 101.0, 103.0, 103.5, 104.0, 104.5, 105.0), wait=2.0)
B3 = _event(3, 1, 2001, (102.0, 104.0, 107.0, 108.0, 108.5, 109.0, 109.0), 3.0, 2, 200, unpack=0.5)
BEFORE = _event(9, 0, 1000, (90.0, 90.0, 91.0, 91.5, 92.0, 92.5, 99.0), wait=0.5)
AFTER = _event(10, 0, 1000, (104.0, 105.0, 107.0, 108.0, 109.0, 110.5, 111.0), wait=1.0)


def _run_fake(log: EventLog) -> ProbeResult:
    """Drive the probe over the window [100, 110], with events arriving between samples."""
    clock = FakeClock(100.0)
    probe = StagesProbe(clock=clock)
    for e in (BEFORE, B0, B1):
        log.append(e)
    probe.start(Watch(events=log))
    probe.sample(100.0)
    log.append(B2)
    probe.sample(105.0)
    log.append(B3)
    log.append(AFTER)  # written before stop, but taken after the window ends
    clock.now = 110.0
    return probe.stop()


# --------------------------------------------------------------------------- fake clock


def test_summary_is_exact_on_hand_built_events() -> None:
    result = _run_fake(EventLog())
    s = result.summary
    exact = pytest.approx
    assert result.available and result.name == "stages"
    assert s["batches"] == 4 and s["samples"] == 14 and s["window_s"] == 10.0
    assert s["batches_per_s"] == exact(0.4) and s["samples_per_s"] == exact(1.4)
    assert s["bytes_per_s"] == exact(140.0)  # 1400 bytes over 10 s
    assert s["stall_fraction"] == exact(0.7)  # (1 + 1 + 2 + 3) / 10: b0's wait is clipped
    assert (s["wait_mean_s"], s["wait_median_s"], s["wait_p95_s"]) == exact((2.0, 2.0, 2.85))
    assert (s["fetch_mean_s"], s["fetch_median_s"], s["fetch_p95_s"]) == exact((2.375, 2.5, 3.0))
    assert (s["collate_mean_s"], s["collate_median_s"]) == exact((0.75, 0.75))
    assert (s["pack_mean_s"], s["transport_mean_s"]) == exact((0.5, 1.0))
    assert (s["queue_mean_s"], s["queue_median_s"], s["queue_p95_s"]) == exact((0.75, 0.5, 1.85))
    assert s["unpack_mean_s"] == exact(0.3125)
    assert s["workers"] == 2 and s["worker_idle_fraction_mean"] == exact((0.65 + 0.4) / 2)
    rows = {r["worker_id"]: r for r in result.detail["workers"]}
    assert result.detail["mode"] == "events"
    assert rows[0]["busy_s"] == exact(3.5) and rows[0]["idle_fraction"] == exact(0.65)
    assert rows[1]["busy_s"] == exact(6.0) and rows[1]["idle_fraction"] == exact(0.4)
    assert (rows[0]["processes"], rows[1]["processes"]) == (1, 2)  # worker 1 was restarted
    assert rows[1]["pids"] == [2000, 2001]
    assert result.detail["busy_intervals"] == {
        "0": [[0.0, 0.5], [1.0, 4.0]],
        "1": [[0.0, 1.5], [4.0, 8.5]],
    }
    (wait,) = result.series
    assert (wait.name, wait.unit) == ("wait", "s")
    assert wait.t == (1.0, 2.0, 5.0, 9.0) and wait.values == (2.0, 1.0, 2.0, 3.0)


def test_result_conforms_to_the_probe_contract() -> None:
    probe = StagesProbe()
    assert isinstance(probe, Probe)
    result = _run_fake(EventLog())
    data = json.loads(json.dumps(result.to_dict()))
    assert ProbeResult.from_dict(data) == result


def test_a_log_that_dropped_events_is_not_read_twice() -> None:
    log = EventLog(capacity=3)
    clock = FakeClock(0.0)
    probe = StagesProbe(clock=clock)
    probe.start(Watch(events=log))
    events = [
        _event(i, 0, 1, (i, i, i + 0.25, i + 0.5, i + 0.5, i + 0.5, i + 1.0), 0.5) for i in range(9)
    ]
    for e in events[:3]:
        log.append(e)
    probe.sample(0.0)
    for e in events[3:7]:  # overflows: event 3 is dropped before the probe sees it
        log.append(e)
    probe.sample(7.0)
    for e in events[7:]:  # the next read starts behind and would repeat event 6
        log.append(e)
    probe.sample(9.0)
    clock.now = 10.0
    result = probe.stop()
    assert result.summary["batches"] == 8  # 9 written, 1 never seen, none counted twice
    assert result.detail["events_dropped"] == 6
    assert result.series[0].t == (1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 8.0, 9.0)


def test_a_cleared_log_is_read_from_its_start_again() -> None:
    log = EventLog()
    clock = FakeClock(0.0)
    probe = StagesProbe(clock=clock)
    probe.start(Watch(events=log))
    log.append(_event(0, 0, 1, (0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 1.0), 0.25))
    log.append(_event(1, 0, 1, (0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.5), 0.25))
    probe.sample(0.0)
    log.clear()  # a new epoch's log, say: its total restarts at zero
    log.append(_event(0, 0, 1, (2.0, 2.0, 2.5, 2.5, 2.5, 2.5, 3.0), 0.25))
    clock.now = 4.0
    assert probe.stop().summary["batches"] == 3


def test_no_batch_in_the_window_reports_counts_but_no_stall() -> None:
    clock = FakeClock(12.0)
    probe = StagesProbe(clock=clock)
    probe.start(Watch(events=EventLog()))
    probe.sample(10.0)
    result = probe.stop()
    assert result.available
    assert result.summary == {
        "batches": 0.0,
        "samples": 0.0,
        "window_s": 2.0,
        "batches_per_s": 0.0,
        "samples_per_s": 0.0,
        "bytes_per_s": 0.0,
    }


def test_unavailable_without_events_wait_times_or_a_sample() -> None:
    probe = StagesProbe(clock=FakeClock(5.0))
    probe.start(Watch())
    probe.sample(1.0)
    result = probe.stop()
    assert not result.available and "wait_times" in result.reason and not result.summary
    probe = StagesProbe(clock=FakeClock(5.0))
    probe.start(Watch(events=EventLog()))
    result = probe.stop()
    assert not result.available and "no sample" in result.reason


def test_external_mode_uses_the_consumer_wait_times() -> None:
    waits: list[tuple[float, float]] = [(9.5, 0.5), (11.0, 2.0)]
    clock = FakeClock()
    probe = StagesProbe(clock=clock)
    probe.start(Watch(events=None, options={"wait_times": waits}))
    probe.sample(10.0)
    waits.append((13.0, 1.0))
    probe.sample(14.0)
    waits.extend([(16.0, 0.5), (21.0, 1.0)])
    clock.now = 20.0
    result = probe.stop()
    s = result.summary
    assert result.available and result.detail == {"mode": "external"}
    assert set(s) == {
        "batches",
        "window_s",
        "batches_per_s",
        "stall_fraction",
        "wait_mean_s",
        "wait_median_s",
        "wait_p95_s",
    }
    assert s["batches"] == 3 and s["window_s"] == 10.0 and s["batches_per_s"] == 0.3
    # (11, 2.0) waited [9, 11]: 1.0 s of it is in the window; then 1.0 and 0.5.
    assert s["stall_fraction"] == pytest.approx(0.25)
    assert s["wait_mean_s"] == pytest.approx(3.5 / 3) and s["wait_median_s"] == 1.0
    assert result.series[0].t == (1.0, 3.0, 6.0)


# --------------------------------------------------------------------------- real loader


class Sleepy(Dataset):
    """Sample ``i`` takes ``delay`` seconds of sleep and is a small float tensor."""

    def __init__(self, n: int, delay: float) -> None:
        self.n = n
        self.delay = delay

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        return torch.full((16,), float(i))


BATCH = 4
DELAY = 0.02


def _profile(loader: DataLoader, consume_s: float) -> tuple[ProbeResult, list[int], EventLog]:
    """Take a batch from every worker (so all have started), then run the probe over the rest.

    Starting workers is the profiler's time to first batch, not a stall in steady state.
    """
    it = iter(loader)
    for _ in range(max(1, loader.num_workers)):
        next(it)
    pids = [w.pid for w in getattr(it, "_workers", [])]
    probe = StagesProbe()
    probe.start(Watch(worker_pids=lambda: pids, events=loader.events))
    probe.sample(time.monotonic())
    for _ in it:
        if consume_s:
            time.sleep(consume_s)
        probe.sample(time.monotonic())  # the sampler thread's job, done inline here
    return probe.stop(), pids, loader.events


@pytest.fixture(scope="module")
def data_bound() -> tuple[ProbeResult, list[int], EventLog]:
    """Two workers sleeping 20 ms per sample, a consumer that does nothing."""
    loader = DataLoader(Sleepy(10 * BATCH, DELAY), batch_size=BATCH, num_workers=2)
    return _profile(loader, consume_s=0.0)


def test_a_data_bound_loader_stalls_and_fetch_is_the_sleep(data_bound: tuple) -> None:
    result, pids, _ = data_bound
    s = result.summary
    assert s["batches"] == 8 and s["samples"] == 8 * BATCH
    # Each worker needs 80 ms a batch and the consumer needs nothing: it waits nearly
    # always (only the batches queued before the window came without a wait).
    assert s["stall_fraction"] > 0.5
    # time.sleep never returns early. It wakes late on a loaded machine (up to 40% late
    # with three CPU hogs on two cores); twice the sleep would mean more than the fetch
    # was counted (a worker's queue or the pipe: a whole batch interval or more).
    assert BATCH * DELAY <= s["fetch_median_s"] < 2 * BATCH * DELAY
    assert s["fetch_mean_s"] >= BATCH * DELAY
    rows = result.detail["workers"]
    assert sorted(p for r in rows for p in r["pids"]) == sorted(pids)
    assert [r["processes"] for r in rows] == [1, 1]
    assert [r["batches"] for r in rows] == [4, 4]  # round robin over batches 2..9
    assert all(0.0 <= r["idle_fraction"] <= 1.0 for r in rows)


def test_a_slow_consumer_barely_stalls() -> None:
    loader = DataLoader(Sleepy(16 * BATCH, 0.0), batch_size=BATCH, num_workers=2)
    result, _, _ = _profile(loader, consume_s=0.05)
    s = result.summary
    assert s["batches"] == 14
    # Batches take ~1 ms to make and the consumer spends 50 ms on each: they are ready.
    assert s["stall_fraction"] < 0.2
    assert s["window_s"] >= 14 * 0.05


def test_in_process_loading_is_reported_as_the_main_process() -> None:
    loader = DataLoader(Sleepy(3 * BATCH, 0.0), batch_size=BATCH, num_workers=0)
    result, _, events = _profile(loader, consume_s=0.0)
    s = result.summary
    assert s["batches"] == 2 and s["pack_mean_s"] == 0.0 and s["unpack_mean_s"] == 0.0
    assert [r["worker_id"] for r in result.detail["workers"]] == [-1]
    assert "workers" not in result.summary  # the main process is not a loader worker
    names = {e["args"]["name"] for e in trace_events(events) if e["name"] == "thread_name"}
    assert names == {"main", "in-process fetch"}


# --------------------------------------------------------------------------- trace export


def _tracks(trace: list[dict]) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in trace if e["name"] == "thread_name"}


def test_trace_puts_each_stage_on_its_worker_track() -> None:
    events = [B0, B1, B2, B3]
    trace = trace_events(events, t0=97.0)
    assert trace[0] == {
        "ph": "M",
        "name": "process_name",
        "pid": 1,
        "args": {"name": "loadtune loader"},
    }
    tracks = _tracks(trace)
    assert sorted(tracks.values()) == ["main", "worker 0", "worker 1"]
    slices = [e for e in trace if e["ph"] == "X"]
    for e in events:
        (fetch,) = [s for s in slices if s["name"] == "fetch" and s["args"]["batch"] == e.batch]
        assert tracks[fetch["tid"]] == f"worker {e.worker_id}"
        assert fetch["ts"] == pytest.approx((e.fetch_start - 97.0) * 1e6)
        assert fetch["dur"] == pytest.approx(e.fetch * 1e6)
        assert fetch["args"] == {
            "epoch": 0,
            "batch": e.batch,
            "samples": e.samples,
            "bytes": e.nbytes,
            "pid": e.pid,
        }
        (wait,) = [s for s in slices if s["name"] == "wait" and s["args"]["batch"] == e.batch]
        assert tracks[wait["tid"]] == "main" and wait["dur"] == pytest.approx(e.wait * 1e6)
        marks = [m for m in trace if m["ph"] == "i" and m["args"]["batch"] == e.batch]
        assert {m["name"]: m["ts"] for m in marks} == pytest.approx(
            {"ready": (e.ready - 97.0) * 1e6, "taken": (e.taken - 97.0) * 1e6}
        )
    assert sorted(s["name"] for s in slices) == sorted(["fetch", "collate", "pack", "wait"] * 4)
    for s in slices:
        assert isinstance(s["ts"], (int, float)) and s["ts"] >= 0
        assert isinstance(s["dur"], (int, float)) and s["dur"] >= 0


def test_trace_of_a_real_run_has_every_batch(data_bound: tuple) -> None:
    _, pids, events = data_bound
    trace = trace_events(events)  # t0 defaults to the earliest moment: nothing negative
    tracks = _tracks(trace)
    fetches = [e for e in trace if e["name"] == "fetch"]
    assert len(fetches) == len(events) == 10
    for event, fetch in zip(sorted(events, key=lambda e: e.batch), fetches, strict=True):
        assert tracks[fetch["tid"]] == f"worker {event.worker_id}"
        assert fetch["args"]["pid"] == pids[event.worker_id]
    assert all(e["ts"] >= 0 and e.get("dur", 0) >= 0 for e in trace if e["ph"] != "M")


def test_export_writes_a_loadable_trace(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    export_chrome_trace([B0, B1, B2, B3], path)
    data = json.loads(path.read_text())
    assert data["displayTimeUnit"] == "ms"
    assert data["traceEvents"] == json.loads(json.dumps(trace_events([B0, B1, B2, B3])))
    assert os.listdir(tmp_path) == ["trace.json"]


def test_export_into_a_missing_directory_raises_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        export_chrome_trace([B0], tmp_path / "missing" / "trace.json")
    assert os.listdir(tmp_path) == []


def test_a_failed_export_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "trace.json"
    path.write_text("old")

    def refuse(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(stages.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        export_chrome_trace([B0, B1], path)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["trace.json"]
