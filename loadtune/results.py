"""The results loadtune saves and reads back: Measurement, Diagnosis, ProfileResult.

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
    "Diagnosis",
    "Measurement",
    "PredictionPoint",
    "ProfileResult",
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
    """Predicted throughput at one setting, with the bound that limits it."""

    num_workers: int
    prefetch_factor: int | None
    samples_per_s: float
    bound: str
    measured: bool = False

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
        prediction: Predicted samples/s at other worker counts (see diagnose.predict).
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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["prediction"] = [p.to_dict() for p in self.prediction]
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
        overhead: What the measurement itself cost in the main process
            (``sampler_cpu_s``: CPU seconds the probes' sampler thread used), so a reader can
            tell the loader's own main-process work from the probes'.
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


def _check_schema(f: _Fields) -> None:
    version = f.req("schema")
    if version != SCHEMA_VERSION:
        raise ResultFormatError(
            f"{f.source}: unknown schema version {version!r} (this loadtune reads {SCHEMA_VERSION})"
        )


_KINDS: dict[str, Any] = {"profile": ProfileResult}


def save(result: Any, path: str | os.PathLike) -> Path:
    """Write a result as JSON, atomically (no half-written file is ever left)."""
    p = Path(path)
    return write_text(p, json.dumps(result.to_dict(), indent=1, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def load(path: str | os.PathLike) -> Any:
    """Read a saved result (a ProfileResult, or another kind as they are added).

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
