"""diagnose(ProfileResult) -> Diagnosis: name the bottleneck, show the numbers, predict.

Pure functions over a saved result: one small rule per bottleneck scores how strongly the
measurements point at it (0 to 1) and says why in one sentence; the highest score is the
verdict and the next one the runner-up. A rule only reads numbers that were measured; a
probe that was unavailable simply gives its rules nothing to go on.

# NOTE [ Throughput model ]
The prediction is operational analysis of the measured run (Denning & Buzen's bounds).
Per batch, from the loader's events and the CPU probe:

* ``D_w``: a worker's wall time per batch (fetch + collate + pack),
* ``u``:   the share of it spent on a CPU (worker CPU time over worker busy time),
* ``D_s``: the main process's serial time per batch, ``(1 - stall) / batches_per_s``
  (the consumer's step plus the loader's own work in the main process),
* ``K``:   cores usable by the process.

With N workers the batch rate X(N) is bounded by the workers, by the cores and by the
serial main process:

    X(N) = min( N / D_w,  (K - D_s_cpu X) / (u D_w) ,  1 / D_s )

where the core bound is solved for X: ``K / (u D_w + c_s)`` with ``c_s`` the main
process's CPU seconds per batch. Samples/s is ``X(N) x batch_size``. The prefetch depth
does not move a steady-state bound; it absorbs variance between batches, so the model
predicts the same rate for every prefetch_factor and says so. The point at the measured
worker count is marked ``measured`` so a reader can see how well the model fits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .results import Diagnosis, PredictionPoint, ProfileResult

__all__ = ["BOTTLENECKS", "Inputs", "diagnose", "inputs", "predict"]

BOTTLENECKS = (
    "io_latency",
    "io_bandwidth",
    "worker_cpu",
    "ipc_transfer",
    "main_process",
    "gpu_transfer",
    "memory",
    "consumer",
)

_STALL_OK = 0.10  # the consumer waits less than this share of the time: data keeps up


@dataclass(frozen=True, slots=True)
class Inputs:
    """The measured numbers the rules and the model read (None where not measured)."""

    num_workers: int
    batch_size: int
    cores: int
    stall: float
    batches_per_s: float
    samples_per_s: float
    worker_s: float | None  # D_w
    fetch_s: float | None
    transport_s: float | None  # pack + unpack per batch
    worker_cpu_share: float | None  # u
    worker_idle: float | None
    main_cpu_pct: float | None
    read_bytes_per_s: float | None
    iowait_pct: float | None
    batch_bytes: float | None
    min_available_bytes: float | None
    memory_total: float
    copy_on_read: bool
    gpu_copy_s: float | None
    pin_memory: bool


def _get(result: ProfileResult, probe: str, key: str) -> float | None:
    found = result.probes.get(probe)
    if found is None or not found.available:
        return None
    value = found.summary.get(key)
    return float(value) if value is not None else None


def inputs(result: ProfileResult) -> Inputs:
    """Collect the rule inputs from a result."""
    m = result.measurement
    fetch = _get(result, "stages", "fetch_mean_s")
    collate = _get(result, "stages", "collate_mean_s")
    pack = _get(result, "stages", "pack_mean_s")
    unpack = _get(result, "stages", "unpack_mean_s")
    worker_s = fetch + (collate or 0.0) + (pack or 0.0) if fetch is not None else None
    transport = pack + unpack if pack is not None and unpack is not None else None
    idle = _get(result, "stages", "worker_idle_fraction_mean")
    per_worker_cpu = _get(result, "cpu", "workers_cpu_per_worker_pct")
    share = None
    if per_worker_cpu is not None and idle is not None and idle < 0.99:
        share = min(1.0, per_worker_cpu / 100.0 / (1.0 - idle))
    bytes_per_s = _get(result, "stages", "bytes_per_s")
    batch_bytes = bytes_per_s / m.batches_per_s if bytes_per_s and m.batches_per_s else None
    memory = result.probes.get("memory")
    gpu_copy = _get(
        result, "gpu", "pinned_copy_s" if result.config.pin_memory else "pageable_copy_s"
    )
    cores = _get(result, "cpu", "cores") or result.machine.usable_cores
    return Inputs(
        num_workers=result.config.num_workers,
        batch_size=result.config.batch_size or 1,
        cores=int(cores),
        stall=m.stall_fraction,
        batches_per_s=m.batches_per_s,
        samples_per_s=m.samples_per_s,
        worker_s=worker_s,
        fetch_s=fetch,
        transport_s=transport,
        worker_cpu_share=share,
        worker_idle=idle,
        main_cpu_pct=_get(result, "cpu", "main_cpu_pct"),
        read_bytes_per_s=_get(result, "io", "workers_read_bytes_per_s"),
        iowait_pct=_get(result, "io", "iowait_pct"),
        batch_bytes=batch_bytes,
        min_available_bytes=_get(result, "memory", "min_available_bytes"),
        memory_total=float(result.machine.memory_total),
        copy_on_read=bool(memory and memory.available and memory.detail.get("copy_on_read")),
        gpu_copy_s=gpu_copy,
        pin_memory=result.config.pin_memory,
    )


Rule = Callable[[Inputs], tuple[float, str, dict[str, float]]]


def _consumer(i: Inputs) -> tuple[float, str, dict[str, float]]:
    score = max(0.0, 1.0 - i.stall / _STALL_OK) if i.stall < _STALL_OK else 0.0
    return (
        score,
        f"the loader keeps up: the training step waited for data {i.stall:.0%} of the time",
        {"stall_fraction": i.stall},
    )


def _stalled(i: Inputs) -> float:
    """How much it matters what holds the loader back: 0 when the consumer never waits."""
    return min(1.0, max(0.0, (i.stall - _STALL_OK / 2) / 0.4))


def _main_process(i: Inputs) -> tuple[float, str, dict[str, float]]:
    if i.num_workers == 0:
        return (
            _stalled(i),
            f"num_workers=0: samples are loaded in the training process, which waits for data "
            f"{i.stall:.0%} of the time",
            {"stall_fraction": i.stall, "num_workers": 0.0},
        )
    if i.main_cpu_pct is None:
        return 0.0, "", {}
    busy = i.main_cpu_pct / 100.0
    score = _stalled(i) * max(0.0, (busy - 0.8) / 0.2)
    return (
        score,
        f"the main process is busy {busy:.0%} of the time while it waits for data "
        f"{i.stall:.0%} of the time: it cannot take batches any faster",
        {"main_cpu_pct": i.main_cpu_pct, "stall_fraction": i.stall},
    )


def _worker_cpu(i: Inputs) -> tuple[float, str, dict[str, float]]:
    if i.worker_cpu_share is None or i.num_workers == 0:
        return 0.0, "", {}
    busy = 1.0 - (i.worker_idle or 0.0)
    score = _stalled(i) * busy * max(0.0, (i.worker_cpu_share - 0.5) / 0.4)
    return (
        min(1.0, score),
        f"workers are busy {busy:.0%} of the time and spend {i.worker_cpu_share:.0%} of it on a "
        f"CPU; with {i.num_workers} workers on {i.cores} cores the data takes "
        f"{i.stall:.0%} of the step",
        {
            "worker_busy_fraction": busy,
            "worker_cpu_share": i.worker_cpu_share,
            "stall_fraction": i.stall,
            "cores": float(i.cores),
        },
    )


def _io(i: Inputs, *, bandwidth: bool) -> tuple[float, str, dict[str, float]]:
    if i.worker_cpu_share is None or i.num_workers == 0:
        return 0.0, "", {}
    busy = 1.0 - (i.worker_idle or 0.0)
    waiting = max(0.0, (0.7 - i.worker_cpu_share) / 0.5)
    rate = i.read_bytes_per_s or 0.0
    heavy = min(1.0, rate / 200e6) if bandwidth else 1.0 - min(1.0, rate / 200e6)
    if bandwidth and i.iowait_pct:
        heavy = max(heavy, min(1.0, i.iowait_pct / 20.0))
    score = _stalled(i) * busy * min(1.0, waiting) * heavy
    what = (
        f"workers read {rate / 1e6:.0f} MB/s and wait off-CPU"
        if bandwidth
        else "workers wait off-CPU for each sample without reading much"
    )
    return (
        min(1.0, score),
        f"{what}: busy {busy:.0%} of the time but only {i.worker_cpu_share:.0%} of that on a CPU",
        {
            "worker_busy_fraction": busy,
            "worker_cpu_share": i.worker_cpu_share,
            "read_bytes_per_s": rate,
            **({"iowait_pct": i.iowait_pct} if i.iowait_pct is not None else {}),
        },
    )


def _ipc(i: Inputs) -> tuple[float, str, dict[str, float]]:
    if i.transport_s is None or not i.worker_s or i.num_workers == 0:
        return 0.0, "", {}
    share = i.transport_s / (i.worker_s + i.transport_s)
    score = _stalled(i) * max(0.0, (share - 0.15) / 0.35)
    mb = (i.batch_bytes or 0.0) / 2**20
    return (
        min(1.0, score),
        f"moving each batch ({mb:.1f} MiB) between processes takes {share:.0%} of a batch's "
        f"time ({i.transport_s * 1e3:.1f} ms)",
        {"transport_s": i.transport_s, "transport_share": share, "batch_mib": mb},
    )


def _memory(i: Inputs) -> tuple[float, str, dict[str, float]]:
    evidence: dict[str, float] = {}
    score = 0.0
    if i.min_available_bytes is not None and i.memory_total:
        free = i.min_available_bytes / i.memory_total
        evidence["min_available_fraction"] = free
        score = max(score, max(0.0, (0.10 - free) / 0.10))
    if i.copy_on_read:
        evidence["copy_on_read"] = 1.0
        score = max(score, 0.5)
    text = (
        "memory is short: "
        + (
            f"available memory fell to {evidence['min_available_fraction']:.0%} of RAM"
            if "min_available_fraction" in evidence
            else ""
        )
        + ("; " if len(evidence) > 1 else "")
        + (
            "workers' private memory grows as they read Python objects (copy-on-read)"
            if i.copy_on_read
            else ""
        )
    )
    return min(1.0, score), text, evidence


def _gpu(i: Inputs) -> tuple[float, str, dict[str, float]]:
    if i.gpu_copy_s is None or not i.batches_per_s:
        return 0.0, "", {}
    share = i.gpu_copy_s * i.batches_per_s
    return (
        min(1.0, max(0.0, (share - 0.2) / 0.5)),
        f"copying each batch to the GPU takes {i.gpu_copy_s * 1e3:.1f} ms, {share:.0%} of the "
        "time per batch",
        {"gpu_copy_s": i.gpu_copy_s, "gpu_copy_share": share},
    )


RULES: dict[str, Rule] = {
    "consumer": _consumer,
    "main_process": _main_process,
    "worker_cpu": _worker_cpu,
    "io_latency": lambda i: _io(i, bandwidth=False),
    "io_bandwidth": lambda i: _io(i, bandwidth=True),
    "ipc_transfer": _ipc,
    "memory": _memory,
    "gpu_transfer": _gpu,
}


def predict(i: Inputs, workers: range | None = None) -> tuple[tuple[PredictionPoint, ...], dict]:
    """Samples/s predicted at other worker counts (NOTE [ Throughput model ])."""
    if not i.worker_s or i.worker_cpu_share is None or not i.batches_per_s:
        return (), {}
    d_w = i.worker_s
    u = i.worker_cpu_share
    d_s = (1.0 - i.stall) / i.batches_per_s
    c_s = (i.main_cpu_pct or 0.0) / 100.0 / i.batches_per_s
    top = max(4 * i.cores, 2 * i.num_workers, 8)
    points = []
    for n in workers or range(1, top + 1):
        bounds = {
            "workers": n / d_w,
            "cores": i.cores / (u * d_w + c_s) if (u * d_w + c_s) > 0 else float("inf"),
            "consumer": 1.0 / d_s if d_s > 0 else float("inf"),
        }
        bound = min(bounds, key=bounds.get)
        points.append(
            PredictionPoint(
                num_workers=n,
                prefetch_factor=2,
                samples_per_s=bounds[bound] * i.batch_size,
                bound=bound,
                measured=n == i.num_workers,
            )
        )
    model = {
        "worker_s_per_batch": d_w,
        "worker_cpu_share": u,
        "serial_s_per_batch": d_s,
        "main_cpu_s_per_batch": c_s,
        "cores": float(i.cores),
    }
    return tuple(points), model


def _recommend(verdict: str, i: Inputs, points: tuple[PredictionPoint, ...]) -> list[str]:
    best = max(points, key=lambda p: p.samples_per_s) if points else None
    now = i.samples_per_s
    out: list[str] = []
    if best is not None and best.samples_per_s > 1.1 * now and best.num_workers != i.num_workers:
        cheapest = min(
            (p for p in points if p.samples_per_s >= 0.97 * best.samples_per_s),
            key=lambda p: p.num_workers,
        )
        out.append(
            f"set num_workers={cheapest.num_workers}: predicted {cheapest.samples_per_s:,.0f} "
            f"samples/s against {now:,.0f} now (then limited by {cheapest.bound})"
        )
    if verdict == "consumer":
        enough = [p for p in points if p.bound == "consumer"]  # the loader already keeps up
        if enough and enough[0].num_workers < i.num_workers:
            out.append(
                f"the loader has headroom: num_workers={enough[0].num_workers} would still keep "
                "up and use fewer cores and less memory"
            )
        out.append("data loading is not what slows training down: look at the training step")
    elif verdict == "worker_cpu":
        out.append(
            "make each sample cheaper to produce (decode at the size you train at, cache "
            "decoded samples, move augmentations to the GPU): more workers than cores will "
            "not help"
        )
    elif verdict == "io_latency":
        out.append(
            "each sample waits on storage or the network: more workers (or more requests in "
            "flight per worker) hide that latency; the CPU is not the limit"
        )
    elif verdict == "io_bandwidth":
        out.append(
            "storage bandwidth is the limit: read fewer bytes (smaller or compressed files, "
            "a local cache) rather than adding workers"
        )
    elif verdict == "ipc_transfer":
        out.append(
            "batches are expensive to move between processes: send smaller dtypes (uint8 "
            "images, convert on the GPU); loadtune's DataLoader reuses shared memory for this"
        )
    elif verdict == "main_process":
        if i.num_workers == 0:
            out.append(f"load in worker processes: set num_workers to about {i.cores}")
        else:
            out.append("the main process is saturated: move work out of collate and the loop")
    elif verdict == "memory":
        out.append(
            "reduce prefetch_factor or num_workers, and keep dataset metadata in numpy arrays "
            "rather than Python lists or dicts (avoids copy-on-read growth in workers)"
        )
    elif verdict == "gpu_transfer":
        if not i.pin_memory:
            out.append("set pin_memory=True: copies from pinned memory are faster and async")
        out.append("overlap the copy with compute (loadtune DataLoader's device='cuda')")
    return out


def diagnose(result: ProfileResult) -> Diagnosis:
    """The verdict on a profile: bottleneck, evidence, runner-up, prediction, advice.

    Example:
        >>> from loadtune.diagnose import BOTTLENECKS
        >>> "consumer" in BOTTLENECKS
        True
    """
    i = inputs(result)
    scored = sorted(
        ((rule(i), name) for name, rule in RULES.items()),
        key=lambda item: item[0][0],
        reverse=True,
    )
    (score, text, evidence), name = scored[0]
    if score <= 0.0:  # nothing stands out: say what was seen, not a guess
        name = "consumer" if i.stall < _STALL_OK else "worker_cpu"
        score, text, evidence = RULES[name](i)
        if not text:
            text = f"the consumer waits for data {i.stall:.0%} of the time"
            evidence = {"stall_fraction": i.stall}
    runner = next(((s, n) for s, n in scored[1:] if s[0] > 0.0 and n != name), None)
    points, model = predict(i)
    return Diagnosis(
        bottleneck=name,
        explanation=text,
        evidence={**evidence, "score": score},
        runner_up=runner[1] if runner else None,
        runner_up_explanation=runner[0][1] if runner else "",
        prediction=points,
        model=model,
        recommendations=tuple(_recommend(name, i, points)),
    )
