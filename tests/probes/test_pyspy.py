"""Tests for probes.pyspy: the collapsed-stack parser, speedscope output, and real recordings."""

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
from torch.utils.data import Dataset

from loadtune import DataLoader
from probes.base import Probe, Watch
from probes.pyspy import (
    Frame,
    PySpyProbe,
    find_pyspy,
    parse_collapsed,
    parse_frame,
    rank_functions,
    speedscope_document,
)

HOT_SECONDS = 0.005
BATCHES = 150  # x 4 samples x 5 ms = 3 s of CPU shared by two workers


def very_hot_function_for_pyspy() -> int:
    """Spin for HOT_SECONDS in this very frame (no Python callee), so it is the leaf."""
    start = time.perf_counter()
    spins = 0
    while time.perf_counter() - start < HOT_SECONDS:
        spins += 1
    return spins


class HotDataset(Dataset):
    """Sample i is i, after HOT_SECONDS of CPU in very_hot_function_for_pyspy."""

    def __len__(self) -> int:
        return BATCHES * 4

    def __getitem__(self, i: int) -> int:
        very_hot_function_for_pyspy()
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


# --- the parser, on literal text ---------------------------------------------------------

RAW = """\
<module> (/srv/train.py:1);main (/srv/train.py:10);load (/srv/my data/ds.py:4) 7
<module> (/srv/train.py:1);main (/srv/train.py:10) 2
<module> (/srv/train.py:1);main (/srv/train.py:10);fib (f.py:3);fib (f.py:3) 4
<module> (/srv/train.py:1);main (/srv/train.py:10);<native> 1
<module> (/srv/train.py:1);main (/srv/train.py:10);load (/srv/my data/ds.py:4) 3
<module> (nolineno.py);run (nolineno.py) 5

not a stack line
truncated;line (x.py:1) twelve
"""

MODULE = Frame("<module>", "/srv/train.py", 1)
MAIN = Frame("main", "/srv/train.py", 10)
LOAD = Frame("load", "/srv/my data/ds.py", 4)
FIB = Frame("fib", "f.py", 3)


def test_parse_frame_forms() -> None:
    assert parse_frame("load (/srv/my data/ds.py:4)") == LOAD
    assert parse_frame("<module> (nolineno.py)") == Frame("<module>", "nolineno.py", None)
    assert parse_frame("<native>") == Frame("<native>", "", None)
    assert parse_frame("f (C:\\code\\a.py:7)") == Frame("f", "C:\\code\\a.py", 7)
    assert Frame.from_dict(LOAD.to_dict()) == LOAD


def test_parse_collapsed_literal() -> None:
    stacks = parse_collapsed(RAW)
    assert stacks == {
        (MODULE, MAIN, LOAD): 10,  # two lines of the same stack are summed
        (MODULE, MAIN): 2,
        (MODULE, MAIN, FIB, FIB): 4,
        (MODULE, MAIN, Frame("<native>")): 1,
        (Frame("<module>", "nolineno.py"), Frame("run", "nolineno.py")): 5,
    }


def test_rank_functions_self_and_total() -> None:
    ranked = rank_functions(parse_collapsed(RAW), limit=3)
    assert ranked["samples"] == 22
    assert [(r["function"], r["samples"]) for r in ranked["self"]] == [
        ("load", 10),
        ("run", 5),
        ("fib", 4),
    ]
    assert ranked["self"][0] == {
        "function": "load",
        "file": "/srv/my data/ds.py",
        "line": 4,
        "samples": 10,
        "share": 10 / 22,
    }
    # Inclusive: main is on 17 of 22 stacks; recursive fib counts once per sample.
    assert [(r["function"], r["file"], r["samples"]) for r in ranked["total"]] == [
        ("<module>", "/srv/train.py", 17),
        ("main", "/srv/train.py", 17),
        ("load", "/srv/my data/ds.py", 10),
    ]
    assert rank_functions({})["self"] == []


def test_speedscope_document_literal() -> None:
    doc = speedscope_document(
        [("main (pid 1)", {(MODULE, MAIN): 2}), ("worker-0 (pid 2)", {(MODULE, Frame("x")): 3})]
    )
    assert doc["shared"]["frames"] == [
        {"name": "<module>", "file": "/srv/train.py", "line": 1},
        {"name": "main", "file": "/srv/train.py", "line": 10},
        {"name": "x"},
    ]
    assert doc["profiles"] == [
        {
            "type": "sampled",
            "name": "main (pid 1)",
            "unit": "none",
            "startValue": 0,
            "endValue": 2,
            "samples": [[0, 1]],
            "weights": [2],
        },
        {
            "type": "sampled",
            "name": "worker-0 (pid 2)",
            "unit": "none",
            "startValue": 0,
            "endValue": 3,
            "samples": [[0, 2]],
            "weights": [3],
        },
    ]
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"


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
        recorders_during = len(_pyspy_children())
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
        "recorders_during": recorders_during,
        "left_after": left_after,
    }


def test_top_worker_function_is_the_hot_one(hot_run: dict[str, Any]) -> None:
    result = hot_run["result"]
    assert result.available, result.reason
    top = result.detail["top"]
    hot = top["workers"]["self"][0]
    assert hot["function"] == "very_hot_function_for_pyspy"
    assert Path(hot["file"]).resolve() == Path(__file__).resolve()
    assert hot["line"] == very_hot_function_for_pyspy.__code__.co_firstlineno
    assert hot["share"] > 0.3
    for role in ("worker-0", "worker-1"):
        assert top[role]["self"][0]["function"] == "very_hot_function_for_pyspy"
        assert top[role]["samples"] > 0
    # Inclusive time: __getitem__ (py-spy names it by qualified name on Python 3.11+, by
    # plain name before) is on every stack that holds the hot function.
    total = {r["function"]: r["samples"] for r in top["workers"]["total"]}
    getitem = total.get("HotDataset.__getitem__", total.get("__getitem__", 0))
    assert getitem >= hot["samples"]


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
    assert result.detail["rate_per_s"] == 100
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
    assert any(f["name"] == "very_hot_function_for_pyspy" for f in frames)


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
