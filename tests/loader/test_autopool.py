"""num_workers="auto": the controller on synthetic streams (fake clock), and the real pool.

The controller tests feed :class:`PoolController` the BatchEvents a loader in a known
steady state would write (a simple pipeline model: each batch takes ``work_s`` of a
worker, of which ``cpu`` is CPU; CPU beyond the free cores stretches every batch and
shows as run-queue wait; the consumer spends ``step_s`` per batch outside ``__next__``)
and check each decision it takes, with the clock the test drives.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from loadtune import DataLoader
from loadtune.loader._autopool import PoolController, PoolSettings
from loadtune.loader._resize import default_max_workers
from probes.base import Watch
from probes.events import BatchEvent, EventLog, PoolEvent
from probes.stages import StagesProbe, export_chrome_trace, trace_events

from . import datasets as ds

# ----------------------------------------------------------------------------- the model


@dataclass
class Pipeline:
    """A loader's steady state, as a function of the pool's size."""

    work_s: float  # one batch's fetch + collate + pack on a free core
    cpu: float  # the part of it that is CPU; the rest waits (I/O)
    step_s: float  # the consumer's time per batch outside __next__
    cores: float = 2.0  # cores free for the workers
    cap: int | None = None  # no gain past this many workers (memory bandwidth, a lock)


class Sim:
    """Drives a controller with the events and system readings of a :class:`Pipeline`."""

    def __init__(
        self,
        ctl: PoolController,
        pipe: Pipeline,
        *,
        idle_noise: Callable[[float], float] | None = None,
        jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.ctl = ctl
        self.pipe = pipe
        self.t = 0.0
        self.batch = 0
        self.idle_total = 0.0
        self.cpu: dict[int, float] = {}
        self.runq: dict[int, float] = {}
        self.idle_noise = idle_noise
        self.jitter = jitter
        self.rng = random.Random(seed)
        self.changes: list[PoolEvent] = []
        self.sizes: list[int] = []
        self.next_sys = 0.0

    def run(self, until: float) -> list[PoolEvent]:
        p = self.pipe
        while self.t < until:
            n = self.ctl.workers
            self.sizes.append(n)
            useful = min(n, p.cap) if p.cap is not None else n
            unhindered = min(useful / p.work_s, 1.0 / p.step_s)
            # CPU asked for beyond the free cores stretches every batch: run-queue wait
            stretch = max(1.0, unhindered * p.work_s * p.cpu / p.cores)
            wall = p.work_s * stretch
            if self.jitter:
                wall *= 1 + self.rng.uniform(-self.jitter, self.jitter)
            rate = min(useful / wall, 1.0 / p.step_s)
            dt = 1.0 / rate
            used = min(p.cores, rate * p.work_s * p.cpu)
            idle = p.cores - used
            if self.idle_noise is not None:
                idle = max(0.0, idle + self.idle_noise(self.t))
            self.t += dt
            self.idle_total += idle * dt
            pid = 1000 + self.batch % n
            self.cpu[pid] = self.cpu.get(pid, 0.0) + p.work_s * p.cpu
            self.runq[pid] = self.runq.get(pid, 0.0) + (wall - p.work_s) * p.cpu
            event = BatchEvent(
                epoch=0,
                batch=self.batch,
                worker_id=self.batch % n,
                pid=pid,
                dispatch=self.t - wall,
                fetch_start=self.t - wall,
                fetch_end=self.t,
                collate_end=self.t,
                sent=self.t,
                ready=self.t,
                taken=self.t,
                wait=max(0.0, dt - p.step_s),
                nbytes=1024,
                samples=4,
                pack=0.0,
                unpack=0.0,
                worker_cpu=self.cpu[pid],
                worker_runq=self.runq[pid],
            )
            self.batch += 1
            self.ctl.observe(event)
            if self.t >= self.next_sys:
                self.ctl.observe_system(self.t, self.idle_total, None)
                self.next_sys = self.t + 0.1
            self.changes.extend(self.ctl.decide(self.t))
        return self.changes


def controller(workers: int, max_workers: int = 8, cores: float = 2.0, **kw: Any) -> PoolController:
    return PoolController(
        workers=workers, max_workers=max_workers, prefetch=2, now=0.0, cores=cores, **kw
    )


def steps(changes: list[PoolEvent]) -> list[tuple[int, int]]:
    return [(c.before, c.after) for c in changes]


# ----------------------------------------------------------------------------- decisions


def test_grows_while_the_consumer_waits_and_cores_are_idle() -> None:
    ctl = controller(2, max_workers=16, cores=4)
    changes = Sim(ctl, Pipeline(work_s=0.04, cpu=1.0, step_s=0.001, cores=4)).run(20)
    assert steps(changes) == [(2, 3), (3, 4)]  # 4 cores: no further
    assert all(c.setting == "num_workers" for c in changes)
    first = changes[0]
    assert first.reason == (
        "the consumer waited 95% of 0.16 s while 2.0 of 2 workers were busy and 2.0 cores were idle"
    )
    assert first.measured["stall"] == pytest.approx(0.95, abs=0.01)
    assert first.measured["idle_cores"] == pytest.approx(2.0, abs=0.05)
    assert (
        "2.0 of 3 workers" not in changes[1].reason and "1.0 cores were idle" in changes[1].reason
    )


def test_grows_past_the_cores_when_workers_wait_on_io() -> None:
    ctl = controller(2, max_workers=8, cores=2)
    changes = Sim(ctl, Pipeline(work_s=0.05, cpu=0.05, step_s=0.001)).run(20)
    assert steps(changes) == [(n, n + 1) for n in range(2, 8)]
    for c in changes:
        assert "mostly waiting (CPU 5%, waiting for a CPU 0% of their busy time)" in c.reason
        assert c.reason.endswith("on I/O more workers than cores pay")
    # one step at a time, and no two changes closer than the cool-down plus two windows
    gaps = [b.time - a.time for a, b in itertools.pairwise(changes)]
    assert min(gaps) >= 0.15 + 2 * 0.15


def test_stays_within_max_workers_and_above_one() -> None:
    ctl = controller(2, max_workers=3)
    changes = Sim(ctl, Pipeline(work_s=0.05, cpu=0.05, step_s=0.001)).run(15)
    assert steps(changes) == [(2, 3)]
    ctl = controller(1, max_workers=3)
    assert Sim(ctl, Pipeline(work_s=0.001, cpu=1.0, step_s=0.05)).run(15) == []
    assert ctl.workers == 1


def test_shrinks_when_workers_sit_idle() -> None:
    ctl = controller(4, max_workers=8)
    sim = Sim(ctl, Pipeline(work_s=0.01, cpu=1.0, step_s=0.05))
    changes = sim.run(20)
    assert steps(changes) == [(4, 3), (3, 2), (2, 1)]
    assert changes[0].reason == (
        "workers idle: 0.2 of 4 workers were busy and the consumer waited 0% of "
        f"{changes[0].measured['window_s']:.2f} s; 3 would be 7% busy"
    )
    assert changes[-1].reason.endswith("1 would be 20% busy")


def test_shrinks_to_the_cores_when_oversubscribed_workers_compute() -> None:
    ctl = controller(4, max_workers=8)
    changes = Sim(ctl, Pipeline(work_s=0.02, cpu=1.0, step_s=0.001)).run(20)
    assert steps(changes) == [(4, 3), (3, 2)]
    assert changes[0].reason.startswith("4 workers on 2 cores compute (CPU 50%, waiting for")
    assert changes[0].reason.endswith("with 0.0 cores idle: more workers than cores do not pay")


def test_shrinks_when_other_processes_hold_the_cores() -> None:
    # the controller sees 2 cores, but others leave the workers 0.8 of one: they queue
    ctl = controller(2, max_workers=8, cores=2)
    changes = Sim(ctl, Pipeline(work_s=0.02, cpu=1.0, step_s=0.001, cores=0.8)).run(10)
    assert steps(changes) == [(2, 1)]
    assert changes[0].reason == (
        "2 workers wait for a CPU longer than they run (CPU 40%, waiting for a CPU 60% of "
        "their busy time) with 0.0 cores idle: the pool has more workers than the cores it gets"
    )


def test_a_grow_that_does_not_pay_is_undone_and_not_retried_at_once() -> None:
    # two workers saturate something other than the cores: a third adds nothing
    ctl = controller(2, max_workers=8, cores=4)
    changes = Sim(ctl, Pipeline(work_s=0.04, cpu=1.0, step_s=0.001, cores=4, cap=2)).run(8)
    assert steps(changes) == [(2, 3), (3, 2), (2, 3), (3, 2)]
    assert re.fullmatch(
        r"growing 2 -> 3 did not pay: 5\d\.\d -> 5\d\.\d batches/s \(needed \+12%\); "
        r"back to 2 for 5 s",
        changes[1].reason,
    )
    assert changes[2].time - changes[1].time >= 5.0  # the retry waits out retry_s
    # a failed first look is confirmed over as many windows again before the undo
    assert changes[1].time - changes[0].time >= 0.15 + 4 * 0.15
    assert changes[1].measured["batches_per_s_before"] == pytest.approx(50.0, rel=0.05)


def test_new_samples_lift_the_bar_on_an_undone_step() -> None:
    ctl = controller(2, max_workers=8, cores=4)
    sim = Sim(ctl, Pipeline(work_s=0.04, cpu=1.0, step_s=0.001, cores=4, cap=2))
    assert steps(sim.run(3)) == [(2, 3), (3, 2)]
    sim.pipe = Pipeline(work_s=0.2, cpu=0.05, step_s=0.001, cores=4)  # now they wait on I/O
    changes = sim.run(6)
    assert steps(changes)[2:4] == [(2, 3), (3, 4)]
    assert changes[2].time < changes[1].time + 5  # before retry_s ran out
    assert "on I/O" in changes[2].reason


def test_a_phase_change_during_the_check_does_not_undo_a_grow() -> None:
    ctl = controller(2, max_workers=8)
    sim = Sim(ctl, Pipeline(work_s=0.05, cpu=0.05, step_s=0.001))
    sim.run(0.8)
    assert steps(sim.changes) == [(2, 3)]
    sim.pipe = Pipeline(work_s=0.4, cpu=0.05, step_s=0.001)  # 8x slower samples: rate falls
    changes = sim.run(6)
    assert [c for c in changes if "did not pay" in c.reason] == []
    assert steps(changes)[:3] == [(2, 3), (3, 4), (4, 5)]


def test_holds_when_noise_crosses_a_threshold_in_single_windows() -> None:
    # CPU-bound at the cores; a neighbour frees 2.5 cores for 0.05 s once a second. One
    # window may then see enough idle cores to grow; two in a row never do.
    def blip(t: float) -> float:
        return 2.5 if t % 1.0 < 0.05 else 0.0

    ctl = controller(2, max_workers=8)
    sim = Sim(ctl, Pipeline(work_s=0.02, cpu=1.0, step_s=0.001), idle_noise=blip)
    assert sim.run(60) == []
    assert set(sim.sizes) == {2}


def test_random_noise_does_not_make_the_pool_oscillate() -> None:
    # per-batch jitter of +-40% and idle-core readings that are often high: whatever it
    # tries is measured and taken back, and then left alone for retry_s
    rng = random.Random(5)
    ctl = controller(2, max_workers=8)
    sim = Sim(
        ctl,
        Pipeline(work_s=0.02, cpu=1.0, step_s=0.001),
        idle_noise=lambda t: rng.choice([0.0, 0.0, 1.5]),
        jitter=0.4,
        seed=3,
    )
    changes = sim.run(60)
    grows = [c for c in changes if c.after > c.before]
    undone = [c for c in changes if "did not pay" in c.reason]
    assert undone and len(grows) <= math.ceil(60 / 5) + 1
    for undo in undone:  # after an undo, nothing grows for retry_s
        later = [g for g in grows if g.time > undo.time]
        assert not later or later[0].time >= undo.time + 5
    assert max(sim.sizes) <= 3


def test_memory_bound_shrinks_at_once() -> None:
    ctl = controller(4, max_workers=8)
    ctl.observe_system(0.0, None, 600 * 2**20)  # half of it holds two 128 MiB workers
    first = ctl.decide(0.01)
    second = ctl.decide(0.02)
    assert steps(first + second) == [(4, 3), (3, 2)]
    assert ctl.decide(0.03) == []
    assert first[0].reason == (
        "batches of 0.0 MiB, 2 + 2 in flight per worker, and 600 MiB available allow 2 workers"
    )


def test_prefetch_grows_within_its_budget_and_shrinks_when_batches_grow() -> None:
    ctl = PoolController(
        workers=2,
        max_workers=2,
        prefetch=2,
        now=0.0,
        cores=2,
        auto_workers=False,
        auto_prefetch=True,
        prefetch_budget=10 * 2**20,
    )
    t, changes = 0.0, []
    for batch in range(2000):  # the consumer waits 10 ms a batch; workers are 20% busy
        nbytes = 2**20 if batch < 1000 else 2 * 2**20
        t += 0.02
        ctl.observe(
            BatchEvent(
                0, batch, batch % 2, 7, t - 0.004, t - 0.004, t, t, t, t, t, 0.01, nbytes, 4, 0, 0
            )
        )
        changes += ctl.decide(t)
    assert all(c.setting == "prefetch_factor" for c in changes)
    assert steps(changes) == [(2, 3), (3, 4), (4, 5), (5, 4), (4, 3), (3, 2)]
    assert changes[0].reason == (
        "the consumer waited 50% though only 0.2 of 2 workers were busy: a deeper buffer lets "
        "the others run ahead of a slow batch"
    )
    assert (
        changes[3].reason == "5 batches per worker x 2 workers x 2.0 MiB exceed the 10 MiB budget"
    )


def test_default_bound() -> None:
    assert default_max_workers(2, None) == 8
    assert default_max_workers(32, None) == 64
    assert default_max_workers(4, 3 * 128 * 2**20) == 1
    assert default_max_workers(4, 0) == 1


# ----------------------------------------------------------------------------- records


def test_pool_event_round_trip_and_event_log() -> None:
    event = PoolEvent(1.5, "num_workers", 2, 3, "why", {"stall": 0.5})
    assert PoolEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event
    assert PoolEvent.from_dict({k: v for k, v in event.to_dict().items() if k != "measured"}) == (
        PoolEvent(1.5, "num_workers", 2, 3, "why")
    )
    log = EventLog(capacity=2)
    for i in range(3):
        log.append_pool(PoolEvent(float(i), "num_workers", i, i + 1, ""))
    assert [e.time for e in log.pool_events()] == [1.0, 2.0]
    log.clear()
    assert log.pool_events() == []


def test_batch_event_reads_records_without_the_cpu_fields() -> None:
    event = BatchEvent(0, 1, 0, 9, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 0.5, 8, 2, 0.0, 0.0)
    data = event.to_dict()
    assert data["worker_cpu"] is None and data["worker_runq"] is None
    del data["worker_cpu"], data["worker_runq"]
    assert BatchEvent.from_dict(data) == event


def test_stages_probe_and_trace_carry_the_decisions(tmp_path: Path) -> None:
    log = EventLog()
    log.append(
        BatchEvent(0, 0, 0, 9, 10.0, 10.0, 11.0, 11.0, 11.0, 11.5, 11.5, 1.5, 8, 2, 0.0, 0.0)
    )
    log.append_pool(PoolEvent(9.0, "num_workers", 2, 1, "workers idle"))
    log.append_pool(PoolEvent(10.5, "prefetch_factor", 2, 3, "deeper"))
    log.append_pool(PoolEvent(11.0, "num_workers", 1, 2, "the consumer waited"))
    log.append_pool(PoolEvent(13.0, "num_workers", 2, 3, "after stop"))
    probe = StagesProbe(clock=lambda: 12.0)
    probe.start(Watch(events=log))
    probe.sample(10.0)
    result = probe.stop()
    assert result.detail["worker_history"] == [
        {"time_s": -1.0, "from": 2, "to": 1, "reason": "workers idle"},
        {"time_s": 1.0, "from": 1, "to": 2, "reason": "the consumer waited"},
    ]
    instants = [
        e for e in trace_events(list(log), pool_events=log.pool_events()) if e.get("cat") == "pool"
    ]
    assert [(e["name"], e["ts"], e["s"]) for e in instants] == [
        ("num_workers 2 -> 1", 0.0, "g"),
        ("prefetch_factor 2 -> 3", 1.5e6, "g"),
        ("num_workers 1 -> 2", 2e6, "g"),
        ("num_workers 2 -> 3", 4e6, "g"),
    ]
    assert instants[0]["args"] == {
        "setting": "num_workers",
        "from": 2,
        "to": 1,
        "reason": "workers idle",
    }
    path = tmp_path / "trace.json"
    export_chrome_trace(log, path)  # an EventLog brings its pool events along
    written = json.loads(path.read_text())["traceEvents"]
    assert [e["name"] for e in written if e.get("cat") == "pool"] == [e["name"] for e in instants]
    export_chrome_trace(list(log), path)
    assert not [e for e in json.loads(path.read_text())["traceEvents"] if e.get("cat") == "pool"]


# ----------------------------------------------------------------------------- arguments


def test_argument_errors() -> None:
    data = ds.IndexDataset(8)
    with pytest.raises(ValueError) as info:
        DataLoader(data, num_workers="auto", max_workers=0)
    assert str(info.value) == (
        "max_workers should be a positive integer (num_workers='auto' keeps at least one "
        "worker), or None for a bound from the cores and the available memory, but got "
        "max_workers=0"
    )
    with pytest.raises(ValueError) as info:
        DataLoader(data, num_workers="many")
    assert str(info.value) == (
        "num_workers should be a non-negative integer or 'auto', but got num_workers='many'"
    )
    with pytest.raises(ValueError) as info:
        DataLoader(data, num_workers=2, prefetch_factor="deep")
    assert str(info.value) == (
        "prefetch_factor should be a non-negative integer, None or 'auto', but got "
        "prefetch_factor='deep'"
    )
    with pytest.raises(ValueError) as info:
        DataLoader(data, num_workers=2, max_workers=4)
    assert str(info.value) == (
        "max_workers bounds num_workers='auto'; with num_workers=2 leave it None, but got "
        "max_workers=4"
    )
    with pytest.raises(ValueError, match=r"^num_workers='auto' needs a map-style dataset"):
        DataLoader(ds.ShardedIterable(8), num_workers="auto")
    with pytest.raises(ValueError, match=r"^prefetch_factor option could only be specified"):
        DataLoader(data, prefetch_factor="auto")  # torch's own words for num_workers=0


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_attributes_of_an_auto_loader() -> None:
    loader = DataLoader(
        ds.IndexDataset(8), num_workers="auto", max_workers=3, prefetch_factor="auto"
    )
    assert (loader.num_workers, loader.max_workers, loader.prefetch_factor) == (2, 3, 2)
    assert loader.auto_workers and loader.auto_prefetch and loader.dispatch == "balanced"
    assert loader.worker_history == () and loader.prefetch_history == ()
    assert "num_workers='auto' (now 2, max_workers=3)" in repr(loader)
    assert DataLoader(ds.IndexDataset(8), num_workers="auto", max_workers=1).num_workers == 1
    fixed = DataLoader(ds.IndexDataset(8), num_workers=3)
    assert (fixed.auto_workers, fixed.max_workers, fixed.dispatch) == (False, None, "round_robin")


# ----------------------------------------------------------------------------- the real pool

QUIET = PoolSettings(window_s=1e9)  # the controller never decides: sizes come from the hook


def forced(dataset: Any, schedule: Callable[[int], int | None], **kw: Any) -> DataLoader:
    """An "auto" loader whose sizes the test forces after each batch handed out."""
    loader = DataLoader(dataset, num_workers="auto", **kw)
    loader._pool_settings = QUIET
    loader._pool_hook = schedule
    return loader


SIZES = [1, 4, 2, 5, 3, 1, 5, 2]


def cycle(every: int) -> Callable[[int], int | None]:
    return lambda taken: SIZES[(taken // every) % len(SIZES)] if taken % every == 0 else None


@pytest.mark.parametrize("in_order", [True, False])
def test_every_index_once_and_in_order_under_many_resizes(in_order: bool) -> None:
    loader = forced(
        ds.IndexDataset(240, slow={i: 0.002 for i in range(0, 240, 7)}),
        cycle(3),
        batch_size=3,
        max_workers=5,
        in_order=in_order,
    )
    batches = [b.tolist() for b in loader]
    expected = [list(range(s, s + 3)) for s in range(0, 240, 3)]
    assert batches == expected if in_order else sorted(batches) == expected
    history = loader.worker_history
    assert len(history) >= 40
    assert all(
        abs(e.after - e.before) == 1 and e.reason == "forced by the pool hook" for e in history
    )
    assert all(a.after == b.before for a, b in itertools.pairwise(history))
    # the forced sizes (SIZES) span the whole of [1, max_workers]
    assert (min(e.after for e in history), max(e.after for e in history)) == (1, 5)
    assert loader.events.pool_events() == list(history)
    assert {e.worker_id for e in loader.events} == set(range(5))


class Augmenting(Dataset):
    """Sample i: (i, a torch draw, a random draw, a numpy draw), as one float64 tensor."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor(
            [i, float(torch.rand(1)), random.random(), float(np.random.rand())], dtype=torch.float64
        )


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_augmentations_do_not_depend_on_the_pool() -> None:
    def run(loader: DataLoader) -> list[torch.Tensor]:
        return [b for _ in range(2) for b in loader]

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(17)

    a = run(
        forced(Augmenting(), cycle(2), batch_size=4, shuffle=True, generator=gen(), max_workers=5)
    )
    b = run(
        forced(
            Augmenting(),
            lambda k: 1 if k == 1 else None,
            batch_size=4,
            shuffle=True,
            generator=gen(),
        )
    )
    fixed = run(
        DataLoader(
            Augmenting(),
            batch_size=4,
            shuffle=True,
            generator=gen(),
            num_workers=3,
            dispatch="balanced",
        )
    )
    assert len(a) == len(fixed) == 20
    for x, y, z in zip(a, b, fixed, strict=True):
        assert torch.equal(x, z) and torch.equal(y, z)
    assert not torch.equal(a[0][:, 1:], a[10][:, 1:])  # the two epochs draw differently


def test_grows_by_itself_on_sleeping_samples() -> None:
    loader = DataLoader(
        ds.IndexDataset(480, slow={i: 0.006 for i in range(480)}), batch_size=4, num_workers="auto"
    )
    assert [i for b in loader for i in b.tolist()] == list(range(480))
    grows = [e for e in loader.worker_history if e.after > e.before]
    assert grows and grows[0].before == 2
    assert "mostly waiting" in grows[0].reason and "on I/O" in grows[0].reason
