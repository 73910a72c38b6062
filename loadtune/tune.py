"""autotune(): an Optuna study of LoaderConfigs, each timed by measure.py, and the verdict.

The only module that imports optuna, and only inside functions (``import loadtune`` stays
fast). The search space is parsed here too (:func:`parse_space`), because the study is the
only thing that reads it.

# NOTE [ Search and decision ]
1. Space: num_workers 0..max_workers (2 x usable cores unless told), prefetch_factor 1..16
   (log scale) and persistent_workers only when num_workers > 0, pin_memory only where an
   accelerator exists, batch_size only when batch sizes are given; ``space`` fixes or
   narrows any of them.
2. Seeds: the incumbent, then the throughput model's pick (a short profile of the baseline
   run through ``diagnose.predict``: the fewest workers predicted within 3% of the best),
   then any ``initial`` configs. They are enqueued, so a handful of trials reach the good
   region before the sampler has learnt anything.
3. Sampler: multivariate TPE with ``group=True`` (the conditional settings form their own
   group) and the constant liar (several processes can share one study). It suits a small
   space of integers and booleans and needs no scipy; the GP sampler would. A suggestion
   already measured is not measured again: the closest unmeasured config is queued instead.
4. Trials: each builds a fresh loader, excludes start-up and warm-up (time to first batch is
   kept apart; the warm-up takes the batches the config holds in flight too, see
   ``measure.steady_warmup``), and times a window of ``batches``. Every fifth of the window
   it reports the running samples/s; a PercentilePruner stops a trial below the 25th
   percentile of the finished ones at that point (a clear loser; the median would cut half
   of them on noise).
   An exception (a crash, a dead worker, out of memory) fails the trial, which is recorded
   with its reason; going over ``memory_limit`` stops it as infeasible (an Optuna
   constraint, so TPE steers away). The study goes on either way.
5. Decision: the finalists (the fastest config, then the cheapest within ``min_gain`` of it,
   then the next fastest; two by default) are measured against the incumbent in interleaved
   rounds (``measure.interleave``). A candidate replaces the incumbent only when the lower
   end of the 95% interval of its speedup exceeds ``1 + min_gain``; of those that do, the
   cheapest (fewest workers, then least memory) within ``min_gain`` of the best speedup is
   chosen. With ``target_rate`` the goal is the cheapest config whose own 95% interval of
   samples/s is above the rate. Otherwise the verdict is "keep", said plainly.

# NOTE [ Loader memory ]
A trial's memory is what its loader adds: the sum of PSS over the main process and the
workers, minus the main process's PSS just before the loader was built, plus the growth of
/dev/shm. PSS splits each shared page among its sharers, so the sum counts the pages a
forked worker shares with its parent once, and a shared-memory batch block mapped by two
processes once; the sum over the process group is conserved by a fork, so subtracting the
main process's PSS from before leaves what the loader costs. Read every 0.1 s by a thread
(``/proc/<pid>/smaps_rollup``, a few microseconds each) and once at the first batch.

# NOTE [ Trials in storage ]
Each trial carries user attributes, so that a resumed or shared study can be read back:
``loadtune_role`` ("measure"; "duplicate" for a suggestion already measured, "unused" for a
trial asked for after the budget was spent: both told FAIL and never measured),
``loadtune_state`` ("running" until it ends, then complete / pruned / failed /
infeasible), ``loadtune_config``, ``loadtune_source``, ``loadtune_host`` ("host:pid") and
``loadtune_ctime`` (the process's start time), and the outcome. A trial left RUNNING by a
process that is gone (same host, pid dead or reused) or whose heartbeat stopped (another
host) is failed and its config queued again once ("retry"), so a killed search loses no
trial and repeats none that finished.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import math
import os
import random
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from . import system
from .config import LoaderConfig
from .config import write as write_config
from .errors import ConfigError
from .measure import (
    Step,
    batch_samples,
    interleave,
    make_step,
    steady_warmup,
    summarize,
    time_window,
)
from .results import ABResult, TrialResult, TuneResult, save
from .targets import LoaderFactory, resolve

__all__ = [
    "Dim",
    "autotune",
    "build_space",
    "grid",
    "parse_memory",
    "parse_space",
    "snippet",
    "write_tuned",
]

SETTINGS = ("num_workers", "prefetch_factor", "persistent_workers", "pin_memory", "batch_size")
_WORKER_ONLY = ("prefetch_factor", "persistent_workers")
_INT_MIN = {"num_workers": 0, "prefetch_factor": 1, "batch_size": 1}
_DEFAULT_TRIALS = 20
_CHUNKS = 5  # intermediate reports per window
_NEAR_BEST = 0.97  # the model's pick: fewest workers predicted within 3% of the best
_HEARTBEAT_S = 5
_GRACE_S = 30
_MEM_INTERVAL_S = 0.1
_MAX_DUPLICATES = 50  # suggestions in a row already measured before the search gives up
_ORPHAN_S = 10.0  # a running trial without an owner this old was abandoned


@dataclass(frozen=True, slots=True)
class Dim:
    """The values one setting may take: an integer range or a tuple of choices.

    Example:
        >>> Dim(low=1, high=4).values()
        (1, 2, 3, 4)
    """

    low: int | None = None
    high: int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def values(self) -> tuple[Any, ...]:
        """Every value, in order."""
        if self.choices:
            return self.choices
        assert self.low is not None and self.high is not None
        return tuple(range(self.low, self.high + 1))

    @property
    def fixed(self) -> bool:
        """True when only one value is allowed."""
        return len(self.values()) == 1

    def to_dict(self) -> dict[str, Any]:
        if self.choices:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log}


# -- the search space ------------------------------------------------------------------------


def _scalar(name: str, text: Any) -> Any:
    if isinstance(text, str):
        word = text.strip().lower()
        if word in ("true", "false"):
            return word == "true"
        try:
            return int(word)
        except ValueError:
            raise ConfigError(
                f"space: {name}={text!r} is not a whole number or true/false"
            ) from None
    return text


def _check(name: str, value: Any) -> Any:
    if name in _INT_MIN:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"space: {name} takes whole numbers, got {value!r}")
        if value < _INT_MIN[name]:
            raise ConfigError(f"space: {name} must be >= {_INT_MIN[name]}, got {value}")
    elif not isinstance(value, bool):
        raise ConfigError(f"space: {name} takes true or false, got {value!r}")
    return value


def _range(name: str, low: Any, high: Any) -> Dim:
    if name not in _INT_MIN:
        raise ConfigError(f"space: {name} is true or false, not a range")
    low, high = _check(name, _scalar(name, low)), _check(name, _scalar(name, high))
    if low > high:
        raise ConfigError(f"space: {name} range {low}..{high} is empty")
    return Dim(low=low, high=high, log=name == "prefetch_factor")


def _dim(name: str, value: Any) -> Dim:
    if isinstance(value, str) and ".." in value:
        low, _, high = value.partition("..")
        return _range(name, low, high)
    if isinstance(value, str) and "|" in value:
        value = value.split("|")
    if isinstance(value, Mapping):
        if "choices" in value:
            value = list(value["choices"])
        elif "low" in value and "high" in value:
            return _range(name, value["low"], value["high"])
        else:
            raise ConfigError(f"space: {name} needs low and high, or choices, got {value!r}")
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ConfigError(f"space: {name} as a tuple is a range (low, high), got {value!r}")
        return _range(name, *value)
    if isinstance(value, (list, range)):
        choices = tuple(dict.fromkeys(_check(name, _scalar(name, v)) for v in value))
        if not choices:
            raise ConfigError(f"space: {name} has no values")
        return Dim(choices=tuple(sorted(choices)))
    return Dim(choices=(_check(name, _scalar(name, value)),))


def parse_space(spec: Mapping[str, Any] | str | None) -> dict[str, Dim]:
    """Parse the settings a search space fixes or narrows.

    Forms (the same in Python, JSON and on the command line):

    * a value fixes a setting: ``prefetch_factor=2``, ``persistent_workers=true``;
    * ``lo..hi`` (or a tuple ``(lo, hi)``, or ``{"low": lo, "high": hi}``) is an inclusive
      range of whole numbers: ``num_workers=0..8``;
    * ``a|b|c`` (or a list, or ``{"choices": [...]}``) lists the values allowed:
      ``batch_size=64|128``.

    Text is either JSON (``{"num_workers": "0..8", "batch_size": [64, 128]}``) or
    comma-separated ``name=value`` entries. Settings: num_workers, prefetch_factor,
    persistent_workers, pin_memory, batch_size.

    Raises:
        ConfigError: an unknown setting, a malformed entry, an empty range, a value of the
            wrong kind; the message names the entry.

    Example:
        >>> parse_space("num_workers=0..8,batch_size=64|128")["batch_size"].values()
        (64, 128)
    """
    if spec is None:
        return {}
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"space is not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise ConfigError("space JSON must be an object of settings")
        else:
            data = {}
            for part in (p.strip() for p in text.split(",")):
                if not part:
                    continue
                name, eq, value = part.partition("=")
                if not eq or not value.strip():
                    raise ConfigError(
                        f"space entry {part!r} must look like name=value, name=lo..hi or name=a|b"
                    )
                data[name.strip()] = value.strip()
    elif isinstance(spec, Mapping):
        data = dict(spec)
    else:
        raise ConfigError(f"space must be a dict or text, got {type(spec).__name__}")
    out = {}
    for name, value in data.items():
        if name not in SETTINGS:
            raise ConfigError(f"space: unknown setting {name!r}; known: {', '.join(SETTINGS)}")
        if value is not None:
            out[name] = _dim(name, value)
    return out


def _accelerator() -> bool:
    import torch

    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    return bool(torch.cuda.is_available())


def build_space(
    baseline: LoaderConfig,
    *,
    max_workers: int | None = None,
    batch_sizes: Sequence[int] | None = None,
    space: Mapping[str, Any] | str | None = None,
    accelerator: bool | None = None,
    cores: int | None = None,
) -> dict[str, Dim]:
    """The search space: the defaults (NOTE [ Search and decision ]) narrowed by ``space``.

    Example:
        >>> s = build_space(LoaderConfig(batch_size=32), max_workers=4, accelerator=False)
        >>> s["num_workers"].values(), s["pin_memory"].values(), s["batch_size"].values()
        ((0, 1, 2, 3, 4), (False,), (32,))
    """
    if max_workers is not None and max_workers < 0:
        raise ConfigError(f"max_workers must be >= 0, got {max_workers}")
    if accelerator is None:
        accelerator = _accelerator()
    if max_workers is None:
        max_workers = 2 * (cores or len(os.sched_getaffinity(0)))
    dims = {
        "num_workers": Dim(low=0, high=max_workers),
        "prefetch_factor": Dim(low=1, high=16, log=True),
        "persistent_workers": Dim(choices=(False, True)),
        "pin_memory": Dim(choices=(False, True) if accelerator else (baseline.pin_memory,)),
        "batch_size": _dim("batch_size", list(batch_sizes))
        if batch_sizes
        else Dim(choices=(baseline.batch_size,)),
    }
    dims.update(parse_space(space))
    return dims


def parse_memory(text: str | float | int | None) -> float | None:
    """Bytes from ``2GiB``, ``512MiB``, ``1.5GB``, ``800M`` or a plain number.

    Example:
        >>> parse_memory("2GiB")
        2147483648.0
    """
    if text is None or isinstance(text, (int, float)):
        if text is not None and text <= 0:
            raise ConfigError(f"memory limit must be > 0, got {text}")
        return None if text is None else float(text)
    units = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9}
    units |= {"t": 1e12, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in units:
        raise ConfigError(f"memory limit {text!r} is not a size like 2GiB, 512MiB or 8e9")
    value = float(match.group(1)) * units[match.group(2).lower()]
    if value <= 0:
        raise ConfigError(f"memory limit must be > 0, got {text!r}")
    return value


def _config_of(values: Mapping[str, Any]) -> LoaderConfig:
    workers = values["num_workers"]
    return LoaderConfig(
        num_workers=workers,
        prefetch_factor=values.get("prefetch_factor") if workers else None,
        batch_size=values["batch_size"],
        pin_memory=values["pin_memory"],
        persistent_workers=bool(values.get("persistent_workers")) if workers else False,
    )


def grid(space: dict[str, Dim]) -> list[LoaderConfig]:
    """Every config in the space (small: a few hundred on a 2-core machine)."""
    out = []
    common = list(itertools.product(space["pin_memory"].values(), space["batch_size"].values()))
    for workers in space["num_workers"].values():
        inner = (
            itertools.product(
                space["prefetch_factor"].values(), space["persistent_workers"].values()
            )
            if workers
            else [(None, False)]
        )
        for (prefetch, persistent), (pin, batch) in itertools.product(inner, common):
            out.append(
                _config_of(
                    {
                        "num_workers": workers,
                        "prefetch_factor": prefetch,
                        "persistent_workers": persistent,
                        "pin_memory": pin,
                        "batch_size": batch,
                    }
                )
            )
    return out


def _distance(a: LoaderConfig, b: LoaderConfig, span: int) -> float:
    d = abs(a.num_workers - b.num_workers) / max(1, span)
    d += abs(math.log2(a.prefetch_factor or 2) - math.log2(b.prefetch_factor or 2)) / 4
    d += 0.25 * (a.persistent_workers != b.persistent_workers) + 0.25 * (
        a.pin_memory != b.pin_memory
    )
    d += abs(math.log2(a.batch_size or 1) - math.log2(b.batch_size or 1)) / 4
    return d


def _key(config: LoaderConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)


def _params(config: LoaderConfig, space: dict[str, Dim]) -> dict[str, Any]:
    """The Optuna params of a config: the free settings whose value lies in the space."""
    values = config.to_dict()
    out = {}
    for name in SETTINGS:
        if name in _WORKER_ONLY and not config.num_workers:
            continue
        dim = space[name]
        if not dim.fixed and values[name] in dim.values():
            out[name] = values[name]
    return out


def _suggest(trial: Any, space: dict[str, Dim], preset: LoaderConfig | None) -> LoaderConfig:
    """Ask the trial for every free setting; a queued trial keeps its own config."""
    values: dict[str, Any] = {}
    fixed = preset.to_dict() if preset is not None else {}
    for name in SETTINGS:
        if name in _WORKER_ONLY and values["num_workers"] == 0:
            continue
        dim = space[name]
        if dim.fixed:
            values[name] = dim.values()[0]
        elif preset is not None and fixed[name] not in dim.values():
            values[name] = fixed[name]  # outside the space (an incumbent): not a param
        elif dim.choices:
            values[name] = trial.suggest_categorical(name, list(dim.choices))
        else:
            values[name] = trial.suggest_int(name, dim.low, dim.high, log=dim.log)
    return preset if preset is not None else _config_of(values)


# -- one trial -------------------------------------------------------------------------------


class _Stop(Exception):
    """Ends a trial early: ``state`` is "pruned" or "infeasible"."""

    def __init__(self, state: str, reason: str, rate: float | None = None) -> None:
        super().__init__(reason)
        self.state, self.reason, self.rate = state, reason, rate


def _pss(proc: psutil.Process) -> float:
    try:
        return float(proc.memory_full_info().pss)
    except (psutil.AccessDenied, AttributeError):
        return float(proc.memory_info().rss)


def _shm_used() -> float:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return 0.0
    return float((st.f_blocks - st.f_bfree) * st.f_frsize)


class _MemoryWatch:
    """Peak memory a loader adds (NOTE [ Loader memory ]), read by a thread and on demand."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.me = psutil.Process()
        self.base = _pss(self.me)
        self.shm_base = _shm_used()
        self.peak = 0.0
        self.it: Any = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="loadtune-memory", daemon=True)

    def start(self, it: Any) -> None:
        self.it = it
        self._thread.start()

    def read(self) -> float:
        pids = [w.pid for w in getattr(self.it, "_workers", None) or () if getattr(w, "pid", None)]
        total = _pss(self.me) - self.base + max(0.0, _shm_used() - self.shm_base)
        for pid in pids:
            try:
                total += _pss(psutil.Process(pid))
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                pass
        with self._lock:
            self.peak = max(self.peak, total)
        return total

    @property
    def over(self) -> bool:
        return self.limit is not None and self.peak > self.limit

    def _run(self) -> None:
        while not self._done.wait(_MEM_INTERVAL_S):
            try:
                self.read()
            except psutil.Error:
                pass

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()


@dataclass(frozen=True, slots=True)
class _Outcome:
    state: str
    reason: str = ""
    rate: float | None = None
    measurement: Any = None
    peak: float | None = None
    duration: float = 0.0


def _shutdown(it: Any) -> None:
    """Stop an iterator's workers now (a trial stopped early must not leave them running)."""
    for name in ("_shutdown", "_shutdown_workers"):
        fn = getattr(it, name, None)
        if fn is not None:
            try:
                fn()
            except Exception:
                pass
            return


def _reason(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory (MemoryError)"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _measure_trial(
    factory: LoaderFactory,
    config: LoaderConfig,
    *,
    batches: int,
    warmup: int,
    step: Step,
    memory_limit: float | None,
    seconds: float | None,
    report: Callable[[int, float], bool] | None,
) -> _Outcome:
    """Time one config; stop it when pruned or over the memory limit; never raises."""
    t0 = time.monotonic()
    warmup = steady_warmup(config, warmup)
    watch = _MemoryWatch(memory_limit)
    chunk = max(1, batches // _CHUNKS)
    window = {"open": False, "samples": 0, "t0": 0.0}
    holder: dict[str, Any] = {}

    def check() -> None:
        if watch.over:
            raise _Stop(
                "infeasible",
                f"the loader used {watch.peak / 2**20:,.0f} MiB, over the "
                f"{memory_limit / 2**20:,.0f} MiB limit",  # type: ignore[operator]
            )

    def counted(batch: Any) -> None:
        if window["open"]:
            window["samples"] += batch_samples(batch)
        elif "first" not in holder:
            holder["first"] = True
            watch.read()
        check()
        if step is not None:
            step(batch)

    def on_window_start() -> None:
        window["open"], window["t0"] = True, time.monotonic()

    def on_batch(n: int) -> None:
        if report is None or n % chunk:
            return
        rate = window["samples"] / max(1e-9, time.monotonic() - window["t0"])
        if report(n // chunk, rate):
            raise _Stop(
                "pruned",
                f"stopped after {n} of {batches} batches at {rate:,.0f} samples/s, below the "
                "25th percentile of the finished trials at that point",
                rate,
            )

    def on_iter(it: Any) -> None:
        holder["it"] = it
        watch.start(it)

    def on_window_end(run: Any) -> None:
        watch.read()

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This DataLoader will create")
            loader = factory(config)
            run = time_window(
                loader,
                batches=batches,
                seconds=seconds,
                warmup=warmup,
                step=counted,
                on_iter=on_iter,
                on_window_start=on_window_start,
                on_window_end=on_window_end,
                on_batch=on_batch,
            )
        check()
    except _Stop as stop:
        _shutdown(holder.get("it"))
        watch.stop()
        return _Outcome(stop.state, stop.reason, stop.rate, None, watch.peak, time.monotonic() - t0)
    except Exception as exc:  # a failed config is a result, and the study goes on
        _shutdown(holder.get("it"))
        watch.stop()
        return _Outcome("failed", _reason(exc), None, None, watch.peak, time.monotonic() - t0)
    finally:
        holder.pop("it", None)
        watch.stop()
    if run.window_batches == 0:
        return _Outcome(
            "failed",
            f"the loader ended during warm-up ({warmup} batches): nothing was measured",
            None,
            None,
            watch.peak,
            time.monotonic() - t0,
        )
    m = summarize([run], warmup=warmup)
    return _Outcome("complete", "", m.samples_per_s, m, watch.peak, time.monotonic() - t0)


# -- storage and the study -------------------------------------------------------------------


def _masked(url: str) -> str:
    """The URL with its password hidden (it goes into results and onto the screen)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def _storage(url: str | None) -> Any:
    """An Optuna RDBStorage (heartbeat on) for ``url``, or None for an in-memory study."""
    if url is None:
        return None
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme.split("+")[0] not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise ConfigError(
            f"storage {_masked(url)!r} is not a database URL: use sqlite:///file.db or "
            "postgresql://user:password@host/dbname"
        )
    if scheme in ("postgres", "postgresql"):
        url = "postgresql" + url[len(scheme) :]
        driver = _postgres_driver()
        if driver is None:
            raise ConfigError(
                f"cannot open the trial storage {_masked(url)!r}: no PostgreSQL driver "
                "installed (pip install psycopg2-binary)"
            )
        url = f"postgresql+{driver}" + url[len("postgresql") :]
    import optuna

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeat_interval is experimental
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=_HEARTBEAT_S,
                    grace_period=_GRACE_S,
                    heartbeat_stale_trial_callback=_requeue_stale,
                )
        except Exception as exc:
            text = str(exc)
            # Processes that open a new database at once race to create its tables; the
            # loser sees the winner's rows or a locked file, and finds the tables next time.
            racing = any(w in text for w in ("UNIQUE", "duplicate", "already exists", "locked"))
            if racing and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
            raise ConfigError(f"cannot open the trial storage {_masked(url)!r}: {first}") from None
    raise AssertionError("unreachable")


def _postgres_driver() -> str | None:
    """The installed PostgreSQL driver, psycopg 3 first.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, while psycopg2 is what many
    machines (and our dev extra) have: the URL names the driver that is there.
    """
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return driver
    return None


def _requeue_stale(study: Any, trial: Any) -> None:
    """Optuna's callback for a trial whose heartbeat stopped: queue its config once more."""
    _requeue(study, trial)


def _requeue(study: Any, trial: Any) -> None:
    attrs = trial.user_attrs
    if attrs.get("loadtune_role") != "measure" or attrs.get("loadtune_source") == "retry":
        return  # a retry that was interrupted too is reported as failed, not tried a third time
    study.enqueue_trial(
        dict(trial.params),
        user_attrs={
            "loadtune_config": attrs.get("loadtune_config"),
            "loadtune_source": "retry",
            "loadtune_retry_of": trial.number,
        },
    )


def _me() -> tuple[str, float]:
    proc = psutil.Process()
    return f"{socket.gethostname()}:{proc.pid}", proc.create_time()


def _alive(host: str, ctime: float | None) -> bool:
    """Whether the process that owns a trial still runs (only knowable on this host)."""
    name, _, pid = host.rpartition(":")
    if name != socket.gethostname() or not pid.isdigit():
        return True  # another machine: the heartbeat decides
    try:
        proc = psutil.Process(int(pid))
        return ctime is None or abs(proc.create_time() - ctime) < 0.01
    except psutil.NoSuchProcess:
        return False


def _reap(study: Any) -> None:
    """Fail the trials whose process is gone and queue their configs again (once)."""
    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental since 2.9, still the way to do it
        optuna.storages.fail_stale_trials(study)
    now = _dt.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host = trial.user_attrs.get("loadtune_host")
        if host is None:
            # Killed between ask() and naming its owner (a few milliseconds): a live process
            # names it long before this, so an old one without an owner is abandoned.
            started = trial.datetime_start
            if started is None or (now - started).total_seconds() < _ORPHAN_S:
                continue
        elif _alive(host, trial.user_attrs.get("loadtune_ctime")):
            continue
        try:
            if study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                _requeue(study, trial)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another process got there first


def _study_name(factory: LoaderFactory, space: dict[str, Dim], settings: dict[str, Any]) -> str:
    if factory.target.startswith("<"):  # an object: "<module.Class object>"
        slug = factory.target.strip("<>").split()[0].rpartition(".")[2]
    else:
        where, _, name = factory.target.rpartition(":")
        slug = f"{Path(where).stem}-{name}"
    slug = re.sub(r"[^A-Za-z0-9]+", "-", slug)
    digest = hashlib.sha1(
        json.dumps(
            {
                "target": factory.target,
                "backend": factory.backend,
                "baseline": factory.baseline.to_dict(),
                "space": {k: v.to_dict() for k, v in space.items()},
                **settings,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:8]
    return f"loadtune-{slug.strip('-') or 'target'}-{digest}"


def _open_study(
    storage: Any, name: str | None, default: str, resume: bool, seed: int, trials: int
) -> tuple[Any, str]:
    """Create, continue or join the study (see autotune's ``resume`` and ``study_name``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if name is None and storage is not None:
        try:
            names = set(optuna.get_all_study_names(storage))
        except Exception as exc:
            raise ConfigError(f"cannot read the trial storage: {_reason(exc)}") from None
        ours = sorted(
            (n for n in names if n == default or re.fullmatch(re.escape(default) + r"-\d+", n)),
            key=lambda n: int(n.rsplit("-", 1)[1]) if n != default else 1,
        )
        if resume and ours:
            name = ours[-1]
        else:
            name = default
            k = 2
            while name in names:
                name, k = f"{default}-{k}", k + 1
    name = name or default
    existing = 0
    if storage is not None:
        try:
            summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
            existing = summaries[name].n_trials if name in summaries else 0
        except Exception:
            existing = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # group=True is experimental
        sampler = optuna.samplers.TPESampler(
            seed=seed + existing,  # a resumed study must not replay the first run's draws
            multivariate=True,
            group=True,
            constant_liar=True,
            n_startup_trials=max(4, min(10, trials // 3)),
        )
    # Judged from the second report on (40% of the window): the first one still carries the
    # ramp from warm-up to steady state, which is slower with fewer batches in flight.
    pruner = optuna.pruners.PercentilePruner(
        25.0, n_startup_trials=4, n_warmup_steps=2, interval_steps=1
    )
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    return study, name


def _trial_result(trial: Any) -> TrialResult | None:
    """A TrialResult from a stored trial, or None for one that was never measured."""
    from .results import Measurement

    attrs = trial.user_attrs
    if attrs.get("loadtune_role") != "measure" or "loadtune_config" not in attrs:
        return None
    state = attrs.get("loadtune_state", "running")
    reason = attrs.get("loadtune_reason", "")
    if state == "running":
        if trial.state.name != "FAIL":
            return None  # still being measured by another process
        state, reason = "failed", "interrupted: the process measuring it stopped before the end"
    m = attrs.get("loadtune_measurement")
    return TrialResult(
        number=trial.number,
        config=LoaderConfig.from_dict(attrs["loadtune_config"]),
        state=state,
        measurement=Measurement.from_dict(m) if m else None,
        reason=reason,
        samples_per_s=attrs.get("loadtune_rate"),
        peak_memory_bytes=attrs.get("loadtune_peak_memory"),
        duration_s=attrs.get("loadtune_duration"),
        source=attrs.get("loadtune_source", "sampler"),
        host=attrs.get("loadtune_host", ""),
    )


def _trial_results(study: Any) -> list[TrialResult]:
    """The study's measured trials; an interrupted one is left out when it was retried."""
    raw = [r for t in study.get_trials(deepcopy=False) if (r := _trial_result(t)) is not None]
    finished = {_key(r.config) for r in raw if not r.reason.startswith("interrupted")}
    return [
        r for r in raw if not (r.reason.startswith("interrupted") and _key(r.config) in finished)
    ]


def _budget_used(study: Any, number: int) -> int:
    """Measured trials numbered up to ``number``; a trial still being set up counts too."""
    used = 0
    for t in study.get_trials(deepcopy=False):
        if t.number > number:
            continue
        role = t.user_attrs.get("loadtune_role")
        if role in ("measure", "claim"):
            interrupted = t.state.name == "FAIL" and t.user_attrs.get("loadtune_state") == "running"
            used += not interrupted
        elif role is None and t.state.name == "RUNNING":
            used += 1  # another process has just asked for it: count it, to stay in budget
    return used


class _Heartbeat:
    """Records a trial's heartbeat while it runs (ask/tell does not start Optuna's thread)."""

    def __init__(self, storage: Any, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Heartbeat:
        if self.storage is not None and self.storage.get_heartbeat_interval():
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:
                pass
            if self._done.wait(self.storage.get_heartbeat_interval()):
                return

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()


# -- the search ------------------------------------------------------------------------------


@dataclass
class _Search:
    """What the search loop needs; the loop itself is :meth:`run`."""

    study: Any
    storage: Any
    factory: LoaderFactory
    space: dict[str, Dim]
    trials: int | None
    deadline: float | None
    reserve: Callable[[], float]
    batches: int
    warmup: int
    step: Step
    memory_limit: float | None
    seed: int
    progress: Callable[[TrialResult, LoaderConfig, float | None, float | None], None] | None
    _duplicates: int = 0  # suggestions in a row already measured
    _best: float | None = None  # best samples/s this process has measured

    def enqueue(self, config: LoaderConfig, source: str) -> None:
        """Queue a config unless the study has measured or queued it already."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False):
            same = t.user_attrs.get("loadtune_config") == config.to_dict()
            if same and (t.state == TrialState.WAITING or t.user_attrs.get("loadtune_role")):
                return
        self.study.enqueue_trial(
            _params(config, self.space),
            user_attrs={"loadtune_config": config.to_dict(), "loadtune_source": source},
        )

    def _measured(self, exclude: int = -1) -> set[str]:
        """Configs measured, being measured, claimed or queued (NOTE [ Trials in storage ])."""
        out = set()
        for t in self.study.get_trials(deepcopy=False):
            a = t.user_attrs
            if t.number == exclude:
                continue
            if a.get("loadtune_role") in ("measure", "claim") and "loadtune_config" in a:
                interrupted = t.state.name == "FAIL" and a.get("loadtune_state") == "running"
                if not interrupted:
                    out.add(_key(LoaderConfig.from_dict(a["loadtune_config"])))
            elif t.state.name == "WAITING" and "loadtune_config" in a:
                out.add(_key(LoaderConfig.from_dict(a["loadtune_config"])))
        return out

    def _nearest(self, config: LoaderConfig, number: int) -> LoaderConfig | None:
        measured = self._measured()
        left = [c for c in grid(self.space) if _key(c) not in measured]
        if not left:
            return None
        span = self.space["num_workers"].values()[-1] - self.space["num_workers"].values()[0]
        best = min(_distance(config, c, span) for c in left)
        ties = [c for c in left if _distance(config, c, span) == best]
        return random.Random(self.seed + number).choice(ties)

    def settle(self, timeout: float) -> None:
        """Wait for the trials other processes sharing the study still measure.

        Done when the study holds its budget of finished trials and nothing runs, or when
        nothing has run for three polls in a row (the others stopped for their own reasons).
        """
        from optuna.trial import TrialState

        end = time.monotonic() + timeout
        if self.deadline is not None:
            end = min(end, self.deadline)
        quiet = 0
        while time.monotonic() < end:
            _reap(self.study)
            trials = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if trials:
                quiet = 0
            else:
                quiet += 1
                if (self.trials is not None and self.finished() >= self.trials) or quiet >= 3:
                    return
            time.sleep(0.2)

    def time_left(self) -> bool:
        """Whether the time budget leaves room for another trial and the A/B."""
        return self.deadline is None or time.monotonic() + self.reserve() < self.deadline

    def run(self) -> str:
        """Measure trials until the budget is spent; returns why the search stopped."""
        import optuna

        owner = _me()
        while True:
            _reap(self.study)
            if self.trials is not None and _budget_used(self.study, 1 << 62) >= self.trials:
                return f"{self.trials} trials measured"
            if not self.time_left():
                return "time budget spent"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ask() warns that heartbeats suit optimize()
                trial = self.study.ask()
            # From here on the trial has an owner and a heartbeat, so that a kill at any point
            # leaves nothing that _reap cannot fail (NOTE [ Trials in storage ]).
            try:
                with _Heartbeat(self.storage, trial._trial_id):
                    trial.set_user_attr("loadtune_host", owner[0])
                    trial.set_user_attr("loadtune_ctime", owner[1])
                    stop = self._trial(trial)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another process judged it abandoned and failed it: ask again
            if stop is not None:
                return stop

    def finished(self) -> int:
        """Trials measured to the end in the study, by any process."""
        return sum(
            1
            for t in self.study.get_trials(deepcopy=False)
            if t.user_attrs.get("loadtune_role") == "measure"
            and t.user_attrs.get("loadtune_state") not in (None, "running")
        )

    def _trial(self, trial: Any) -> str | None:
        """Run one asked trial; returns why the search must stop, or None to go on."""
        from optuna.trial import TrialState

        preset_data = trial.user_attrs.get("loadtune_config")
        preset = LoaderConfig.from_dict(preset_data) if preset_data else None
        source = trial.user_attrs.get("loadtune_source", "sampler")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = _suggest(trial, self.space, preset)
        # Claim the config, then look again: two processes that drew the same config at the
        # same moment both see the other's claim at the second look at the latest, so at most
        # one of them measures it (both may yield; the config is not lost then, only left for
        # a later suggestion).
        claimed = False
        if _key(config) not in self._measured(exclude=trial.number):
            for name, value in (
                ("loadtune_config", config.to_dict()),
                ("loadtune_source", source),
                ("loadtune_state", "running"),
                ("loadtune_role", "claim"),
            ):
                trial.set_user_attr(name, value)
            claimed = _key(config) not in self._measured(exclude=trial.number)
        if not claimed:
            trial.set_user_attr("loadtune_role", "duplicate")
            self.study.tell(trial, state=TrialState.FAIL)
            self._duplicates += 1
            near = self._nearest(config, trial.number)
            if near is None:
                return "every config in the space was measured"
            if self._duplicates > _MAX_DUPLICATES:
                return "the sampler kept suggesting configs already measured"
            self.enqueue(near, "nearest")
            return None
        self._duplicates = 0
        trial.set_user_attr("loadtune_role", "measure")
        if self.trials is not None and _budget_used(self.study, trial.number) > self.trials:
            trial.set_user_attr("loadtune_role", "unused")
            self.study.tell(trial, state=TrialState.FAIL)
            return f"{self.trials} trials measured"

        def report(chunk: int, rate: float) -> bool:
            trial.report(rate, chunk)
            return source != "incumbent" and trial.should_prune()

        seconds = None if self.deadline is None else max(1.0, self.deadline - time.monotonic())
        out = _measure_trial(
            self.factory,
            config,
            batches=self.batches,
            warmup=self.warmup,
            step=self.step,
            memory_limit=self.memory_limit,
            seconds=seconds,
            report=report,
        )
        for name, value in (
            ("loadtune_reason", out.reason),
            ("loadtune_rate", out.rate),
            ("loadtune_peak_memory", out.peak),
            ("loadtune_duration", out.duration),
            ("loadtune_measurement", out.measurement.to_dict() if out.measurement else None),
            ("loadtune_state", out.state),
        ):
            trial.set_user_attr(name, value)
        if out.state == "complete":
            self.study.tell(trial, out.rate)
            self._best = max(self._best or 0.0, out.rate or 0.0)
        elif out.state == "infeasible":
            assert self.memory_limit is not None
            trial.set_constraint("memory", (out.peak or 0.0) - self.memory_limit)
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            state = TrialState.PRUNED if out.state == "pruned" else TrialState.FAIL
            self.study.tell(trial, state=state)
        if self.progress is not None:
            result = _trial_result(self.study._storage.get_trial(trial._trial_id))
            if result is not None:
                self.progress(result, config, out.rate, self._best)
        return None


# -- the decision ----------------------------------------------------------------------------


def _cost(t: TrialResult) -> tuple[int, float]:
    """Cheaper first: fewer workers, then less memory (in 16 MiB steps: finer is noise)."""
    memory = t.peak_memory_bytes if t.peak_memory_bytes is not None else float("inf")
    return (t.config.num_workers, math.floor(memory / 2**24))


def _finalists(
    trials: list[TrialResult], incumbent: LoaderConfig, k: int, min_gain: float
) -> list[TrialResult]:
    """The fastest, then the cheapest within min_gain of it, then the next fastest."""
    done = [
        t
        for t in trials
        if t.state == "complete" and t.config != incumbent and t.samples_per_s is not None
    ]
    if not done or k < 1:
        return []
    fastest = sorted(done, key=lambda t: -(t.samples_per_s or 0.0))
    top = fastest[0].samples_per_s or 0.0
    near = sorted(
        (t for t in done if (t.samples_per_s or 0) * (1 + min_gain) >= top),
        key=lambda t: (_cost(t), -(t.samples_per_s or 0.0)),
    )
    out = [fastest[0]]
    for t in near + fastest:
        if len(out) >= k:
            break
        if all(t.config != o.config for o in out):
            out.append(t)
    return out


def _describe(config: LoaderConfig, incumbent: LoaderConfig | None = None) -> str:
    values, base = config.to_dict(), (incumbent.to_dict() if incumbent else {})
    changed = [f"{k}={v}" for k, v in values.items() if base.get(k, object()) != v]
    return ", ".join(changed) or "the same settings"


@dataclass(frozen=True, slots=True)
class _Decision:
    tuned: LoaderConfig
    verdict: str
    reason: str
    ab: ABResult | None
    finalists: tuple[ABResult, ...]


def _decide(
    trials: list[TrialResult],
    incumbent: LoaderConfig,
    compare: Callable[[LoaderConfig, float | None], ABResult | str],
    *,
    finalists: int,
    min_gain: float,
    target_rate: float | None,
) -> _Decision:
    """Pick the tuned config from the search and the A/B tests (NOTE [ Search and decision ])."""
    inc = next((t for t in trials if t.config == incumbent and t.state == "complete"), None)
    inc_bad = next((t for t in trials if t.config == incumbent and t.state != "complete"), None)
    done = [t for t in trials if t.state == "complete" and t.config != incumbent]
    if not done:
        why = "no other config completed its trial" if trials else "no trial was measured"
        return _Decision(incumbent, "keep", f"keep the current settings: {why}", None, ())
    prefix = ""
    if target_rate is not None:
        reach = sorted((t for t in done if (t.samples_per_s or 0) >= target_rate), key=_cost)
        inc_reaches = inc is not None and (inc.samples_per_s or 0) >= target_rate
        if inc_reaches:
            reach = [t for t in reach if _cost(t) < _cost(inc)]  # type: ignore[arg-type]
        if reach:
            results, errors = [], []
            for t in reach[:finalists]:
                ab = compare(t.config, target_rate)
                if isinstance(ab, str):
                    errors.append(ab)
                    continue
                results.append(ab)
                if ab.verdict == "apply":
                    return _Decision(
                        t.config,
                        "apply",
                        f"apply {_describe(t.config, incumbent)}: the cheapest config that "
                        f"reaches {target_rate:,.0f} samples/s ({ab.reason})",
                        ab,
                        tuple(results),
                    )
            shown = results[0].reason if results else "; ".join(errors)
            return _Decision(
                incumbent,
                "keep",
                f"keep the current settings: no cheaper config surely reaches "
                f"{target_rate:,.0f} samples/s ({shown})",
                results[0] if results else None,
                tuple(results),
            )
        if inc_reaches:
            return _Decision(
                incumbent,
                "keep",
                f"keep the current settings: they reach {target_rate:,.0f} samples/s and no "
                "cheaper config did in the search",
                None,
                (),
            )
        prefix = f"no config reached {target_rate:,.0f} samples/s in the search, so: "
    picks = _finalists(trials, incumbent, finalists, min_gain)
    # When the incumbent fails or breaks the memory limit it is no option at all: every
    # finalist that runs beats it, and the rule below picks the cheapest near the best.
    lost = inc is None and inc_bad is not None
    results, passing, errors = [], [], []
    for t in picks:
        if any(_cost(p) <= _cost(t) for p, _ in passing):
            continue  # a config as cheap has won already: this one could not be chosen
        ab = compare(t.config, None)
        if isinstance(ab, str):
            errors.append(ab)
            continue
        results.append(ab)
        if lost or ab.verdict == "apply":
            passing.append((t, ab))
    if lost and not passing:
        t = picks[1] if len(picks) > 1 and _cost(picks[1]) < _cost(picks[0]) else picks[0]
        passing = [(t, None)]  # type: ignore[list-item]
    if passing:
        top = max((ab.speedup for _, ab in passing if ab is not None), default=0.0)
        eligible = [
            (t, ab) for t, ab in passing if ab is None or ab.speedup * (1 + min_gain) >= top
        ]
        t, ab = min(eligible, key=lambda p: _cost(p[0]))
        if lost:
            assert inc_bad is not None
            broken = "goes over the memory limit" if inc_bad.state == "infeasible" else "fails"
            why = f"the current config {broken} ({inc_bad.reason})"
        else:
            why = ab.reason
        return _Decision(
            t.config,
            "apply",
            f"{prefix}apply {_describe(t.config, incumbent)}: {why}",
            ab,
            tuple(results),
        )
    if not results:
        return _Decision(
            incumbent,
            "keep",
            f"{prefix}keep the current settings: the A/B test could not run ({'; '.join(errors)})",
            None,
            (),
        )
    ab = results[0]
    return _Decision(
        incumbent,
        "keep",
        f"{prefix}keep the current settings: the best candidate "
        f"({_describe(ab.candidate, incumbent)}) was {ab.speedup:.2f}x, 95% interval "
        f"{ab.interval[0]:.2f}x to {ab.interval[1]:.2f}x over {ab.rounds} interleaved rounds: "
        f"not surely more than {min_gain:.0%} faster",
        ab,
        tuple(results),
    )


# -- the model's pick ------------------------------------------------------------------------


def _model_pick(
    factory: LoaderFactory,
    space: dict[str, Dim],
    *,
    batches: int,
    warmup: int,
    step_ms: float | None,
    step: Step,
) -> tuple[LoaderConfig | None, dict[str, Any]]:
    """The throughput model's best config, from a short profile of the baseline.

    A baseline without workers says nothing about a worker's time per batch, so the
    profile then runs with two workers (or the most the space allows, if fewer).
    """
    from .diagnose import inputs, predict
    from .profiling import profile

    workers = space["num_workers"].values()
    if len(workers) == 1 or workers[-1] == 0:
        return None, {"reason": "num_workers is fixed by the space"}
    base = factory.baseline
    if base.num_workers == 0:
        base = base.with_(num_workers=min(2, workers[-1]))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This DataLoader will create")
            result = profile(
                replace(factory, baseline=base),
                batches=max(20, batches),
                warmup=steady_warmup(base, warmup),
                step_ms=step_ms,
                step=step,
                probes=("stages", "cpu"),
            )
    except Exception as exc:
        return None, {"reason": f"the profile failed: {_reason(exc)}"}
    points, _ = predict(inputs(result), range(max(1, workers[0]), workers[-1] + 1))
    if not points:
        return None, {"reason": "the profile did not measure what the model needs"}
    top = max(p.samples_per_s for p in points)
    pick = min(
        (p for p in points if p.samples_per_s >= _NEAR_BEST * top), key=lambda p: p.num_workers
    )
    inc = factory.baseline
    prefetch = space["prefetch_factor"]
    config = _config_of(
        {
            "num_workers": pick.num_workers,
            "prefetch_factor": 2 if 2 in prefetch.values() else prefetch.values()[0],
            "persistent_workers": inc.persistent_workers
            if inc.persistent_workers in space["persistent_workers"].values()
            else space["persistent_workers"].values()[0],
            "pin_memory": inc.pin_memory
            if inc.pin_memory in space["pin_memory"].values()
            else space["pin_memory"].values()[0],
            "batch_size": inc.batch_size
            if inc.batch_size in space["batch_size"].values()
            else space["batch_size"].values()[0],
        }
    )
    return config, {
        "num_workers": pick.num_workers,
        "samples_per_s": pick.samples_per_s,
        "bound": pick.bound,
        "profiled_num_workers": base.num_workers,
        "profiled_samples_per_s": result.measurement.samples_per_s,
    }


# -- autotune --------------------------------------------------------------------------------


def autotune(
    loader_or_target: Any,
    *,
    backend: str = "auto",
    max_workers: int | None = None,
    batch_sizes: Sequence[int] | None = None,
    space: Mapping[str, Any] | str | None = None,
    trials: int | None = None,
    time_budget: float | None = None,
    target_rate: float | None = None,
    memory_limit: float | str | None = None,
    min_gain: float = 0.05,
    storage: str | None = "sqlite:///loadtune.db",
    study_name: str | None = None,
    resume: bool = False,
    seed: int = 0,
    batches: int = 40,
    warmup: int = 5,
    step_ms: float | None = None,
    step: Step = None,
    progress: Callable[[TrialResult, LoaderConfig, float | None, float | None], None] | None = None,
    finalists: int = 2,
    rounds: int = 5,
    initial: Sequence[LoaderConfig] = (),
    model: bool = True,
    out: str | os.PathLike | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> TuneResult:
    """Search loader settings with Optuna, A/B-test the best against the current ones.

    See NOTE [ Search and decision ] for the space, the sampler, the pruning and the rule
    that decides; NOTE [ Trials in storage ] for resuming and sharing a study.

    Args:
        loader_or_target: A DataLoader, Dataset, callable or TARGET string (see
            targets.resolve), or a LoaderFactory.
        backend: ``"auto"``, ``"loadtune"`` or ``"torch"`` (as in targets.resolve).
        max_workers: Upper bound of num_workers (default: 2 x the usable cores).
        batch_sizes: Batch sizes to try; without it the batch size is kept.
        space: Fixes or narrows settings (see :func:`parse_space`).
        trials: Trials to measure in the study, counting those a resumed or shared study
            has already measured (default 20 when no time budget is given either).
        time_budget: Seconds for the whole run, A/B test included; the search stops early
            enough to leave the A/B its time.
        target_rate: Samples/s wanted: find the cheapest config (fewest workers, then least
            memory) that reaches it, instead of the fastest.
        memory_limit: Bytes (or ``"2GiB"``) a config's loader may add (NOTE [ Loader
            memory ]); a trial that goes over is stopped and recorded infeasible.
        min_gain: The least speedup worth a change (0.05: 5%).
        storage: Optuna storage URL (``sqlite:///loadtune.db``, ``postgresql://...``), or
            None for an in-memory study that cannot be resumed.
        study_name: Join or continue this study (several processes can share one).
            Without it the name comes from the target and the space: a new study each run,
            or with ``resume`` the latest one.
        resume: Continue the latest study of this target and space: finished trials are
            not measured again, an interrupted one is measured again.
        seed: Seeds the sampler (offset by the trials a resumed study holds).
        batches: Batches in each timed window (trials and A/B alike).
        warmup: Batches before each window, not timed.
        step_ms: Simulated training step per batch, in milliseconds.
        step: A callable run on every batch instead (the real training step).
        progress: Called after each trial with (trial, config, samples/s or None, best
            samples/s so far or None).
        finalists: Configs to A/B-test against the incumbent.
        rounds: Interleaved rounds per A/B test (at least 2).
        initial: Configs to measure first, after the incumbent and the model's pick.
        model: Profile the baseline and seed the study with the model's pick.
        out: Write the tuned config here (JSON, or TOML for ``.toml``) with a
            ``measurement`` section, and ``tune.json`` beside it.
        on_phase: Called with a short description when a phase starts.

    Returns:
        The TuneResult.

    Raises:
        ConfigError: a bad space, storage URL, memory limit or budget (one line).
        TargetError: a bad target.

    Example:
        >>> import torch
        >>> from loadtune import DataLoader, autotune
        >>> data = torch.utils.data.TensorDataset(torch.zeros(4096, 2))
        >>> result = autotune(DataLoader(data, batch_size=16), space="num_workers=0",
        ...                   storage=None, batches=8, rounds=2, model=False)
        >>> result.verdict
        'keep'
    """
    started = time.monotonic()
    if trials is not None and trials < 1:
        raise ConfigError(f"trials must be >= 1, got {trials}")
    if time_budget is not None and time_budget <= 0:
        raise ConfigError(f"time_budget must be > 0 seconds, got {time_budget}")
    if target_rate is not None and target_rate <= 0:
        raise ConfigError(f"target_rate must be > 0 samples/s, got {target_rate}")
    if min_gain < 0:
        raise ConfigError(f"min_gain must be >= 0, got {min_gain}")
    if rounds < 2:
        raise ConfigError(f"rounds must be >= 2 (the interval needs a spread), got {rounds}")
    if batches < 1:
        raise ConfigError(f"batches must be >= 1, got {batches}")
    if resume and storage is None:
        raise ConfigError("resume needs a storage: an in-memory study is gone when it ends")
    limit = parse_memory(memory_limit)
    if trials is None and time_budget is None:
        trials = _DEFAULT_TRIALS
    machine = system.collect()
    factory = resolve(loader_or_target, backend=backend)
    incumbent = factory.baseline
    dims = build_space(
        incumbent,
        max_workers=max_workers,
        batch_sizes=batch_sizes,
        space=space,
        cores=machine.usable_cores,
    )
    opened = _storage(storage)
    settings = {"batches": batches, "warmup": warmup, "step_ms": step_ms}
    default_name = _study_name(factory, dims, settings)
    study, name = _open_study(opened, study_name, default_name, resume, seed, trials or 20)
    phase = on_phase or (lambda text: None)
    consumer = make_step(step_ms, step)
    deadline = started + time_budget if time_budget is not None else None
    windows: list[float] = []

    def reserve() -> float:
        # Time to leave for the A/B: its finalists settled at the first look (3 rounds of 4
        # windows) at the median trial's length; nothing before a trial has finished.
        per = sorted(windows)[len(windows) // 2] if windows else 0.0
        return finalists * min(3, rounds) * 4 * per

    search = _Search(
        study=study,
        storage=opened,
        factory=factory,
        space=dims,
        trials=trials,
        deadline=deadline,
        reserve=reserve,
        batches=batches,
        warmup=warmup,
        step=consumer,
        memory_limit=limit,
        seed=seed,
        progress=None,
    )

    def on_trial(t: TrialResult, c: LoaderConfig, rate: float | None, best: float | None) -> None:
        if t.state == "complete" and t.duration_s:
            windows.append(t.duration_s)
        if progress is not None:
            progress(t, c, rate, best)

    search.progress = on_trial
    search.enqueue(incumbent, "incumbent")
    model_info: dict[str, Any] = {"reason": "not asked for"}
    if model and search.finished():
        model_info = {"reason": "the study had measured trials already"}
    elif model:
        phase("profiling the current settings for the throughput model")
        pick, model_info = _model_pick(
            factory, dims, batches=batches, warmup=warmup, step_ms=step_ms, step=step
        )
        if pick is not None:
            search.enqueue(pick, "model")
    for config in initial:
        search.enqueue(config, "initial")
    phase("searching")
    for _ in range(3):
        stopped = search.run()
        search.settle(timeout=60.0)
        # A trial counted while in flight may have ended unmeasured (its process died, or
        # it was a duplicate): then the budget is not spent after all, so search on.
        if trials is None or search.finished() >= trials or not search.time_left():
            break
        if not stopped.endswith("trials measured"):
            break
    found = _trial_results(study)

    def compare(candidate: LoaderConfig, rate: float | None) -> ABResult | str:
        phase(f"A/B: {_describe(candidate, incumbent)} against the current settings")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="This DataLoader will create")
                return interleave(
                    factory,
                    incumbent,
                    candidate,
                    rounds=rounds,
                    batches=batches,
                    warmup=warmup,
                    step=consumer,
                    min_gain=min_gain,
                    target_rate=rate,
                )
        except Exception as exc:
            return f"{_describe(candidate, incumbent)}: {_reason(exc)}"

    k = finalists
    if deadline is not None:  # fit the A/B into what is left of the budget
        per = reserve() / max(1, finalists)
        while k > 1 and time.monotonic() + k * per > deadline:
            k -= 1
    decision = _decide(
        found, incumbent, compare, finalists=k, min_gain=min_gain, target_rate=target_rate
    )
    result = TuneResult(
        target=factory.target,
        backend=factory.backend,
        machine=machine,
        space={n: d.to_dict() for n, d in dims.items()},
        stopped=stopped,
        incumbent=incumbent,
        trials=tuple(found),
        tuned=decision.tuned,
        verdict=decision.verdict,
        reason=decision.reason,
        ab=decision.ab,
        finalists=decision.finalists,
        min_gain=min_gain,
        target_rate=target_rate,
        memory_limit=limit,
        storage=_masked(storage) if storage else None,
        study_name=name,
        model=model_info,
        step=f"{step_ms:g} ms" if step_ms else getattr(step, "__qualname__", None),
        duration_s=time.monotonic() - started,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    if out is not None:
        write_tuned(result, out)
        save(result, Path(out).parent / "tune.json")
    return result


def _machine_line(result: TuneResult) -> str:
    m = result.machine
    gpu = ", ".join(m.cuda_devices) if m.cuda_available else "no GPU"
    return (
        f"{m.usable_cores} cores usable, {m.memory_total / 2**30:.1f} GiB, {gpu}, torch {m.torch}"
    )


def write_tuned(result: TuneResult, path: str | os.PathLike) -> Path:
    """Write the tuned config (``loadtune.apply`` reads it) with a ``measurement`` section.

    Example:
        >>> # write_tuned(result, "tuned.toml"); loader = loadtune.apply("tuned.toml", loader)
    """
    ab = result.ab
    inc = result.incumbent_trial
    measurement: dict[str, Any] = {
        "verdict": result.verdict,
        "reason": result.reason,
        "target": result.target,
        "incumbent_samples_per_s": ab.incumbent_rate if ab else inc.samples_per_s if inc else None,
        "tuned_samples_per_s": (
            ab.candidate_rate
            if ab and result.verdict == "apply"
            else ab.incumbent_rate
            if ab
            else inc.samples_per_s
            if inc
            else None
        ),
        "speedup": ab.speedup if ab and result.verdict == "apply" else 1.0,
        "interval_low": ab.interval[0] if ab else None,
        "interval_high": ab.interval[1] if ab else None,
        "interval_method": ab.method if ab else None,
        "ab_rounds": ab.rounds if ab else None,
        "min_gain": result.min_gain,
        "target_rate": result.target_rate,
        "trials": len(result.trials),
        "machine": _machine_line(result),
        "study": result.study_name,
        "created": result.created,
    }
    p = Path(path)
    write_config(result.tuned, p, {"measurement": measurement})
    return p


def snippet(result: TuneResult, config_path: str | None = None) -> str:
    """Python that builds a loader with the tuned settings (and the ``apply`` one-liner).

    Example:
        >>> # print(snippet(result, "tuned.json"))
    """
    c = result.tuned
    cls = "DataLoader" if result.backend == "loadtune" else "torch.utils.data.DataLoader"
    head = (
        "from loadtune import DataLoader\n\n"
        if result.backend == "loadtune"
        else "import torch\n\n"
    )
    args = [f"    batch_size={c.batch_size},", f"    num_workers={c.num_workers},"]
    if c.num_workers:
        args.append(f"    prefetch_factor={c.prefetch_factor},")
        args.append(f"    persistent_workers={c.persistent_workers},")
    args.append(f"    pin_memory={c.pin_memory},")
    text = f"{head}loader = {cls}(\n    dataset,\n" + "\n".join(args) + "\n)\n"
    if config_path:
        text += (
            "\n# or keep everything else your loader has:\nimport loadtune\n\n"
            f"loader = loadtune.apply({config_path!r}, loader)\n"
        )
    return text
