"""NUMA placement: the machine's nodes, affinity plans for workers, and where processes ran.

Three parts:

- :func:`read_topology` reads the NUMA nodes from sysfs below a ``root`` path (tests point
  it at a fake tree) into a :class:`Topology`. A machine without
  ``/sys/devices/system/node`` is one node holding every CPU.
- :func:`plan_affinity` says which CPUs each loader worker should be pinned to, so that
  workers sit on chosen nodes ("spread" or "compact").
- :class:`NumaProbe` watches which node each process's affinity covers and which node it
  actually ran on, sample by sample.

This module imports nothing from ``loadtune``; it keeps its own small sysfs reader.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .base import ProbeResult, Watch

__all__ = [
    "NumaNode",
    "NumaProbe",
    "Placement",
    "Topology",
    "format_cpulist",
    "parse_cpulist",
    "plan_affinity",
    "read_topology",
]

MODES = ("spread", "compact")


def parse_cpulist(text: str) -> list[int]:
    """Parse a sysfs CPU list such as ``"0-3,8,10-11"``.

    Args:
        text: The list as sysfs writes it (a trailing newline is fine; empty means no CPU).

    Returns:
        The CPUs, in the order written.

    Raises:
        ValueError: A part is not a number or a range of numbers.

    Example:
        >>> parse_cpulist("0-2,5\\n")
        [0, 1, 2, 5]
    """
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-")
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return cpus


def format_cpulist(cpus: Iterable[int]) -> str:
    """The inverse of :func:`parse_cpulist` (sorted, ranges collapsed).

    Example:
        >>> format_cpulist([5, 0, 1, 2])
        '0-2,5'
    """
    parts = []
    for _, run in itertools.groupby(enumerate(sorted(set(cpus))), lambda p: p[1] - p[0]):
        values = [c for _, c in run]
        parts.append(f"{values[0]}-{values[-1]}" if len(values) > 1 else str(values[0]))
    return ",".join(parts)


@dataclass(frozen=True, slots=True)
class NumaNode:
    """One NUMA node.

    Attributes:
        id: The node number (``nodeN`` in sysfs).
        cpus: Its CPUs, ascending; empty for a memory-only node.
        distances: Its distance to every node, in sysfs order; empty when not read.
        mem_total_bytes: MemTotal from the node's meminfo, None when not read.
        mem_free_bytes: MemFree from the node's meminfo, None when not read.
    """

    id: int
    cpus: tuple[int, ...]
    distances: tuple[int, ...] = ()
    mem_total_bytes: int | None = None
    mem_free_bytes: int | None = None

    def to_dict(self) -> dict:
        """Plain-data form (JSON-ready)."""
        return {
            "id": self.id,
            "cpus": list(self.cpus),
            "distances": list(self.distances),
            "mem_total_bytes": self.mem_total_bytes,
            "mem_free_bytes": self.mem_free_bytes,
        }

    @classmethod
    def from_dict(cls, data: dict) -> NumaNode:
        """Inverse of :meth:`to_dict`; missing optional fields are empty or None."""
        return cls(
            id=data["id"],
            cpus=tuple(data["cpus"]),
            distances=tuple(data.get("distances", ())),
            mem_total_bytes=data.get("mem_total_bytes"),
            mem_free_bytes=data.get("mem_free_bytes"),
        )


@dataclass(frozen=True, slots=True)
class Topology:
    """The NUMA nodes of a machine.

    Attributes:
        nodes: The nodes, by ascending id.
        from_sysfs: False when sysfs had no node directories and the topology is the
            single node assumed to hold every CPU.
    """

    nodes: tuple[NumaNode, ...]
    from_sysfs: bool = True

    @property
    def cpus(self) -> tuple[int, ...]:
        """Every CPU of every node, ascending."""
        return tuple(sorted(c for node in self.nodes for c in node.cpus))

    def node_of(self, cpu: int) -> int | None:
        """The id of the node that holds ``cpu``, or None when no node does."""
        for node in self.nodes:
            if cpu in node.cpus:
                return node.id
        return None

    def nodes_of(self, cpus: Iterable[int]) -> tuple[int, ...]:
        """The ids of the nodes that hold any of ``cpus``, ascending."""
        wanted = set(cpus)
        return tuple(node.id for node in self.nodes if wanted.intersection(node.cpus))

    def to_dict(self) -> dict:
        """Plain-data form (JSON-ready)."""
        return {"nodes": [n.to_dict() for n in self.nodes], "from_sysfs": self.from_sysfs}

    @classmethod
    def from_dict(cls, data: dict) -> Topology:
        """Inverse of :meth:`to_dict`."""
        return cls(
            nodes=tuple(NumaNode.from_dict(n) for n in data["nodes"]),
            from_sysfs=data.get("from_sysfs", True),
        )


def _meminfo(path: Path) -> tuple[int | None, int | None]:
    """MemTotal and MemFree in bytes from a node's meminfo or /proc/meminfo."""
    values: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return None, None
    for line in text.splitlines():
        # Node meminfo lines read "Node 0 MemTotal:  6121676 kB"; /proc/meminfo drops the
        # "Node 0" prefix. Keying on the word that ends in ":" handles both.
        words = line.split()
        for i, word in enumerate(words[:-1]):
            if word in ("MemTotal:", "MemFree:"):
                try:
                    number = int(words[i + 1])
                except ValueError:
                    break
                unit = words[i + 2] if len(words) > i + 2 else ""
                values[word[:-1]] = number * 1024 if unit == "kB" else number
                break
    return values.get("MemTotal"), values.get("MemFree")


def read_topology(root: str | os.PathLike = "/") -> Topology:
    """Read the NUMA nodes of the machine below ``root``.

    Each ``sys/devices/system/node/nodeN`` directory gives a node: ``cpulist`` its CPUs,
    ``distance`` its distances, ``meminfo`` its MemTotal and MemFree (each optional but
    ``cpulist``; a node whose ``cpulist`` cannot be read is left out). Without node
    directories the machine is one node (id 0) holding every online CPU
    (``sys/devices/system/cpu/online``, else ``os.cpu_count()``) and the memory that
    ``proc/meminfo`` reports.

    Args:
        root: Where ``sys`` (and ``proc``) are found; tests use a fake tree.

    Returns:
        The topology, nodes by ascending id.

    Raises:
        ValueError: A ``cpulist`` or ``distance`` file is malformed.

    Example:
        >>> topology = read_topology()
        >>> len(topology.nodes) >= 1
        True
    """
    base = Path(root)
    nodes = []
    node_dirs = (base / "sys/devices/system/node").glob("node[0-9]*")
    for path in sorted(node_dirs, key=lambda p: int(p.name[4:])):
        try:
            cpus = tuple(sorted(parse_cpulist((path / "cpulist").read_text())))
        except OSError:
            continue
        try:
            distances = tuple(int(x) for x in (path / "distance").read_text().split())
        except OSError:
            distances = ()
        total, free = _meminfo(path / "meminfo")
        nodes.append(NumaNode(int(path.name[4:]), cpus, distances, total, free))
    if nodes:
        return Topology(tuple(nodes))
    try:
        cpus = tuple(sorted(parse_cpulist((base / "sys/devices/system/cpu/online").read_text())))
    except OSError:
        cpus = tuple(range(os.cpu_count() or 1))
    total, free = _meminfo(base / "proc/meminfo")
    return Topology((NumaNode(0, cpus, (), total, free),), from_sysfs=False)


def _allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no affinity to respect
        return set(range(os.cpu_count() or 1))


def plan_affinity(
    topology: Topology, num_workers: int, mode: str, allowed: set[int] | None = None
) -> list[set[int]]:
    """The CPUs to pin each of ``num_workers`` loader workers to.

    A worker is pinned to a whole node, never to one CPU: it gets every allowed CPU of the
    node chosen for it. The point of placing workers is memory locality (the batches a
    worker builds live on its node), and a node-wide set keeps that while letting the
    kernel move a worker off a CPU that the main process, the pin-memory thread or another
    worker is using; one-CPU pinning would forbid that and stack workers when there are
    more workers than CPUs. The loader applies a plan with ``os.sched_setaffinity(0, cpus)``
    at the start of each worker.

    Modes choose the node of worker ``i``:

    - ``"spread"``: round robin over the nodes that have allowed CPUs (node order), so
      workers are shared evenly between nodes.
    - ``"compact"``: fill node 0 first, one worker per allowed CPU, then node 1, and so on;
      with more workers than allowed CPUs the filling starts again at the first node.

    Nodes with no allowed CPU (memory-only nodes, nodes outside a cpuset) get no worker.

    Args:
        topology: The machine's nodes (:func:`read_topology`).
        num_workers: How many workers to place (0 gives an empty plan).
        mode: ``"spread"`` or ``"compact"``.
        allowed: The CPUs that may be used; default ``os.sched_getaffinity(0)``.

    Returns:
        One set of CPUs per worker, in worker order (distinct set objects).

    Raises:
        ValueError: ``mode`` is unknown, ``num_workers`` is negative, or no allowed CPU is
            on a node of ``topology``.

    Example:
        >>> two = Topology((NumaNode(0, (0, 1)), NumaNode(1, (2, 3))))
        >>> plan_affinity(two, 3, "spread", allowed={0, 1, 2, 3})
        [{0, 1}, {2, 3}, {0, 1}]
        >>> plan_affinity(two, 3, "compact", allowed={0, 1, 2, 3})
        [{0, 1}, {0, 1}, {2, 3}]
    """
    if mode not in MODES:
        raise ValueError(f"unknown affinity mode {mode!r}: expected 'spread' or 'compact'")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    usable = _allowed_cpus() if allowed is None else set(allowed)
    per_node = [
        (node.id, {c for c in node.cpus if c in usable})
        for node in sorted(topology.nodes, key=lambda n: n.id)
    ]
    per_node = [(node_id, cpus) for node_id, cpus in per_node if cpus]
    if not per_node:
        raise ValueError(
            f"none of the allowed CPUs [{format_cpulist(usable)}] is on a node of this "
            f"topology (its nodes hold CPUs [{format_cpulist(topology.cpus)}])"
        )
    if mode == "spread":
        order = [cpus for _, cpus in per_node]
    else:
        # One slot per allowed CPU, node by node: worker i takes slot i (mod the slots).
        order = [cpus for _, cpus in per_node for _ in cpus]
    return [set(order[i % len(order)]) for i in range(num_workers)]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one watched process was allowed to run and where it ran.

    Attributes:
        role: ``main`` or ``worker-<n>`` (a restarted worker keeps its role, new pid).
        pid: The process id.
        affinity_cpus: Its CPU affinity at the last sample that could read it.
        affinity_nodes: The nodes that affinity covers.
        affinity_changed: True when the affinity differed between samples.
        samples: Samples that read the CPU it last ran on.
        node_share: Node id -> the share of those samples it had last run on that node.
        unmapped_share: The share of samples on a CPU that no node of the topology holds.
    """

    role: str
    pid: int
    affinity_cpus: tuple[int, ...]
    affinity_nodes: tuple[int, ...]
    affinity_changed: bool
    samples: int
    node_share: dict[int, float] = field(default_factory=dict)
    unmapped_share: float = 0.0

    @property
    def main_node(self) -> int | None:
        """The node it ran on in most samples (lowest id on a tie); None without samples."""
        if not self.node_share:
            return None
        return min(self.node_share, key=lambda n: (-self.node_share[n], n))

    def to_dict(self) -> dict:
        """Plain-data form (JSON-ready: node ids become string keys)."""
        return {
            "role": self.role,
            "pid": self.pid,
            "affinity_cpus": list(self.affinity_cpus),
            "affinity_nodes": list(self.affinity_nodes),
            "affinity_changed": self.affinity_changed,
            "samples": self.samples,
            "node_share": {str(n): s for n, s in sorted(self.node_share.items())},
            "unmapped_share": self.unmapped_share,
            "main_node": self.main_node,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Placement:
        """Inverse of :meth:`to_dict` (``main_node`` is derived, so it is not read)."""
        return cls(
            role=data["role"],
            pid=data["pid"],
            affinity_cpus=tuple(data.get("affinity_cpus", ())),
            affinity_nodes=tuple(data.get("affinity_nodes", ())),
            affinity_changed=data.get("affinity_changed", False),
            samples=data.get("samples", 0),
            node_share={int(n): s for n, s in data.get("node_share", {}).items()},
            unmapped_share=data.get("unmapped_share", 0.0),
        )


class _Tally:
    """What the samples saw of one process (mutable; becomes a Placement at stop)."""

    __slots__ = ("affinity", "affinity_changed", "counts", "proc", "role", "samples", "unmapped")

    def __init__(self, role: str, proc: psutil.Process) -> None:
        self.role = role
        self.proc = proc
        self.affinity: tuple[int, ...] | None = None
        self.affinity_changed = False
        self.samples = 0
        self.unmapped = 0
        self.counts: dict[int, int] = {}


class NumaProbe:
    """Which NUMA node each watched process may run on, and which it ran on.

    ``start`` reads the topology from ``watch.options.get("numa_root", "/")``. Each
    ``sample`` reads every watched process's CPU affinity and the CPU its main thread last
    ran on (``psutil.Process.cpu_num()``), and counts that CPU's node. ``stop`` returns:

    - ``detail["topology"]``: :meth:`Topology.to_dict`;
    - ``detail["processes"]``: one :meth:`Placement.to_dict` per process seen;
    - ``detail["main_node"]``: the node the main process ran on most (None if never read);
    - ``summary``: ``nodes``; once a sample was taken, ``workers_observed`` and
      ``workers_spanning_nodes`` (workers whose affinity covers more than one node); when
      the main process's node is known, ``workers_off_main_node`` (workers that ran on
      another node than the main process in most of their samples).

    No time series. On a one-node machine the probe is available and reports one node.
    It is unavailable only where psutil cannot read affinities or CPU numbers (not Linux)
    or the sysfs tree is malformed.

    Example:
        >>> probe = NumaProbe()
        >>> probe.start(Watch())
        >>> probe.sample(0.0)
        >>> probe.stop().summary["nodes"] >= 1
        True
    """

    name = "numa"

    def __init__(self) -> None:
        self._topology: Topology | None = None
        self._reason = ""
        self._watch: Watch | None = None
        self._tallies: dict[int, _Tally] = {}
        self._sampled = False

    def start(self, watch: Watch) -> None:
        """Read the topology; see NOTE [ Probe contract ] in probes/base.py."""
        self._watch = watch
        if not hasattr(psutil.Process, "cpu_num") or not hasattr(psutil.Process, "cpu_affinity"):
            self._reason = (
                "psutil cannot read a process's CPU affinity or current CPU on this platform"
            )
            return
        root = watch.options.get("numa_root", "/")
        try:
            self._topology = read_topology(root)
        except (OSError, ValueError) as exc:
            self._reason = f"cannot read the NUMA topology under {root}: {exc}"

    def sample(self, now: float) -> None:
        """Read each watched process's affinity and current CPU; never raises."""
        if self._topology is None or self._watch is None:
            return
        try:
            roles = self._watch.pids()
        except Exception:  # a caller's pid callable failing must not stop the sampler
            return
        self._sampled = True
        for role, pid in roles.items():
            tally = self._tallies.get(pid)
            try:
                if tally is None:
                    tally = self._tallies[pid] = _Tally(role, psutil.Process(pid))
                affinity = tuple(sorted(tally.proc.cpu_affinity()))
                cpu = tally.proc.cpu_num()
            except (psutil.Error, OSError):
                continue  # exited between pids() and now, or not ours to read
            if tally.affinity is not None and tally.affinity != affinity:
                tally.affinity_changed = True
            tally.affinity = affinity
            tally.samples += 1
            node = self._topology.node_of(cpu)
            if node is None:
                tally.unmapped += 1
            else:
                tally.counts[node] = tally.counts.get(node, 0) + 1

    def stop(self) -> ProbeResult:
        """Return topology, per-process placement and the summary counts."""
        if self._watch is None:
            return ProbeResult.unavailable(self.name, "stop() was called before start()")
        if self._topology is None:
            return ProbeResult.unavailable(self.name, self._reason)
        topology = self._topology
        placements = [
            Placement(
                role=t.role,
                pid=pid,
                affinity_cpus=t.affinity,
                affinity_nodes=topology.nodes_of(t.affinity),
                affinity_changed=t.affinity_changed,
                samples=t.samples,
                node_share={n: c / t.samples for n, c in sorted(t.counts.items())},
                unmapped_share=t.unmapped / t.samples,
            )
            for pid, t in self._tallies.items()
            if t.affinity is not None  # never read: nothing measured, nothing reported
        ]
        summary: dict[str, float] = {"nodes": float(len(topology.nodes))}
        main = [p for p in placements if p.role == "main"]
        main_node = main[0].main_node if main else None
        if self._sampled:
            workers = [p for p in placements if p.role.startswith("worker-")]
            summary["workers_observed"] = float(len(workers))
            summary["workers_spanning_nodes"] = float(
                sum(len(p.affinity_nodes) > 1 for p in workers)
            )
            if main_node is not None:
                summary["workers_off_main_node"] = float(
                    sum(p.main_node is not None and p.main_node != main_node for p in workers)
                )
        detail: dict[str, Any] = {
            "topology": topology.to_dict(),
            "processes": [p.to_dict() for p in placements],
            "main_node": main_node,
        }
        return ProbeResult(name=self.name, summary=summary, detail=detail)
