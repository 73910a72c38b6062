"""SystemInfo: the machine a measurement was taken on (cores, memory, /dev/shm, NUMA, torch).

``collect()`` reads everything once. sysfs and procfs are read below a ``root`` path so that
tests can point it at a fake tree (for instance a two-node NUMA machine).
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from probes.gpu import cuda_unavailable_reason
from probes.numa import format_cpulist, parse_cpulist, read_topology

__all__ = ["NumaNode", "SystemInfo", "collect", "format_cpulist", "parse_cpulist"]


@dataclass(frozen=True, slots=True)
class NumaNode:
    """One NUMA node: its id, CPUs and distances to every node (sysfs order)."""

    id: int
    cpus: tuple[int, ...]
    distances: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {"id": self.id, "cpus": list(self.cpus), "distances": list(self.distances)}

    @classmethod
    def from_dict(cls, data: dict) -> NumaNode:
        return cls(data["id"], tuple(data["cpus"]), tuple(data.get("distances", ())))


@dataclass(frozen=True, slots=True)
class SystemInfo:
    """What every result records about the machine it was measured on."""

    cpu_model: str
    logical_cores: int
    physical_cores: int | None
    usable_cores: int
    memory_total: int
    memory_available: int
    shm_total: int | None
    shm_free: int | None
    numa_nodes: tuple[NumaNode, ...]
    python: str
    platform: str
    torch: str
    cuda_available: bool
    cuda_reason: str
    cuda_devices: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        data = asdict(self)
        data["numa_nodes"] = [n.to_dict() for n in self.numa_nodes]
        data["cuda_devices"] = list(self.cuda_devices)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SystemInfo:
        values = {k: data.get(k) for k in cls.__dataclass_fields__}
        values["numa_nodes"] = tuple(NumaNode.from_dict(n) for n in data.get("numa_nodes", []))
        values["cuda_devices"] = tuple(data.get("cuda_devices", ()))
        return cls(**values)


def _cpu_model(root: Path) -> str:
    try:
        for line in (root / "proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _numa_nodes(root: Path) -> tuple[NumaNode, ...]:
    """The nodes sysfs reports (none when it reports none; the numa probe says more)."""
    topology = read_topology(root)
    if not topology.from_sysfs:
        return ()
    return tuple(NumaNode(n.id, tuple(n.cpus), tuple(n.distances)) for n in topology.nodes)


def _shm(root: Path) -> tuple[int | None, int | None]:
    try:
        st = os.statvfs(root / "dev/shm")
    except OSError:
        return None, None
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def _cuda() -> tuple[bool, str, tuple[str, ...]]:
    import torch

    reason = cuda_unavailable_reason()
    if reason is not None:
        return False, reason, ()
    names = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return True, "", names


def collect(root: str | os.PathLike = "/") -> SystemInfo:
    """Describe this machine.

    Args:
        root: Where ``proc``, ``sys`` and ``dev/shm`` are found (tests use a fake tree).

    Example:
        >>> info = collect()
        >>> info.logical_cores >= 1
        True
    """
    import torch

    base = Path(root)
    vm = psutil.virtual_memory()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    shm_total, shm_free = _shm(base)
    cuda, reason, devices = _cuda()
    return SystemInfo(
        cpu_model=_cpu_model(base),
        logical_cores=psutil.cpu_count(logical=True) or 1,
        physical_cores=psutil.cpu_count(logical=False),
        usable_cores=usable,
        memory_total=vm.total,
        memory_available=vm.available,
        shm_total=shm_total,
        shm_free=shm_free,
        numa_nodes=_numa_nodes(base),
        python=platform.python_version(),
        platform=platform.platform(),
        torch=torch.__version__,
        cuda_available=cuda,
        cuda_reason=reason,
        cuda_devices=devices,
    )
