"""NUMA topology from a fake sysfs tree, affinity plans, and NumaProbe on real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from loadtune import DataLoader
from probes.base import Probe, ProbeResult, Watch
from probes.numa import (
    NumaNode,
    NumaProbe,
    Placement,
    Topology,
    format_cpulist,
    parse_cpulist,
    plan_affinity,
    read_topology,
)

GIB_KB = 1024 * 1024  # kB in a GiB: meminfo counts in kB


def _write_node(
    root: Path, node: int, cpus: str, distance: str, total_kb: int, free_kb: int
) -> None:
    d = root / f"sys/devices/system/node/node{node}"
    d.mkdir(parents=True)
    (d / "cpulist").write_text(cpus + "\n")
    (d / "distance").write_text(distance + "\n")
    (d / "meminfo").write_text(
        f"Node {node} MemTotal:       {total_kb} kB\n"
        f"Node {node} MemFree:        {free_kb} kB\n"
        f"Node {node} MemUsed:        {total_kb - free_kb} kB\n"
    )


@pytest.fixture
def two_nodes(tmp_path: Path) -> Path:
    """node0: CPUs 0-3, 8 GiB (6 free); node1: CPUs 4-7, 4 GiB (1 free); distances 10/21."""
    _write_node(tmp_path, 0, "0-3", "10 21", 8 * GIB_KB, 6 * GIB_KB)
    _write_node(tmp_path, 1, "4-7", "21 10", 4 * GIB_KB, 1 * GIB_KB)
    return tmp_path


A, B = {0, 1, 2, 3}, {4, 5, 6, 7}
TWO = Topology((NumaNode(0, (0, 1, 2, 3)), NumaNode(1, (4, 5, 6, 7))))


# --- topology ---------------------------------------------------------------------------


def test_two_node_tree_is_read_exactly(two_nodes: Path) -> None:
    assert read_topology(two_nodes) == Topology(
        (
            NumaNode(0, (0, 1, 2, 3), (10, 21), 8 << 30, 6 << 30),
            NumaNode(1, (4, 5, 6, 7), (21, 10), 4 << 30, 1 << 30),
        ),
        from_sysfs=True,
    )


def test_topology_round_trips_through_json(two_nodes: Path) -> None:
    topology = read_topology(two_nodes)
    assert Topology.from_dict(json.loads(json.dumps(topology.to_dict()))) == topology
    assert topology.cpus == tuple(range(8))
    assert [topology.node_of(c) for c in (0, 3, 4, 7, 8)] == [0, 0, 1, 1, None]
    assert topology.nodes_of({2, 5, 99}) == (0, 1)


def test_optional_node_files_and_memory_only_node(tmp_path: Path) -> None:
    # node10 sorts after node2 by number, not by name; node2 has memory but no CPU; node10
    # has only its cpulist.
    _write_node(tmp_path, 0, "0-1", "10 20 20", 2 * GIB_KB, GIB_KB)
    _write_node(tmp_path, 2, "", "20 10 20", GIB_KB, GIB_KB)
    only_cpus = tmp_path / "sys/devices/system/node/node10"
    only_cpus.mkdir()
    (only_cpus / "cpulist").write_text("2-3,6\n")
    assert read_topology(tmp_path).nodes == (
        NumaNode(0, (0, 1), (10, 20, 20), 2 << 30, 1 << 30),
        NumaNode(2, (), (20, 10, 20), 1 << 30, 1 << 30),
        NumaNode(10, (2, 3, 6), (), None, None),
    )


def test_no_node_directory_is_one_node_with_every_cpu(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal:  4194304 kB\nMemFree:   1048576 kB\n")
    assert read_topology(tmp_path) == Topology(
        (NumaNode(0, tuple(range(os.cpu_count() or 1)), (), 4 << 30, 1 << 30),),
        from_sysfs=False,
    )
    cpu = tmp_path / "sys/devices/system/cpu"
    cpu.mkdir(parents=True)
    (cpu / "online").write_text("0-5\n")
    assert read_topology(tmp_path).nodes[0].cpus == (0, 1, 2, 3, 4, 5)


def test_real_machine_topology_covers_the_allowed_cpus() -> None:
    topology = read_topology()
    assert len(topology.nodes) >= 1
    assert os.sched_getaffinity(0) <= set(topology.cpus)


def test_cpulist_parse_and_format() -> None:
    assert parse_cpulist("0-2,5,7-8\n") == [0, 1, 2, 5, 7, 8]
    assert parse_cpulist("\n") == []
    assert format_cpulist([8, 0, 1, 2, 5, 7]) == "0-2,5,7-8"
    assert format_cpulist([]) == ""


# --- plan_affinity ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "num_workers", "expected"),
    [
        ("spread", 1, [A]),
        ("spread", 2, [A, B]),
        ("spread", 3, [A, B, A]),
        ("spread", 4, [A, B, A, B]),
        ("spread", 5, [A, B, A, B, A]),
        ("compact", 1, [A]),
        ("compact", 2, [A, A]),
        ("compact", 3, [A, A, A]),
        ("compact", 4, [A, A, A, A]),
        ("compact", 5, [A, A, A, A, B]),
    ],
)
def test_plan_on_two_nodes(
    two_nodes: Path, mode: str, num_workers: int, expected: list[set[int]]
) -> None:
    plan = plan_affinity(read_topology(two_nodes), num_workers, mode, allowed=set(range(8)))
    assert plan == expected
    assert len({id(cpus) for cpus in plan}) == num_workers  # callers may mutate their own set


@pytest.mark.parametrize(
    ("mode", "num_workers", "expected"),
    [
        # Allowed {1, 2, 5}: node 0 offers {1, 2}, node 1 offers {5}.
        ("spread", 1, [{1, 2}]),
        ("spread", 2, [{1, 2}, {5}]),
        ("spread", 3, [{1, 2}, {5}, {1, 2}]),
        ("spread", 4, [{1, 2}, {5}, {1, 2}, {5}]),
        ("spread", 5, [{1, 2}, {5}, {1, 2}, {5}, {1, 2}]),
        ("compact", 1, [{1, 2}]),
        ("compact", 2, [{1, 2}, {1, 2}]),
        ("compact", 3, [{1, 2}, {1, 2}, {5}]),
        # Three allowed CPUs filled: the filling starts again at node 0.
        ("compact", 4, [{1, 2}, {1, 2}, {5}, {1, 2}]),
        ("compact", 5, [{1, 2}, {1, 2}, {5}, {1, 2}, {1, 2}]),
    ],
)
def test_plan_with_restricted_cpus(
    two_nodes: Path, mode: str, num_workers: int, expected: list[set[int]]
) -> None:
    assert plan_affinity(read_topology(two_nodes), num_workers, mode, {1, 2, 5}) == expected


@pytest.mark.parametrize("mode", ["spread", "compact"])
def test_plan_skips_nodes_without_allowed_cpus(mode: str) -> None:
    assert plan_affinity(TWO, 3, mode, allowed={6, 7, 9}) == [{6, 7}] * 3
    with_memory_only = Topology((NumaNode(0, (0, 1)), NumaNode(1, ()), NumaNode(2, (2, 3))))
    plan = plan_affinity(with_memory_only, 2, mode, allowed={0, 1, 2, 3})
    assert plan == ([{0, 1}, {2, 3}] if mode == "spread" else [{0, 1}, {0, 1}])


def test_plan_defaults_to_this_process_affinity() -> None:
    allowed = os.sched_getaffinity(0)
    topology = Topology((NumaNode(0, tuple(sorted(allowed | {max(allowed) + 1}))),))
    assert plan_affinity(topology, 2, "compact") == [allowed, allowed]
    assert plan_affinity(topology, 0, "spread") == []


def test_plan_errors_say_what_is_wrong() -> None:
    assert str(_raised(lambda: plan_affinity(TWO, 2, "interleave"))) == (
        "unknown affinity mode 'interleave': expected 'spread' or 'compact'"
    )
    assert str(_raised(lambda: plan_affinity(TWO, -1, "spread"))) == (
        "num_workers must be >= 0, got -1"
    )
    assert str(_raised(lambda: plan_affinity(TWO, 1, "spread", allowed={8, 9, 10}))) == (
        "none of the allowed CPUs [8-10] is on a node of this topology (its nodes hold CPUs [0-7])"
    )


def _raised(call: Callable[[], object]) -> ValueError:
    with pytest.raises(ValueError) as info:
        call()
    return info.value


# --- NumaProbe --------------------------------------------------------------------------


class Squares(Dataset):
    def __len__(self) -> int:
        return 24

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.full((256,), float(i * i))


def _placements(result: ProbeResult) -> dict[str, Placement]:
    return {row["role"]: Placement.from_dict(row) for row in result.detail["processes"]}


def test_probe_on_this_machine_with_real_loader_workers() -> None:
    topology = read_topology()
    if len(topology.nodes) != 1:
        pytest.skip(f"this test expects a one-node machine; this one has {len(topology.nodes)}")
    probe = NumaProbe()
    assert isinstance(probe, Probe)
    it = iter(DataLoader(Squares(), batch_size=2, num_workers=2))
    watch = Watch(main_pid=os.getpid(), worker_pids=lambda: [w.pid for w in it._workers])
    pids = watch.pids()
    probe.start(watch)
    probe.sample(time.monotonic())
    batches = 0
    for _ in it:
        batches += 1
        probe.sample(time.monotonic())
    result = probe.stop()

    assert batches == 12
    assert result.available and result.reason == ""
    assert result.summary == {
        "nodes": 1.0,
        "workers_observed": 2.0,
        "workers_spanning_nodes": 0.0,
        "workers_off_main_node": 0.0,
    }
    assert result.detail["main_node"] == 0
    node = topology.nodes[0].id
    placements = _placements(result)
    assert set(placements) == {"main", "worker-0", "worker-1"}
    for role, placement in placements.items():
        assert placement.pid == pids[role]
        assert placement.affinity_nodes == (node,)
        assert placement.samples >= 1
        assert placement.node_share == {node: 1.0}
        assert placement.unmapped_share == 0.0
        assert placement.main_node == node
    assert ProbeResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


@pytest.fixture
def pinned_children() -> Iterator[Callable[..., list[int]]]:
    """Starts sleeping processes that pin themselves to given CPUs; returns their pids."""
    started: list[subprocess.Popen] = []

    def start(*cpu_sets: set[int]) -> list[int]:
        for cpus in cpu_sets:
            # The child pins itself: a running task that narrows its own affinity is moved
            # at once, so every CPU it reports afterwards is inside the set.
            code = (
                f"import os, sys, time; os.sched_setaffinity(0, {sorted(cpus)!r}); "
                "print('ready', flush=True); sys.stdin.read()"
            )
            child = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            started.append(child)
        for child in started[-len(cpu_sets) :]:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        return [c.pid for c in started[-len(cpu_sets) :]]

    yield start
    for child in started:
        child.kill()
        child.wait()


def test_probe_maps_processes_through_a_fake_topology(
    two_nodes: Path, pinned_children: Callable[..., list[int]]
) -> None:
    allowed = os.sched_getaffinity(0)
    on_node0 = allowed & A
    if not on_node0:
        pytest.skip("needs one of CPUs 0-3 in this process's affinity")
    (worker,) = pinned_children(on_node0)
    probe = NumaProbe()
    probe.start(Watch(worker_pids=lambda: [worker], options={"numa_root": str(two_nodes)}))
    for t in range(3):
        probe.sample(float(t))
    result = probe.stop()

    assert result.detail["topology"] == read_topology(two_nodes).to_dict()
    placements = _placements(result)
    # This process's own affinity (CPUs 0-1 on the 2-core test machine) read through the
    # fake tree: the nodes that hold its CPUs.
    main = placements["main"]
    assert main.affinity_cpus == tuple(sorted(allowed))
    assert main.affinity_nodes == tuple(sorted({0 if c < 4 else 1 for c in allowed if c < 8}))
    assert placements["worker-0"] == Placement(
        role="worker-0",
        pid=worker,
        affinity_cpus=tuple(sorted(on_node0)),
        affinity_nodes=(0,),
        affinity_changed=False,
        samples=3,
        node_share={0: 1.0},
        unmapped_share=0.0,
    )
    assert result.summary["nodes"] == 2.0
    assert result.summary["workers_spanning_nodes"] == 0.0


def test_probe_counts_spanning_and_off_node_workers(
    tmp_path: Path, pinned_children: Callable[..., list[int]]
) -> None:
    # A fake topology that splits this machine's two CPUs into two nodes, so placement on
    # different nodes is real: main and worker-0 pinned to CPU 0 (node 0), worker-1 pinned
    # to CPU 1 (node 1), worker-2 allowed on both (spanning).
    if not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs CPUs 0 and 1 in this process's affinity")
    _write_node(tmp_path, 0, "0", "10 21", GIB_KB, GIB_KB)
    _write_node(tmp_path, 1, "1", "21 10", GIB_KB, GIB_KB)
    main, *workers = pinned_children({0}, {0}, {1}, {0, 1})
    probe = NumaProbe()
    probe.start(Watch(main, lambda: workers, options={"numa_root": str(tmp_path)}))
    for t in range(4):
        probe.sample(float(t))
    result = probe.stop()

    placements = _placements(result)
    assert {r: (p.pid, p.affinity_nodes, p.samples) for r, p in placements.items()} == {
        "main": (main, (0,), 4),
        "worker-0": (workers[0], (0,), 4),
        "worker-1": (workers[1], (1,), 4),
        "worker-2": (workers[2], (0, 1), 4),
    }
    assert placements["main"].node_share == {0: 1.0}
    assert placements["worker-0"].node_share == {0: 1.0}
    assert placements["worker-1"].node_share == {1: 1.0}
    # worker-2 may run on either CPU: the kernel decides, so only its shares' total is known.
    assert sum(placements["worker-2"].node_share.values()) == pytest.approx(1.0)
    spanning_off = placements["worker-2"].main_node != 0
    assert result.detail["main_node"] == 0
    assert result.summary == {
        "nodes": 2.0,
        "workers_observed": 3.0,
        "workers_spanning_nodes": 1.0,
        "workers_off_main_node": 1.0 + spanning_off,
    }


def test_probe_without_samples_reports_only_the_topology(two_nodes: Path) -> None:
    probe = NumaProbe()
    probe.start(Watch(options={"numa_root": str(two_nodes)}))
    result = probe.stop()
    assert result.available
    assert result.summary == {"nodes": 2.0}
    assert result.detail["processes"] == []
    assert result.detail["main_node"] is None


def test_probe_skips_a_process_that_exited(two_nodes: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    probe = NumaProbe()
    probe.start(Watch(worker_pids=lambda: [gone.pid], options={"numa_root": str(two_nodes)}))
    probe.sample(0.0)
    result = probe.stop()
    assert [row["role"] for row in result.detail["processes"]] == ["main"]
    assert result.summary["workers_observed"] == 0.0


def test_probe_is_unavailable_on_a_malformed_tree(tmp_path: Path) -> None:
    _write_node(tmp_path, 0, "0-x", "10", GIB_KB, GIB_KB)
    probe = NumaProbe()
    probe.start(Watch(options={"numa_root": str(tmp_path)}))
    probe.sample(0.0)
    result = probe.stop()
    assert not result.available
    assert result.reason == (
        f"cannot read the NUMA topology under {tmp_path}: "
        "invalid literal for int() with base 10: 'x'"
    )
