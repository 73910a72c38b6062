"""The py-spy probe: where the main process and every worker spend their CPU, by function.

``PySpyProbe`` runs one ``py-spy record`` per watched process for the profile window,
reads the collapsed stacks it writes, ranks functions by self and inclusive share of the
samples (per role, for all workers together and overall) and can write a speedscope file
with one profile per process.

# NOTE [ py-spy recorder settings ]
Each recorder is ``py-spy record --pid PID --format raw --rate R --function
--full-filenames [--nonblocking] --output FILE``:

- ``--format raw`` writes collapsed stacks, one line per distinct stack:
  ``frame;frame;...;leaf COUNT`` with root first, each frame ``function (file:line)``
  (checked against py-spy 0.4's real output). A frame may lack the ``(file:line)`` part
  (native or synthetic frames), and the file may lack ``:line`` (``--nolineno``).
- ``--function`` reports each frame at its function's first line rather than the line
  being run, so one function is one row, and the line is where it is defined.
- ``--full-filenames`` keeps absolute paths, so a report can point at the file.
- ``--nonblocking`` (on by default, option ``pyspy_nonblocking``): without it py-spy
  pauses the target for every sample, which at 100 Hz on every worker slows the very
  pipeline being profiled. Reading the target while it runs can now and then yield a torn
  stack; py-spy drops those and counts them as "Errors", which the probe reports per
  process (``sample_errors``) so the cost of the choice stays visible.
- Idle threads are not sampled (py-spy's default, no ``--idle``): a share is a share of
  the time a process was running Python code, not of wall time.

A recorder is stopped with SIGINT, on which py-spy writes its output and exits; one that
does not exit in time is killed. ``weakref.finalize`` kills any recorder still running if
the probe is dropped without ``stop()``, so no py-spy process outlives the probe.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import ProbeResult, Watch

__all__ = [
    "Frame",
    "PySpyProbe",
    "find_pyspy",
    "parse_collapsed",
    "parse_frame",
    "rank_functions",
    "speedscope_document",
]

_NAME = "pyspy"
# py-spy prints this line once it has attached and begun sampling.
_SAMPLING_MARK = "Sampling process"
_SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"

Stacks = dict[tuple["Frame", ...], int]


@dataclass(frozen=True, slots=True)
class Frame:
    """One stack frame as py-spy names it.

    Attributes:
        function: The function's name (``<module>`` for module-level code).
        file: Its source file, "" when py-spy gave none.
        line: Its line (the function's first line under ``--function``), None if not given.
    """

    function: str
    file: str = ""
    line: int | None = None

    def to_dict(self) -> dict:
        """Plain-data form (JSON-ready)."""
        return {"function": self.function, "file": self.file, "line": self.line}

    @classmethod
    def from_dict(cls, data: dict) -> Frame:
        """Inverse of :meth:`to_dict`; ``file`` and ``line`` are optional."""
        return cls(data["function"], data.get("file", ""), data.get("line"))


def parse_frame(text: str) -> Frame:
    """Parse one collapsed-stack frame, ``function (file:line)``.

    Args:
        text: The frame as py-spy wrote it.

    Returns:
        The frame; ``file`` is "" and ``line`` None where the text has no location.

    Example:
        >>> parse_frame("load (/data/ds.py:12)")
        Frame(function='load', file='/data/ds.py', line=12)
        >>> parse_frame("<native>")
        Frame(function='<native>', file='', line=None)
    """
    text = text.strip()
    # The function name comes first and never holds " (", while a path may, so split at
    # the first " (" rather than the last.
    open_at = text.find(" (")
    if open_at > 0 and text.endswith(")"):
        name, location = text[:open_at], text[open_at + 2 : -1]
        file, sep, line = location.rpartition(":")
        if sep and line.isdigit():
            return Frame(name, file, int(line))
        return Frame(name, location, None)
    return Frame(text)


def parse_collapsed(text: str) -> Stacks:
    """Parse py-spy's raw output (collapsed stacks) into stack -> sample count.

    Args:
        text: Lines of ``root;...;leaf COUNT``; blank and malformed lines are skipped.

    Returns:
        Each distinct stack (root first) with its count; repeated stacks are summed.

    Example:
        >>> stacks = parse_collapsed("<module> (a.py:1);f (a.py:3) 5\\n")
        >>> stacks[(Frame("<module>", "a.py", 1), Frame("f", "a.py", 3))]
        5
    """
    stacks: Stacks = {}
    for raw in text.splitlines():
        # The count follows the last space; paths may hold spaces, counts never do.
        stack_text, sep, count_text = raw.strip().rpartition(" ")
        if not sep or not count_text.isdigit() or not stack_text:
            continue
        stack = tuple(parse_frame(f) for f in stack_text.split(";") if f.strip())
        if stack:
            stacks[stack] = stacks.get(stack, 0) + int(count_text)
    return stacks


def _rows(counts: Counter[Frame], samples: int, limit: int) -> list[dict]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].function, kv[0].file))
    return [
        {**frame.to_dict(), "samples": n, "share": n / samples if samples else 0.0}
        for frame, n in ranked[:limit]
    ]


def rank_functions(stacks: Stacks, limit: int = 20) -> dict[str, Any]:
    """Top functions by self time (the leaf frame) and total time (anywhere on the stack).

    Args:
        stacks: Stack -> sample count, as :func:`parse_collapsed` returns.
        limit: How many functions to keep in each list.

    Returns:
        ``{"samples": n, "self": rows, "total": rows}``; each row has ``function``,
        ``file``, ``line``, ``samples`` and ``share`` (a fraction of ``n``). A recursive
        function counts once per sample in ``total``.

    Example:
        >>> ranked = rank_functions({(Frame("main"), Frame("f")): 3, (Frame("main"),): 1})
        >>> ranked["self"][0]["function"], ranked["self"][0]["share"]
        ('f', 0.75)
        >>> ranked["total"][0]["function"], ranked["total"][0]["share"]
        ('main', 1.0)
    """
    self_counts: Counter[Frame] = Counter()
    total_counts: Counter[Frame] = Counter()
    samples = 0
    for stack, n in stacks.items():
        samples += n
        self_counts[stack[-1]] += n
        for frame in set(stack):
            total_counts[frame] += n
    return {
        "samples": samples,
        "self": _rows(self_counts, samples, limit),
        "total": _rows(total_counts, samples, limit),
    }


def speedscope_document(profiles: list[tuple[str, Stacks]], name: str = "loadtune") -> dict:
    """A speedscope file ("sampled" profiles, sample counts as weights).

    Args:
        profiles: (profile name, stacks) for each process, in display order.
        name: The document's name.

    Returns:
        The JSON-ready document, frames shared across profiles.

    Example:
        >>> doc = speedscope_document([("main", {(Frame("f", "a.py", 1),): 2})])
        >>> doc["profiles"][0]["samples"], doc["profiles"][0]["weights"]
        ([[0]], [2])
    """
    index: dict[Frame, int] = {}
    frames: list[dict] = []
    out: list[dict] = []
    for profile_name, stacks in profiles:
        samples: list[list[int]] = []
        weights: list[int] = []
        for stack, n in stacks.items():
            ids = []
            for frame in stack:
                if frame not in index:
                    index[frame] = len(frames)
                    entry: dict[str, Any] = {"name": frame.function}
                    if frame.file:
                        entry["file"] = frame.file
                    if frame.line is not None:
                        entry["line"] = frame.line
                    frames.append(entry)
                ids.append(index[frame])
            samples.append(ids)
            weights.append(n)
        out.append(
            {
                "type": "sampled",
                "name": profile_name,
                "unit": "none",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        )
    return {
        "$schema": _SPEEDSCOPE_SCHEMA,
        "shared": {"frames": frames},
        "profiles": out,
        "name": name,
        "activeProfileIndex": 0,
        "exporter": "loadtune probes.pyspy",
    }


def find_pyspy(explicit: str | None = None) -> str | None:
    """The py-spy executable: ``explicit`` if given, else on PATH, else beside Python.

    Args:
        explicit: A path to use instead of searching (the ``pyspy_exe`` option).

    Returns:
        The path, or None when it is missing or not executable.
    """
    if explicit is not None:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    found = shutil.which("py-spy")
    if found:
        return found
    # A virtualenv's scripts directory is often not on PATH when its python is run directly.
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


class _Recorder:
    """One running ``py-spy record`` and the files it writes (mutable, probe-internal)."""

    def __init__(self, role: str, pid: int, proc: subprocess.Popen, raw: Path, log: Path):
        self.role = role
        self.pid = pid
        self.proc = proc
        self.raw = raw
        self.log = log
        self.launched = time.monotonic()
        self.killed = False

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def error_line(self) -> str:
        """py-spy's own error line, or a description of how it ended."""
        for line in self.log_text().splitlines():
            if line.startswith("Error:"):
                return line.strip()
        code = self.proc.returncode
        if code is not None and code < 0:
            return f"py-spy was ended by signal {-code}"
        return f"py-spy exited with code {code}"


def _kill_all(procs: list[subprocess.Popen], tmpdir: list[str]) -> None:
    # Runs from weakref.finalize (probe dropped, or interpreter exit) and at the end of stop().
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                pass
    for path in tmpdir:
        shutil.rmtree(path, ignore_errors=True)
    tmpdir.clear()


class PySpyProbe:
    """Samples the Python stacks of the main process and every worker with py-spy.

    Options read from ``Watch.options``: ``pyspy_rate`` (samples per second, default 25),
    ``pyspy_out`` (write a speedscope file there), ``pyspy_exe`` (the py-spy to run),
    ``pyspy_nonblocking`` (default True; see NOTE [ py-spy recorder settings ]),
    ``pyspy_top`` (functions per list, default 20), ``pyspy_stop_timeout`` (seconds to wait
    for the recorders to write their output, default 10).

    ``stop()`` returns ``summary`` with ``samples``, ``samples_main``, ``samples_workers``,
    ``processes`` (recorded) and ``duration_s``; ``detail`` has ``top`` (group ->
    :func:`rank_functions` result, for ``all``, ``main``, ``workers`` and each
    ``worker-<n>``), ``processes`` (role, pid, status, samples, py-spy's sample errors),
    ``rate_per_s``, ``nonblocking`` and ``speedscope`` (the path written, or None). It is
    unavailable, quoting py-spy's error, when no process could be recorded.

    Example:
        >>> probe = PySpyProbe()
        >>> probe.start(Watch(options={"pyspy_exe": "/nonexistent/py-spy"}))
        >>> probe.sample(0.0)
        >>> probe.stop().available
        False
    """

    name = _NAME

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watch: Watch | None = None
        self._exe: str | None = None
        self._reason = "not started"
        self._rate = 100
        self._nonblocking = True
        self._recorders: dict[int, _Recorder] = {}
        self._launch_errors: list[str] = []
        self._seen: set[int] = set()
        self._procs: list[subprocess.Popen] = []
        self._tmpdir: list[str] = []
        self._started = 0.0
        self._running = False
        self._finalizer = weakref.finalize(self, _kill_all, self._procs, self._tmpdir)

    def start(self, watch: Watch) -> None:
        """Launch a recorder for every process ``watch.pids()`` names now."""
        self._watch = watch
        self._started = time.monotonic()
        options = watch.options
        try:
            # 25 Hz: enough samples for a top-functions table over a profile window, at a
            # quarter of the cost of py-spy's default 100 Hz (measured ~12% of a core there)
            self._rate = int(options.get("pyspy_rate", 25))
        except (TypeError, ValueError):
            self._rate = 0
        if self._rate <= 0:
            self._reason = f"pyspy_rate must be a positive integer, got {options['pyspy_rate']!r}"
            return
        self._nonblocking = bool(options.get("pyspy_nonblocking", True))
        explicit = options.get("pyspy_exe")
        self._exe = find_pyspy(None if explicit is None else str(explicit))
        if self._exe is None:
            where = f"at {explicit!r}" if explicit is not None else "on PATH or beside Python"
            self._reason = f"py-spy not found {where}; install it with `pip install py-spy`"
            return
        try:
            self._tmpdir.append(tempfile.mkdtemp(prefix="loadtune-pyspy-"))
        except OSError as exc:
            self._reason = f"cannot make a directory for py-spy's output: {exc}"
            return
        self._running = True
        self.sample(self._started)

    def sample(self, now: float) -> None:
        """Launch a recorder for any watched pid not seen before (cheap otherwise)."""
        if not self._running or self._watch is None:
            return
        try:
            pids = self._watch.pids()
        except Exception:
            # The loader may be shutting down; the next sample sees the settled set.
            return
        with self._lock:
            for role, pid in pids.items():
                if pid not in self._seen:
                    self._seen.add(pid)
                    self._launch(role, pid)

    def _launch(self, role: str, pid: int) -> None:
        tmp = Path(self._tmpdir[0])
        raw, log = tmp / f"{pid}.txt", tmp / f"{pid}.log"
        cmd = [
            str(self._exe),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            str(self._rate),
            "--function",
            "--full-filenames",
            "--output",
            str(raw),
        ]
        if self._nonblocking:
            cmd.append("--nonblocking")
        # A short log: py-spy's error line without a Rust backtrace after it.
        env = {**os.environ, "RUST_BACKTRACE": "0"}
        try:
            with open(log, "wb") as log_file:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self._launch_errors.append(f"{role} (pid {pid}): cannot run {self._exe}: {exc}")
            return
        self._procs.append(proc)
        self._recorders[pid] = _Recorder(role, pid, proc, raw, log)

    def stop(self) -> ProbeResult:
        """Stop every recorder, parse what they wrote and rank functions."""
        with self._lock:
            was_running, self._running = self._running, False
            recorders = list(self._recorders.values())
        try:
            if not was_running:
                return ProbeResult.unavailable(_NAME, self._reason)
            duration = time.monotonic() - self._started
            timeout = float(self._watch.options.get("pyspy_stop_timeout", 10.0))
            self._halt(recorders, timeout)
            return self._result(recorders, duration)
        except Exception as exc:  # the probe contract: never raise
            return ProbeResult.unavailable(_NAME, f"py-spy probe failed: {exc!r}")
        finally:
            _kill_all(self._procs, self._tmpdir)
            self._reason = "stop() was called already"

    def _halt(self, recorders: list[_Recorder], timeout: float) -> None:
        # A recorder interrupted before it attached dies without a word, so first let each
        # finish attaching (or fail, printing its error) for a bounded time.
        attach_deadline = time.monotonic() + min(timeout, 5.0)
        for rec in recorders:
            while (
                rec.proc.poll() is None
                and _SAMPLING_MARK not in rec.log_text()
                and time.monotonic() < attach_deadline
            ):
                time.sleep(0.02)
        for rec in recorders:
            if rec.proc.poll() is None:
                rec.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for rec in recorders:
            try:
                rec.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                rec.killed = True
                rec.proc.kill()
                rec.proc.wait()

    def _result(self, recorders: list[_Recorder], duration: float) -> ProbeResult:
        limit = int(self._watch.options.get("pyspy_top", 20))
        processes: list[dict] = []
        recorded: list[tuple[_Recorder, Stacks]] = []
        errors: list[str] = list(self._launch_errors)
        for rec in recorders:
            row: dict[str, Any] = {"role": rec.role, "pid": rec.pid}
            code = rec.proc.returncode
            if rec.killed:
                row.update(status="killed", error="py-spy did not stop in time; killed")
            elif code == 0:
                try:
                    stacks = parse_collapsed(rec.raw.read_text(errors="replace"))
                except OSError:
                    stacks = {}
                recorded.append((rec, stacks))
                row.update(status="ok", samples=sum(stacks.values()))
                row.update(_counts(rec.log_text()))
            elif code == -signal.SIGINT:
                # Interrupted before py-spy could take over SIGINT: it never sampled.
                row.update(status="not-attached", error="stopped before py-spy attached")
            else:
                row.update(status="error", error=rec.error_line())
            if "error" in row:
                errors.append(f"{rec.role} (pid {rec.pid}): {row['error']}")
            processes.append(row)
        if not recorded:
            reason = errors[0] if errors else "no process to record"
            return ProbeResult.unavailable(_NAME, f"py-spy could not record {reason}")

        groups: dict[str, Stacks] = {"all": {}}
        for rec, stacks in recorded:
            names = [rec.role]
            if rec.role.startswith("worker-"):
                names.append("workers")
            for group in ["all", *names]:
                merged = groups.setdefault(group, {})
                for stack, n in stacks.items():
                    merged[stack] = merged.get(stack, 0) + n
        top = {group: rank_functions(stacks, limit) for group, stacks in groups.items()}

        detail: dict[str, Any] = {
            "rate_per_s": self._rate,
            "nonblocking": self._nonblocking,
            "processes": processes,
            "top": top,
            "speedscope": None,
        }
        if errors:
            detail["errors"] = errors
        out = self._watch.options.get("pyspy_out")
        if out:
            profiles = [(f"{rec.role} (pid {rec.pid})", stacks) for rec, stacks in recorded]
            try:
                detail["speedscope"] = _write_json(Path(out), speedscope_document(profiles))
            except OSError as exc:
                detail["speedscope_error"] = f"cannot write {out}: {exc}"

        def samples_of(group: str) -> float:
            return float(top[group]["samples"]) if group in top else 0.0

        summary = {
            "samples": samples_of("all"),
            "samples_main": samples_of("main"),
            "samples_workers": samples_of("workers"),
            "processes": float(len(recorded)),
            "duration_s": duration,
        }
        return ProbeResult(name=_NAME, summary=summary, detail=detail)


def _counts(log: str) -> dict[str, int]:
    # py-spy's closing line: "Wrote raw flamegraph data to '...'. Samples: 71 Errors: 0".
    # Its "Errors" are samples it dropped (torn stacks under --nonblocking, for one).
    for line in log.splitlines():
        if "Samples:" in line and "Errors:" in line:
            words = line.replace(":", " ").split()
            try:
                return {"sample_errors": int(words[words.index("Errors") + 1])}
            except (ValueError, IndexError):
                return {}
    return {}


def _write_json(path: Path, document: dict) -> str:
    # Written beside the target and renamed, so a reader never sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)
    return str(path)
