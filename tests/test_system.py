"""SystemInfo read from a fake sysfs/procfs tree."""

from __future__ import annotations

from pathlib import Path

from loadtune import system


def _fake_root(tmp_path: Path) -> Path:
    for node, cpus, dist in ((0, "0-3,8", "10 21"), (1, "4-7", "21 10")):
        d = tmp_path / f"sys/devices/system/node/node{node}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(cpus + "\n")
        (d / "distance").write_text(dist + "\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU 9000\n")
    (tmp_path / "dev/shm").mkdir(parents=True)
    return tmp_path


def test_two_node_numa_tree(tmp_path: Path) -> None:
    info = system.collect(_fake_root(tmp_path))
    assert info.cpu_model == "Test CPU 9000"
    assert [(n.id, n.cpus, n.distances) for n in info.numa_nodes] == [
        (0, (0, 1, 2, 3, 8), (10, 21)),
        (1, (4, 5, 6, 7), (21, 10)),
    ]
    assert info.shm_total is not None


def test_round_trip_through_dict(tmp_path: Path) -> None:
    info = system.collect(_fake_root(tmp_path))
    assert system.SystemInfo.from_dict(info.to_dict()) == info


def test_cpulist_parse_and_format() -> None:
    assert system.parse_cpulist("0-2,5,7-8\n") == [0, 1, 2, 5, 7, 8]
    assert system.format_cpulist([8, 0, 1, 2, 5, 7]) == "0-2,5,7-8"
    assert system.format_cpulist([]) == ""
