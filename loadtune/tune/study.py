"""The Optuna study: its storage, opening or resuming it, and the trials it holds.

Everything that touches Optuna's storage lives here: the storage URL, the study's name,
creating, continuing or joining a study, heartbeats, failing and re-queueing trials whose
process is gone, and reading the stored trials back as TrialResults.

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
import json
import re
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import psutil

from ..config import LoaderConfig
from ..errors import ConfigError
from ..results import TrialResult
from ..targets import LoaderFactory
from .space import Dim, _key
from .trial import _reason

_HEARTBEAT_S = 5
_GRACE_S = 30
_ORPHAN_S = 10.0  # a running trial without an owner this old was abandoned


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
    # The search prunes by its own rule (NOTE [ Search and decision ]); trials still report
    # their running rates, which that rule reads back from the storage.
    pruner = optuna.pruners.NopPruner()
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
    from ..results import Measurement

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
