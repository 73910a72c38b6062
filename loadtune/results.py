"""The results loadtune saves and reads back: Measurement, Diagnosis, ProfileResult, TuneResult.

Every result is a frozen dataclass with ``to_dict``/``from_dict``; a saved file carries
``schema`` and ``kind`` so that a report can be drawn again later, elsewhere, from the JSON
alone. ``from_dict`` fills optional fields that are missing, and rejects an unknown schema
version or a missing required field with a ResultFormatError that names the file and the
field.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from probes.base import ProbeResult

from .atomic import write_text
from .config import LoaderConfig
from .errors import ResultFormatError
from .system import SystemInfo

__all__ = [
    "SCHEMA_VERSION",
    "TRIAL_STATES",
    "ABResult",
    "Diagnosis",
    "Measurement",
    "PredictionPoint",
    "ProfileResult",
    "TrialResult",
    "TuneResult",
    "load",
    "save",
]

SCHEMA_VERSION = 1


class _Fields:
    """Reads required and optional fields, naming the file and the path of what is missing."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        if not isinstance(data, dict):
            raise ResultFormatError(f"{source}: field {where!r} should be an object")
        self.data, self.where, self.source = data, where, source

    def req(self, key: str) -> Any:
        if key not in self.data:
            name = f"{self.where}.{key}" if self.where else key
            raise ResultFormatError(f"{self.source}: missing field {name!r}")
        return self.data[key]

    def opt(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def sub(self, key: str) -> _Fields:
        return _Fields(self.req(key), f"{self.where}.{key}" if self.where else key, self.source)


@dataclass(frozen=True, slots=True)
class Measurement:
    """Throughput of one loader config, measured with warm-up excluded.

    Attributes:
        samples_per_s: Median over repeats of samples per second in the steady window.
        samples_per_s_min, samples_per_s_max: The spread over repeats.
        batches_per_s: Median batches per second in the steady window.
        repeats: Number of measured windows.
        window_batches: Batches per window.
        warmup_batches: Batches taken before each window and not counted.
        time_to_first_batch_s: From ``iter(loader)`` to the first batch (worker start-up).
        stall_fraction: Time the consumer waited for data over the window's length.
        overall_samples_per_s: Samples per second of the whole pass, start-up and warm-up
            included (a check on the window: well below it means start-up dominates).
    """

    samples_per_s: float
    samples_per_s_min: float
    samples_per_s_max: float
    batches_per_s: float
    repeats: int
    window_batches: int
    warmup_batches: int
    time_to_first_batch_s: float
    stall_fraction: float
    overall_samples_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, source: str = "result", where: str = ""
    ) -> Measurement:
        f = _Fields(data, where, source)
        names = [n for n in cls.__dataclass_fields__ if n != "overall_samples_per_s"]
        return cls(
            **{n: f.req(n) for n in names}, overall_samples_per_s=f.opt("overall_samples_per_s")
        )


@dataclass(frozen=True, slots=True)
class PredictionPoint:
    """Predicted throughput at one setting, with the bound that limits it.

    ``fetch_concurrency`` is the samples each worker has in flight at once (1: one after
    another, as torch's workers fetch them); files written before it existed read as 1.
    """

    num_workers: int
    prefetch_factor: int | None
    samples_per_s: float
    bound: str
    measured: bool = False
    fetch_concurrency: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PredictionPoint:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What holds the pipeline back, the numbers that say so, and what to change.

    Attributes:
        bottleneck: One of ``io_latency``, ``io_bandwidth``, ``worker_cpu``,
            ``ipc_transfer``, ``main_process``, ``gpu_transfer``, ``memory``, ``consumer``.
        explanation: One sentence with the numbers behind the verdict.
        evidence: The measured numbers the verdict rests on.
        runner_up: The second most likely bottleneck, or None.
        runner_up_explanation: Why, in one sentence.
        prediction: Predicted samples/s at other worker counts, at the measured
            fetch_concurrency (see diagnose.predict).
        fetch_prediction: Predicted samples/s at other fetch_concurrency values, at the
            measured worker count (loadtune's DataLoader; empty where it would not help).
        model: The model's measured inputs (per-batch demands, cores, ...).
        recommendations: Plain sentences, most useful first.
    """

    bottleneck: str
    explanation: str
    evidence: dict[str, float] = field(default_factory=dict)
    runner_up: str | None = None
    runner_up_explanation: str = ""
    prediction: tuple[PredictionPoint, ...] = ()
    model: dict[str, float] = field(default_factory=dict)
    recommendations: tuple[str, ...] = ()
    fetch_prediction: tuple[PredictionPoint, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["prediction"] = [p.to_dict() for p in self.prediction]
        data["fetch_prediction"] = [p.to_dict() for p in self.fetch_prediction]
        data["recommendations"] = list(self.recommendations)
        return data

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, source: str = "result", where: str = ""
    ) -> Diagnosis:
        f = _Fields(data, where, source)
        return cls(
            bottleneck=f.req("bottleneck"),
            explanation=f.req("explanation"),
            evidence=dict(f.opt("evidence", {})),
            runner_up=f.opt("runner_up"),
            runner_up_explanation=f.opt("runner_up_explanation", ""),
            prediction=tuple(PredictionPoint.from_dict(p) for p in f.opt("prediction", [])),
            model=dict(f.opt("model", {})),
            recommendations=tuple(f.opt("recommendations", [])),
            fetch_prediction=tuple(
                PredictionPoint.from_dict(p) for p in f.opt("fetch_prediction", [])
            ),
        )


@dataclass(frozen=True, slots=True)
class ProfileResult:
    """Everything ``loadtune profile`` learned about one loader on one machine.

    Attributes:
        target: What was profiled (the TARGET string, or a description of the object).
        backend: ``"loadtune"`` or ``"torch"``: whose loader ran.
        config: The loader settings that were measured.
        machine: The machine it ran on.
        measurement: Throughput, time to first batch, stall fraction.
        probes: Each probe's result, by name (unavailable ones say why).
        diagnosis: The verdict, or None when it could not be made.
        artifacts: Files written beside the result (trace, speedscope, report), by kind.
        step: The simulated training step ("30 ms", "module:fn"), or None.
        created: When the profile was taken (ISO 8601, UTC).
        overhead: What the probes cost, measured: ``sampler_cpu_s`` (CPU seconds of the
            probes' sampler thread in the main process), ``sampler_window_cpu_s`` and
            ``sample_cpu_s.<probe>`` (the same inside the window, per probe),
            ``pyspy_cpu_s`` and ``pyspy_start_cpu_s`` (the py-spy recorders in and before
            the window) and ``probes_window_s``; NOTE [ Probe overhead ] in
            loadtune/profiling.py. So a reader can tell the loader's work from the probes'.
        schema: The file format version.
    """

    target: str
    backend: str
    config: LoaderConfig
    machine: SystemInfo
    measurement: Measurement
    probes: dict[str, ProbeResult] = field(default_factory=dict)
    diagnosis: Diagnosis | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    step: str | None = None
    created: str = ""
    overhead: dict[str, float] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    kind = "profile"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "kind": self.kind,
            "target": self.target,
            "backend": self.backend,
            "config": self.config.to_dict(),
            "machine": self.machine.to_dict(),
            "measurement": self.measurement.to_dict(),
            "probes": {name: p.to_dict() for name, p in self.probes.items()},
            "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
            "artifacts": dict(self.artifacts),
            "step": self.step,
            "created": self.created,
            "overhead": dict(self.overhead),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "result") -> ProfileResult:
        f = _Fields(data, "", source)
        _check_schema(f)
        diagnosis = f.opt("diagnosis")
        return cls(
            target=f.req("target"),
            backend=f.opt("backend", "loadtune"),
            config=LoaderConfig.from_dict(f.req("config"), source=source),
            machine=SystemInfo.from_dict(f.req("machine")),
            measurement=Measurement.from_dict(
                f.req("measurement"), source=source, where="measurement"
            ),
            probes={n: ProbeResult.from_dict(p) for n, p in f.opt("probes", {}).items()},
            diagnosis=(
                Diagnosis.from_dict(diagnosis, source=source, where="diagnosis")
                if diagnosis
                else None
            ),
            artifacts=dict(f.opt("artifacts", {})),
            step=f.opt("step"),
            created=f.opt("created", ""),
            overhead=dict(f.opt("overhead", {})),
        )


TRIAL_STATES = ("complete", "pruned", "failed", "infeasible")


@dataclass(frozen=True, slots=True)
class TrialResult:
    """One config the search measured, and how that went.

    Attributes:
        number: The Optuna trial number (unique within the study).
        config: The settings measured.
        state: ``"complete"``, ``"pruned"`` (stopped early: clearly slower than the others),
            ``"failed"`` (the loader raised, a worker crashed, out of memory) or
            ``"infeasible"`` (stopped for going over the memory limit).
        measurement: The steady window's numbers (complete trials only).
        reason: Why a trial was pruned, failed or infeasible, in one sentence.
        samples_per_s: Throughput: the window's for a complete trial, the rate when it was
            stopped for a pruned or infeasible one, None for a failed one.
        peak_memory_bytes: The most memory the loader added while the trial ran (see
            NOTE [ Loader memory ] in loadtune/tune/trial.py), or None where not read.
        duration_s: Wall time of the trial, worker start-up included.
        source: Why it was measured: ``"incumbent"``, ``"model"`` (the profile's predicted
            best), ``"initial"`` (given by the caller), ``"neighbour"`` (one step from a
            config that was the best so far), ``"sampler"``, ``"nearest"`` (the closest
            unmeasured config to a suggestion already measured) or ``"retry"`` (a trial
            interrupted before it finished).
        host: The machine and process that ran it (``host:pid``).
    """

    number: int
    config: LoaderConfig
    state: str
    measurement: Measurement | None = None
    reason: str = ""
    samples_per_s: float | None = None
    peak_memory_bytes: float | None = None
    duration_s: float | None = None
    source: str = ""
    host: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "config": self.config.to_dict(),
            "state": self.state,
            "measurement": self.measurement.to_dict() if self.measurement else None,
            "reason": self.reason,
            "samples_per_s": self.samples_per_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "duration_s": self.duration_s,
            "source": self.source,
            "host": self.host,
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, source: str = "result", where: str = ""
    ) -> TrialResult:
        f = _Fields(data, where, source)
        state = f.req("state")
        if state not in TRIAL_STATES:
            raise ResultFormatError(f"{source}: {where}.state is {state!r}, not a trial state")
        m = f.opt("measurement")
        return cls(
            number=f.req("number"),
            config=LoaderConfig.from_dict(f.req("config"), source=source),
            state=state,
            measurement=(
                Measurement.from_dict(m, source=source, where=f"{where}.measurement") if m else None
            ),
            reason=f.opt("reason", ""),
            samples_per_s=f.opt("samples_per_s"),
            peak_memory_bytes=f.opt("peak_memory_bytes"),
            duration_s=f.opt("duration_s"),
            source=f.opt("source", ""),
            host=f.opt("host", ""),
        )


@dataclass(frozen=True, slots=True)
class ABResult:
    """An interleaved A/B comparison of a candidate config against the incumbent.

    Each round times fresh loaders in the order A B B A (even rounds) or B A A B (odd
    rounds), so a drift in the machine's speed during a round falls on both sides alike;
    the round's ratio is the candidate's mean samples/s over the incumbent's. See
    ``loadtune.measure.interleave`` for when it stops.

    Attributes:
        incumbent: Config A.
        candidate: Config B.
        rounds: Rounds measured.
        incumbent_samples_per_s: A's mean samples/s per round.
        candidate_samples_per_s: B's mean samples/s per round.
        ratios: B over A per round.
        speedup: The median of ``ratios``.
        interval: 95% confidence interval of the speedup: a Student t-interval on the mean
            of the log ratios, exponentiated (so it brackets the geometric mean ratio); the
            test may stop early, so it is taken at a Bonferroni-adjusted level that keeps
            95% over all the looks (``method`` says which).
        min_gain: The gain the candidate had to show: it wins only when
            ``interval[0] > 1 + min_gain``.
        verdict: ``"apply"`` (the candidate wins) or ``"keep"`` (the incumbent stays).
        reason: The verdict in one plain sentence, with the numbers.
        method: How the interval was computed.
        target_rate: With a target rate, the candidate wins when its own 95% interval of
            samples/s lies above the rate instead (``candidate_interval[0] >= target_rate``).
        candidate_interval: 95% interval of the candidate's samples/s (t-interval on the
            logs of its per-round rates, at the same level as ``interval``).
    """

    incumbent: LoaderConfig
    candidate: LoaderConfig
    rounds: int
    incumbent_samples_per_s: tuple[float, ...]
    candidate_samples_per_s: tuple[float, ...]
    ratios: tuple[float, ...]
    speedup: float
    interval: tuple[float, float]
    min_gain: float
    verdict: str
    reason: str
    method: str = "t-interval on log ratios"
    target_rate: float | None = None
    candidate_interval: tuple[float, float] | None = None

    @property
    def incumbent_rate(self) -> float:
        """The incumbent's median samples/s over the rounds."""
        return _median(self.incumbent_samples_per_s)

    @property
    def candidate_rate(self) -> float:
        """The candidate's median samples/s over the rounds."""
        return _median(self.candidate_samples_per_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "incumbent": self.incumbent.to_dict(),
            "candidate": self.candidate.to_dict(),
            "rounds": self.rounds,
            "incumbent_samples_per_s": list(self.incumbent_samples_per_s),
            "candidate_samples_per_s": list(self.candidate_samples_per_s),
            "ratios": list(self.ratios),
            "speedup": self.speedup,
            "interval": list(self.interval),
            "min_gain": self.min_gain,
            "verdict": self.verdict,
            "reason": self.reason,
            "method": self.method,
            "target_rate": self.target_rate,
            "candidate_interval": (
                list(self.candidate_interval) if self.candidate_interval else None
            ),
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, source: str = "result", where: str = ""
    ) -> ABResult:
        f = _Fields(data, where, source)
        ci = f.opt("candidate_interval")
        low, high = f.req("interval")
        return cls(
            incumbent=LoaderConfig.from_dict(f.req("incumbent"), source=source),
            candidate=LoaderConfig.from_dict(f.req("candidate"), source=source),
            rounds=f.req("rounds"),
            incumbent_samples_per_s=tuple(f.req("incumbent_samples_per_s")),
            candidate_samples_per_s=tuple(f.req("candidate_samples_per_s")),
            ratios=tuple(f.req("ratios")),
            speedup=f.req("speedup"),
            interval=(low, high),
            min_gain=f.req("min_gain"),
            verdict=f.req("verdict"),
            reason=f.opt("reason", ""),
            method=f.opt("method", "t-interval on log ratios"),
            target_rate=f.opt("target_rate"),
            candidate_interval=(ci[0], ci[1]) if ci else None,
        )


def _median(values: tuple[float, ...]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return 0.0
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@dataclass(frozen=True, slots=True)
class TuneResult:
    """Everything ``loadtune autotune`` tried, and what it decided.

    Attributes:
        target: What was tuned (the TARGET string, or a description of the object).
        backend: ``"loadtune"`` or ``"torch"``: whose loader ran.
        machine: The machine it ran on.
        space: The search space, one entry per setting: ``{"low", "high", "log"}`` for a
            range of integers, ``{"choices": [...]}`` otherwise (one choice: fixed).
            ``prefetch_factor`` and ``persistent_workers`` apply only when num_workers > 0.
        incumbent: The settings the loader had as given.
        trials: Every config measured in the study, in trial order (this process's and any
            other's sharing the study).
        ab: The deciding A/B comparison: the chosen candidate's, or on "keep" the best
            finalist's; None when no finalist could be compared.
        finalists: Every A/B comparison made, highest speedup first. The finalists are
            timed in the same interleaved rounds, beside the same incumbent windows, so two
            of them compare round by round too.
        tuned: The config to use (the incumbent itself when the verdict is "keep").
        verdict: ``"apply"`` or ``"keep"``.
        reason: The verdict in one plain sentence, with the numbers.
        min_gain: The least speedup worth a change (0.05: 5%).
        target_rate: Samples/s asked for, or None to maximise throughput.
        memory_limit: The most memory (bytes) a config's loader may add, or None.
        storage: Where the study's trials live (an Optuna storage URL, password hidden),
            or None for an in-memory study.
        study_name: The Optuna study's name.
        model: The profile model's pick: ``num_workers``, ``samples_per_s`` (predicted),
            ``bound``, or ``reason`` when the model could not be used.
        step: The simulated training step ("30 ms"), or None.
        stopped: Why the search stopped ("20 trials measured", "time budget spent",
            "converged: 4 trials in a row were not more than 5% faster than the best before
            them", ...).
        duration_s: Wall time of the whole run.
        created: When the run finished (ISO 8601, UTC).
        schema: The file format version.
    """

    target: str
    backend: str
    machine: SystemInfo
    space: dict[str, Any]
    incumbent: LoaderConfig
    trials: tuple[TrialResult, ...]
    tuned: LoaderConfig
    verdict: str
    reason: str
    ab: ABResult | None = None
    finalists: tuple[ABResult, ...] = ()
    min_gain: float = 0.05
    target_rate: float | None = None
    memory_limit: float | None = None
    storage: str | None = None
    study_name: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    step: str | None = None
    stopped: str = ""
    duration_s: float = 0.0
    created: str = ""
    schema: int = SCHEMA_VERSION

    kind = "tune"

    @property
    def incumbent_trial(self) -> TrialResult | None:
        """The search's complete trial of the incumbent config, if there is one."""
        return next(
            (t for t in self.trials if t.config == self.incumbent and t.state == "complete"), None
        )

    @property
    def best_trial(self) -> TrialResult | None:
        """The complete trial with the highest throughput in the search."""
        done = [t for t in self.trials if t.state == "complete" and t.samples_per_s is not None]
        return max(done, key=lambda t: t.samples_per_s or 0.0) if done else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "kind": self.kind,
            "target": self.target,
            "backend": self.backend,
            "machine": self.machine.to_dict(),
            "space": self.space,
            "incumbent": self.incumbent.to_dict(),
            "trials": [t.to_dict() for t in self.trials],
            "tuned": self.tuned.to_dict(),
            "verdict": self.verdict,
            "reason": self.reason,
            "ab": self.ab.to_dict() if self.ab else None,
            "finalists": [a.to_dict() for a in self.finalists],
            "min_gain": self.min_gain,
            "target_rate": self.target_rate,
            "memory_limit": self.memory_limit,
            "storage": self.storage,
            "study_name": self.study_name,
            "model": dict(self.model),
            "step": self.step,
            "stopped": self.stopped,
            "duration_s": self.duration_s,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "result") -> TuneResult:
        f = _Fields(data, "", source)
        _check_schema(f)
        verdict = f.req("verdict")
        if verdict not in ("apply", "keep"):
            raise ResultFormatError(f"{source}: verdict is {verdict!r}, not 'apply' or 'keep'")
        ab = f.opt("ab")
        return cls(
            target=f.req("target"),
            backend=f.opt("backend", "loadtune"),
            machine=SystemInfo.from_dict(f.req("machine")),
            space=dict(f.req("space")),
            incumbent=LoaderConfig.from_dict(f.req("incumbent"), source=source),
            trials=tuple(
                TrialResult.from_dict(t, source=source, where=f"trials[{i}]")
                for i, t in enumerate(f.req("trials"))
            ),
            tuned=LoaderConfig.from_dict(f.req("tuned"), source=source),
            verdict=verdict,
            reason=f.opt("reason", ""),
            ab=ABResult.from_dict(ab, source=source, where="ab") if ab else None,
            finalists=tuple(
                ABResult.from_dict(a, source=source, where=f"finalists[{i}]")
                for i, a in enumerate(f.opt("finalists", []))
            ),
            min_gain=f.opt("min_gain", 0.05),
            target_rate=f.opt("target_rate"),
            memory_limit=f.opt("memory_limit"),
            storage=f.opt("storage"),
            study_name=f.opt("study_name"),
            model=dict(f.opt("model", {})),
            step=f.opt("step"),
            stopped=f.opt("stopped", ""),
            duration_s=f.opt("duration_s", 0.0),
            created=f.opt("created", ""),
        )


def _check_schema(f: _Fields) -> None:
    version = f.req("schema")
    if version != SCHEMA_VERSION:
        raise ResultFormatError(
            f"{f.source}: unknown schema version {version!r} (this loadtune reads {SCHEMA_VERSION})"
        )


_KINDS: dict[str, Any] = {"profile": ProfileResult, "tune": TuneResult}


def save(result: Any, path: str | os.PathLike) -> Path:
    """Write a result as JSON, atomically (no half-written file is ever left)."""
    p = Path(path)
    return write_text(p, json.dumps(result.to_dict(), indent=1, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def load(path: str | os.PathLike) -> Any:
    """Read a saved result: a ProfileResult or a TuneResult, as its ``kind`` says.

    Raises:
        ResultFormatError: the file is unreadable, not JSON, of an unknown kind or schema
            version, or misses a field; the message names the file and the field.
    """
    source = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ResultFormatError(f"cannot read {source!r}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ResultFormatError(f"{source}: not a JSON result file ({exc})") from exc
    f = _Fields(data, "", source)
    kind = f.req("kind")
    if kind not in _KINDS:
        raise ResultFormatError(f"{source}: unknown result kind {kind!r}")
    return _KINDS[kind].from_dict(data, source=source)
