"""The py-spy probe: where the main process and every worker spend their CPU, by function.

``PySpyProbe`` runs one ``py-spy record`` per watched process for the profile window,
reads the collapsed stacks it writes, ranks functions by self and inclusive share of the
samples (per role, for all workers together and overall) and can write a speedscope file
with one profile per process.

# NOTE [ py-spy recorder settings ]
Each recorder is ``py-spy record --pid PID --format raw --rate R --function
--full-filenames [--nonblocking] --output FILE``, run at nice +10:

- One recorder per process, not one ``--subprocesses`` recorder for the tree: that one
  costs more CPU, not less (measured on 2 cores, main and 2 workers: 26 against 16 ms of
  CPU per second at 25 Hz, 16 against 4 at 10 Hz), because it rescans every process of the
  machine ten times a second for new children; and its raw output tags each stack with
  ``process PID:"command line"`` frames that a command line holding ``;`` would break.
- The rate is :func:`choose_rate`'s unless ``pyspy_rate`` is given: each sample costs
  py-spy about 0.5 ms of CPU per process (a loader worker's stack), and on a CPU-bound
  loader every millisecond is taken from a worker, so all the recorders together get at
  most 1% of the usable cores, and no more samples than the top-functions table needs.
- Nice +10 (``pyspy_nice``): a recorder yields the CPU to the processes it watches.
- ``--format raw`` writes collapsed stacks, one line per distinct stack:
  ``frame;frame;...;leaf COUNT`` with root first, each frame ``function (file:line)``
  (checked against py-spy 0.4's real output). A frame may lack the ``(file:line)`` part
  (native or synthetic frames), and the file may lack ``:line`` (``--nolineno``).
- ``--function`` reports each frame at its function's first line rather than the line
  being run, so one function is one row, and the line is where it is defined.
- ``--full-filenames`` keeps absolute paths, so a report can point at the file.
- ``--nonblocking`` (on by default, option ``pyspy_nonblocking``): without it py-spy
  pauses the target for every sample, which slows the very pipeline being profiled.
  Reading the target while it runs can now and then yield a torn stack; py-spy drops
  those and counts them as "Errors", which the probe reports per process
  (``sample_errors``) so the cost of the choice stays visible.
- Idle threads are not sampled (py-spy's default, no ``--idle``): a share is a share of
  the time a process was running Python code, not of wall time.

``start()`` waits (at most ``pyspy_attach_timeout`` seconds) until each recorder has
attached, so that sampling covers the window from its opening and py-spy's start-up is
spent before it. A recorder is stopped with SIGINT, on which py-spy writes its output and
exits; one that does not exit in time is killed. Each recorder's own CPU time up to then
is reported (``cpu_s``), the probe's cost in the open. ``weakref.finalize`` kills any
recorder still running if the probe is dropped without ``stop()``, so no py-spy process
outlives the probe.
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
from pathlib import Path
from typing import Any

import psutil

from .base import ProbeResult, Watch
from .stacks import (
    Frame,
    Stacks,
    parse_collapsed,
    parse_frame,
    rank_functions,
    speedscope_document,
)

__all__ = [  # the stack functions are probes.stacks', kept here for existing callers
    "Frame",
    "PySpyProbe",
    "choose_rate",
    "cpu_seconds",
    "find_pyspy",
    "parse_collapsed",
    "parse_frame",
    "rank_functions",
    "speedscope_document",
]

_NAME = "pyspy"
# py-spy prints this line once it has attached and begun sampling.
_SAMPLING_MARK = "Sampling process"

# The rate rule (see choose_rate and NOTE [ py-spy recorder settings ]).
RATE_MIN_HZ = 10
RATE_MAX_HZ = 100
# Samples per process that make a top-functions table worth reading: at 1000, a function
# with a 30% share is placed within about 1.5 points (one binomial standard error).
TARGET_SAMPLES = 1000
# All recorders together take at most this share of the usable cores...
CPU_BUDGET = 0.01
# ...at this much py-spy CPU per sample per process: about 100 reads of the target's memory
# for a worker 19 frames deep (measured on 2 busy cores: 0.33-0.53 ms for the main process
# of a loader, 0.39-0.60 ms for a worker decoding JPEGs; 0.2 ms for a shallow stack on an
# idle machine). Starting up costs another 10-15 ms per recorder, before the window.
SAMPLE_CPU_S = 0.0005
DEFAULT_NICE = 10


def choose_rate(processes: int, cores: int, window_s: float | None = None) -> int:
    """The sampling rate for ``processes`` recorders on ``cores`` usable cores, in Hz.

    The rule: as fast as the CPU budget allows, all recorders together using at most
    ``CPU_BUDGET`` (1%) of the usable cores at ``SAMPLE_CPU_S`` (0.5 ms) of py-spy CPU per
    sample per process; no faster than needed for ``TARGET_SAMPLES`` (1000) samples per
    process over a window of ``window_s`` seconds, when that is known; and always within
    ``RATE_MIN_HZ`` (10) to ``RATE_MAX_HZ`` (100) Hz, so a process gets 10 samples a
    second even on a machine with more processes than the budget pays for.

    Args:
        processes: The processes recorded at once (the main process and the workers).
        cores: The CPUs the loader may run on.
        window_s: The expected window length in seconds, or None when unknown.

    Returns:
        The rate in whole samples per second.

    Example:
        >>> choose_rate(3, 2)  # main and 2 workers on 2 cores: 0.02 / (3 x 0.0005 s)
        13
        >>> choose_rate(9, 16), choose_rate(9, 16, window_s=60.0)
        (35, 16)
        >>> choose_rate(17, 1), choose_rate(1, 64)
        (10, 100)
    """
    budget = CPU_BUDGET * max(1, cores) / (max(1, processes) * SAMPLE_CPU_S)
    rate = budget if window_s is None or window_s <= 0 else min(budget, TARGET_SAMPLES / window_s)
    # The small epsilon keeps exact quotients (20.0 for one process on one core) whole.
    return int(min(RATE_MAX_HZ, max(RATE_MIN_HZ, rate + 1e-9)))


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
        self.nice: int | None = None  # the recorder's nice value, as read back
        self.start_cpu_s = 0.0  # its CPU time when start() returned (0 if launched later)
        self.cpu_s: float | None = None  # its CPU time when told to stop, or when it ended

    def poll(self) -> int | None:
        """``Popen.poll()``, reaping with ``wait4`` to keep the CPU time of an ended recorder.

        A recorder ends by itself when its target exits (a worker replaced mid-window, or
        all workers at the end of an epoch); its CPU time is then only in the rusage.
        """
        if self.proc.returncode is not None or not hasattr(os, "wait4"):
            return self.proc.poll()
        try:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere already
            return self.proc.poll()
        if pid == 0:
            return None
        self.cpu_s = usage.ru_utime + usage.ru_stime
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return self.proc.returncode

    def attached(self) -> bool:
        """True once py-spy says it is sampling (or has exited, attached or not)."""
        return self.poll() is not None or _SAMPLING_MARK in self.log_text()

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


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user and system) ``pid`` has used so far, or None when it cannot be read.

    Summed over its threads from ``/proc/<pid>/task/*/schedstat`` (nanoseconds, Linux),
    since ``psutil``'s ``cpu_times`` counts in ticks of 10 ms, too coarse for a recorder
    that uses tens of milliseconds in a short window; ``cpu_times`` elsewhere.

    Args:
        pid: A live process (or an exited child not yet waited for).

    Returns:
        The seconds, or None.
    """
    total, found = 0.0, False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tasks = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0]) / 1e9
            found = True
        except (OSError, ValueError, IndexError):
            continue  # a thread that has just exited
    if found:
        return total
    try:
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except (psutil.Error, OSError):  # gone: not measured, never made up
        return None


def _lower_priority(pid: int, by: int) -> int | None:
    """Raise ``pid``'s nice value by ``by`` (to at most 19); return the value it now has."""
    if by <= 0 or not hasattr(os, "setpriority"):
        return None
    try:
        current = os.getpriority(os.PRIO_PROCESS, pid)
        os.setpriority(os.PRIO_PROCESS, pid, min(19, current + by))
        return os.getpriority(os.PRIO_PROCESS, pid)
    except OSError:  # it has exited already; its error line tells why
        return None


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

    Options read from ``Watch.options``: ``pyspy_rate`` (samples per second; default
    :func:`choose_rate` for the processes watched at ``start()``, the usable cores and
    ``window_s``, the expected window length in seconds when the caller knows it),
    ``pyspy_nice`` (added to each recorder's nice value, default 10; 0 leaves it),
    ``pyspy_out`` (write a speedscope file there), ``pyspy_exe`` (the py-spy to run),
    ``pyspy_nonblocking`` (default True), ``pyspy_top`` (functions per list, default 20),
    ``pyspy_attach_timeout`` (seconds ``start()`` waits for the recorders to attach,
    default 2), ``pyspy_stop_timeout`` (seconds to wait for the recorders to write their
    output, default 10). See NOTE [ py-spy recorder settings ].

    ``stop()`` returns ``summary`` with ``samples``, ``samples_main``, ``samples_workers``,
    ``processes`` (recorded), ``duration_s``, ``rate_per_s``, and, when every recorder
    could be read, ``recorder_cpu_s`` (the recorders' own CPU seconds from the end of
    ``start()`` to ``stop()``: what they cost the window) and ``recorder_start_cpu_s``
    (their start-up, before that); ``detail`` has ``top`` (group -> :func:`rank_functions`
    result, for ``all``, ``main``, ``workers`` and each ``worker-<n>``), ``processes``
    (role, pid, status, samples, py-spy's sample errors, the recorder's ``cpu_s`` up to
    ``stop()``, ``start_cpu_s`` and ``nice``), ``rate_per_s``, ``rate_rule`` (how the rate
    was chosen), ``nonblocking`` and ``speedscope`` (the path written, or None). It is
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
        self._rate = 0
        self._rate_rule = ""
        self._nice = DEFAULT_NICE
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
        """Launch a recorder for every process ``watch.pids()`` names now; wait for them."""
        self._watch = watch
        self._started = time.monotonic()
        options = watch.options
        try:
            self._nice = _option(options, "pyspy_nice", DEFAULT_NICE, "a non-negative integer", 0)
            self._rate = self._choose_rate(options)
        except ValueError as exc:
            self._reason = str(exc)
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
        # py-spy's start-up (reading the interpreter's symbols) is spent here, before the
        # window's clock starts, and the first samples fall at the window's opening.
        deadline = time.monotonic() + float(options.get("pyspy_attach_timeout", 2.0))
        with self._lock:
            recorders = list(self._recorders.values())
        while time.monotonic() < deadline and not all(r.attached() for r in recorders):
            time.sleep(0.005)
        for rec in recorders:
            if rec.poll() is None:
                rec.start_cpu_s = cpu_seconds(rec.proc.pid) or 0.0

    def _choose_rate(self, options: dict[str, Any]) -> int:
        """``pyspy_rate`` if given, else :func:`choose_rate`; sets the rule's description."""
        if "pyspy_rate" in options:
            rate = _option(options, "pyspy_rate", 0, "a positive integer", 1)
            self._rate_rule = f"pyspy_rate={rate}"
            return rate
        try:
            processes = len(self._watch.pids()) if self._watch is not None else 1
        except Exception:  # the worker callable reads a live iterator; count main only
            processes = 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cores = cores or os.cpu_count() or 1
        window = options.get("window_s")
        try:
            window_s = float(window) if window is not None else None
        except (TypeError, ValueError):
            raise ValueError(f"window_s must be a number of seconds, got {window!r}") from None
        rate = choose_rate(processes, cores, window_s)
        known = f", window ~{window_s:.3g} s" if window_s else ""
        self._rate_rule = f"choose_rate: {processes} processes, {cores} cores{known}"
        return rate

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
        rec = _Recorder(role, pid, proc, raw, log)
        # Set from here rather than in a preexec_fn, which is unsafe with threads (the
        # sampler thread launches recorders for restarted workers); the few milliseconds
        # before it takes effect are py-spy's start-up.
        rec.nice = _lower_priority(proc.pid, self._nice)
        self._recorders[pid] = rec

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
            while not rec.attached() and time.monotonic() < attach_deadline:
                time.sleep(0.02)
        for rec in recorders:
            if rec.poll() is None:
                rec.cpu_s = cpu_seconds(rec.proc.pid)
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
            if rec.cpu_s is not None:
                row["cpu_s"] = rec.cpu_s
                row["start_cpu_s"] = rec.start_cpu_s
            if rec.nice is not None:
                row["nice"] = rec.nice
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
            "rate_rule": self._rate_rule,
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
            "rate_per_s": float(self._rate),
        }
        if recorders and all(rec.cpu_s is not None for rec in recorders):
            start = sum(rec.start_cpu_s for rec in recorders)
            summary["recorder_cpu_s"] = sum(rec.cpu_s or 0.0 for rec in recorders) - start
            summary["recorder_start_cpu_s"] = start
        return ProbeResult(name=_NAME, summary=summary, detail=detail)


def _option(options: dict[str, Any], key: str, default: int, kind: str, least: int) -> int:
    """``options[key]`` as an int of at least ``least``; ValueError saying what was given."""
    value = options.get(key, default)
    try:
        number = int(value)  # "25" and 25.0 pass; 2.5 and "fast" do not
        if (isinstance(value, float) and number != value) or number < least:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be {kind}, got {value!r}") from None
    return number


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
