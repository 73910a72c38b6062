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
* ``K``:   cores free for the loader: the usable cores minus what other processes on the
           machine used during the profile (system CPU minus our own processes' CPU).

With N workers the batch rate X(N) is bounded by the workers, by the cores and by the
serial main process:

    X(N) = min( N / D_w,  (K - D_s_cpu X) / (u D_w) ,  1 / D_s )

where the core bound is solved for X: ``K / (u D_w + c_s)`` with ``c_s`` the main
process's CPU seconds per batch. Samples/s is ``X(N) x batch_size``.

Requests in flight per worker (``fetch_concurrency`` k, loadtune's DataLoader): a worker
with k fetch threads is a closed system of k customers that each need ``c = u D_w`` CPU
seconds per batch (serialised by the GIL: one CPU at most) and otherwise wait, so its batch
rate is bounded by ``min(k / D_1, 1 / c)``, with ``D_1`` the batch's wall time when its
samples are fetched one after another. A profile at k0 measures ``D_w`` with k0 in flight;
while the CPU is not what limits the worker, ``D_1 = k0 D_w``. The worker bound above becomes
``N min(k / D_1, 1 / c)``; the core and consumer bounds do not change (threads add no CPU
work). It overlaps waits that are independent, such as requests to storage or a service;
waits that queue behind one another (one disk at its bandwidth) do not shrink, which is why
it is advised for ``io_latency`` only. The prefetch depth
does not move a steady-state bound; it absorbs variance between batches, so the model
predicts the same rate for every prefetch_factor and says so. The point at the measured
worker count is marked ``measured`` so a reader can see how well the model fits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .results import Diagnosis, PredictionPoint, ProfileResult

__all__ = ["BOTTLENECKS", "Inputs", "diagnose", "inputs", "predict", "predict_concurrency"]

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
# A collate that fills its batch at this rate or faster is a memory copy, not computation:
# no per-sample Python or transform work runs at a GB/s, while a memcpy runs at several. In
# loadtune's loader collate stacks straight into the shared-memory block, so such a collate
# is the worker's half of moving the batch between processes (the ipc_transfer rule).
_COPY_BYTES_PER_S = 1e9
# Below this score a rule's ramp has barely left zero (io_bandwidth at a few KB/s read,
# say): that is not a second suspect worth naming.
_RUNNER_UP_MIN = 0.05


@dataclass(frozen=True, slots=True)
class Inputs:
    """The measured numbers the rules and the model read (None where not measured)."""

    num_workers: int
    batch_size: int
    cores: int
    free_cores: float  # cores left by processes other than the loader's (the model's K)
    stall: float
    batches_per_s: float
    samples_per_s: float
    worker_s: float | None  # D_w
    fetch_s: float | None
    transport_s: float | None  # pack + unpack per batch
    collate_s: float | None
    unpack_s: float | None
    worker_cpu_share: float | None  # u
    worker_cpu_wait_share: float | None  # share of busy time runnable but without a CPU
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
    fetch_concurrency: int = 1  # samples in flight per worker during the profile (k0)
    backend: str = "loadtune"


def _get(result: ProfileResult, probe: str, key: str) -> float | None:
    found = result.probes.get(probe)
    if found is None or not found.available:
        return None
    value = found.summary.get(key)
    return float(value) if value is not None else None


def _pool_size(result: ProfileResult) -> int:
    """The workers at the end of the window: ``num_workers="auto"`` may have changed it.

    The model then describes the pool the window ended with (the stages probe's
    ``worker_history``; its last change is the pool's size from then on).
    """
    stages = result.probes.get("stages")
    history = stages.detail.get("worker_history") if stages is not None else None
    if history:
        return int(history[-1]["to"])
    return result.config.num_workers


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
    per_worker_wait = _get(result, "cpu", "workers_cpu_wait_pct")
    if idle is None and per_worker_cpu is not None and per_worker_wait is not None:
        # torch's loader, seen from outside: no events, so a worker's busy time is what it
        # spent on a CPU or waiting for one (time blocked on I/O is then counted as idle)
        idle = max(0.0, 1.0 - (per_worker_cpu + per_worker_wait) / 100.0)
    share = wait_share = None
    if per_worker_cpu is not None and idle is not None and idle < 0.999:
        share = min(1.0, per_worker_cpu / 100.0 / (1.0 - idle))
        if per_worker_wait is not None:
            wait_share = min(1.0, per_worker_wait / 100.0 / (1.0 - idle))
    bytes_per_s = _get(result, "stages", "bytes_per_s")
    # Bytes and batches from the same (stages) window, so that this is the mean batch size
    # exactly; the measurement's window opens and closes a few milliseconds apart from it.
    batches_per_s = _get(result, "stages", "batches_per_s") or m.batches_per_s
    batch_bytes = bytes_per_s / batches_per_s if bytes_per_s and batches_per_s else None
    memory = result.probes.get("memory")
    gpu_copy = _get(
        result, "gpu", "pinned_copy_s" if result.config.pin_memory else "pageable_copy_s"
    )
    cores = _get(result, "cpu", "cores") or result.machine.usable_cores
    main_cpu = _get(result, "cpu", "main_cpu_pct")
    window = _get(result, "cpu", "window_s")
    sampler = result.overhead.get("sampler_cpu_s")
    if main_cpu is not None and window and sampler is not None:
        # the probes' sampler thread runs in the main process: its CPU is not the loader's
        main_cpu = max(0.0, main_cpu - 100.0 * sampler / window)
    free = float(cores)
    system_cpu = _get(result, "cpu", "system_cpu_pct")
    workers_cpu = _get(result, "cpu", "workers_cpu_pct")
    if system_cpu is not None and workers_cpu is not None:
        # other tenants' CPU: everything busy on the machine minus our own processes
        ours = (workers_cpu + (_get(result, "cpu", "main_cpu_pct") or 0.0)) / 100.0
        others = max(0.0, system_cpu / 100.0 * cores - ours)
        free = max(1.0, cores - others)
    return Inputs(
        num_workers=_pool_size(result),
        batch_size=result.config.batch_size or 1,
        cores=int(cores),
        free_cores=free,
        stall=m.stall_fraction,
        batches_per_s=m.batches_per_s,
        samples_per_s=m.samples_per_s,
        worker_s=worker_s,
        fetch_s=fetch,
        transport_s=transport,
        collate_s=collate,
        unpack_s=unpack,
        worker_cpu_share=share,
        worker_cpu_wait_share=wait_share,
        worker_idle=idle,
        main_cpu_pct=main_cpu,
        read_bytes_per_s=_get(result, "io", "workers_read_bytes_per_s"),
        iowait_pct=_get(result, "io", "iowait_pct"),
        batch_bytes=batch_bytes,
        min_available_bytes=_get(result, "memory", "min_available_bytes"),
        memory_total=float(result.machine.memory_total),
        copy_on_read=bool(memory and memory.available and memory.detail.get("copy_on_read")),
        gpu_copy_s=gpu_copy,
        pin_memory=result.config.pin_memory,
        fetch_concurrency=int(getattr(result.config, "fetch_concurrency", None) or 1),
        backend=result.backend,
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


def _cpu_demand(i: Inputs) -> float:
    """Share of the workers' busy time on a CPU or waiting for one.

    A worker that is ready to run but finds every core taken is off-CPU without waiting
    for I/O: on 2 cores, 2 CPU-bound workers beside the main process measured only 69% on
    a CPU and 33% waiting for one. The rules count that wait as CPU demand, so a CPU-bound
    loader on a full machine does not read as latency-bound. (The model's ``u`` stays the
    on-CPU share: it is the CPU seconds a batch costs.)
    """
    return min(1.0, (i.worker_cpu_share or 0.0) + (i.worker_cpu_wait_share or 0.0))


def _worker_cpu(i: Inputs) -> tuple[float, str, dict[str, float]]:
    if i.worker_cpu_share is None or i.num_workers == 0:
        return 0.0, "", {}
    busy = 1.0 - (i.worker_idle or 0.0)
    demand = _cpu_demand(i)
    score = _stalled(i) * busy * max(0.0, (demand - 0.5) / 0.4)
    waiting = (
        f" and {i.worker_cpu_wait_share:.0%} waiting for one" if i.worker_cpu_wait_share else ""
    )
    return (
        min(1.0, score),
        f"workers are busy {busy:.0%} of the time and spend {i.worker_cpu_share:.0%} of it on a "
        f"CPU{waiting}; with {i.num_workers} workers on {i.cores} cores the data takes "
        f"{i.stall:.0%} of the step",
        {
            "worker_busy_fraction": busy,
            "worker_cpu_share": i.worker_cpu_share,
            **(
                {"worker_cpu_wait_share": i.worker_cpu_wait_share}
                if i.worker_cpu_wait_share is not None
                else {}
            ),
            "stall_fraction": i.stall,
            "cores": float(i.cores),
        },
    )


def _io(i: Inputs, *, bandwidth: bool) -> tuple[float, str, dict[str, float]]:
    if i.worker_cpu_share is None or i.num_workers == 0:
        return 0.0, "", {}
    busy = 1.0 - (i.worker_idle or 0.0)
    waiting = max(0.0, (0.7 - _cpu_demand(i)) / 0.5)  # waiting for a CPU is not I/O
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
    moving = i.transport_s
    # loadtune's pack only writes a small header: the batch's bytes were copied into shared
    # memory by collate. Measured on 24 MiB batches of views (no compute): collate 4.6 ms
    # at 5.5 GB/s, pack + unpack 0.5 ms, so pack + unpack alone put the share at 10% on a
    # loader that does nothing but move bytes. A collate at memory speed is that copy.
    if i.collate_s and i.batch_bytes and i.batch_bytes / i.collate_s >= _COPY_BYTES_PER_S:
        moving += i.collate_s
    # A batch's time across processes: the worker's (fetch + collate + pack) and unpack.
    share = moving / (i.worker_s + (i.unpack_s or 0.0))
    score = _stalled(i) * max(0.0, (share - 0.15) / 0.35)
    mb = (i.batch_bytes or 0.0) / 2**20
    return (
        min(1.0, score),
        f"moving each batch ({mb:.1f} MiB) between processes takes {share:.0%} of a batch's "
        f"time ({moving * 1e3:.1f} ms)",
        {"transport_s": moving, "transport_share": share, "batch_mib": mb},
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


# On a tie (scores saturate at 1) the earlier rule wins. ipc_transfer comes before
# worker_cpu because copying a batch is CPU work too: when both are certain, the CPU time
# is the copy, and "send fewer bytes" is the advice that helps.
RULES: dict[str, Rule] = {
    "consumer": _consumer,
    "main_process": _main_process,
    "ipc_transfer": _ipc,
    "worker_cpu": _worker_cpu,
    "io_latency": lambda i: _io(i, bandwidth=False),
    "io_bandwidth": lambda i: _io(i, bandwidth=True),
    "memory": _memory,
    "gpu_transfer": _gpu,
}


_CONCURRENCY = (1, 2, 4, 8, 16, 32)  # the fetch_concurrency values the advice looks at


def predict(
    i: Inputs, workers: range | None = None, fetch_concurrency: int | None = None
) -> tuple[tuple[PredictionPoint, ...], dict]:
    """Samples/s predicted at other worker counts (NOTE [ Throughput model ]).

    Args:
        i: The measured inputs (:func:`inputs`).
        workers: The worker counts to predict (default 1 to ``max(4 x cores, 8)``).
        fetch_concurrency: Samples in flight per worker to predict for (default: as
            measured).

    Returns:
        The points (each with the bound that limits it) and the model's inputs; both empty
        when the profile lacks the stages or cpu numbers the model needs.
    """
    if not i.worker_s or i.worker_cpu_share is None or not i.batches_per_s:
        return (), {}
    d_w = i.worker_s
    u = i.worker_cpu_share
    d_s = (1.0 - i.stall) / i.batches_per_s
    c_s = (i.main_cpu_pct or 0.0) / 100.0 / i.batches_per_s
    k0 = max(1, i.fetch_concurrency)
    k = max(1, fetch_concurrency or k0)
    c = u * d_w  # a worker's CPU seconds per batch
    d_1 = k0 * d_w  # the batch's wall time with its samples fetched one after another
    per_worker = min(k / d_1, 1.0 / c) if c > 0 else k / d_1
    if k == k0:
        per_worker = 1.0 / d_w  # as measured, without the closed-system approximation
    top = max(4 * i.cores, 2 * i.num_workers, 8)
    points = []
    for n in workers or range(1, top + 1):
        bounds = {
            "workers": n * per_worker,
            "cores": i.free_cores / (c + c_s) if (c + c_s) > 0 else float("inf"),
            "consumer": 1.0 / d_s if d_s > 0 else float("inf"),
        }
        bound = min(bounds, key=bounds.get)
        points.append(
            PredictionPoint(
                num_workers=n,
                prefetch_factor=2,
                samples_per_s=bounds[bound] * i.batch_size,
                bound=bound,
                measured=n == i.num_workers and k == k0,
                fetch_concurrency=k,
            )
        )
    model = {
        "worker_s_per_batch": d_w,
        "worker_cpu_share": u,
        "serial_s_per_batch": d_s,
        "main_cpu_s_per_batch": c_s,
        "cores": float(i.cores),
        "free_cores": i.free_cores,
        "fetch_concurrency": float(k0),
    }
    return tuple(points), model


def predict_concurrency(i: Inputs) -> tuple[PredictionPoint, ...]:
    """Samples/s at the measured worker count for each fetch_concurrency in 1..32.

    Empty without workers (fetch_concurrency acts inside worker processes) or without the
    numbers the model needs.
    """
    if i.num_workers == 0:
        return ()
    out = []
    for k in sorted({*_CONCURRENCY, max(1, i.fetch_concurrency)}):
        points, _ = predict(i, range(i.num_workers, i.num_workers + 1), fetch_concurrency=k)
        out.extend(points)
    return tuple(out)


def _fetch_advice(i: Inputs, fetch: tuple[PredictionPoint, ...]) -> str | None:
    """The fetch_concurrency to set, with its predicted effect, or None if it would not help."""
    if not fetch:
        return None
    best = max(fetch, key=lambda p: p.samples_per_s)
    now = i.samples_per_s
    if best.samples_per_s <= 1.1 * now:
        return None
    pick = min(
        (p for p in fetch if p.samples_per_s >= 0.97 * best.samples_per_s),
        key=lambda p: p.fetch_concurrency,
    )
    if pick.fetch_concurrency == i.fetch_concurrency:
        return None
    how = (
        f"set fetch_concurrency={pick.fetch_concurrency}"
        if i.backend == "loadtune"
        else f"use loadtune.DataLoader with fetch_concurrency={pick.fetch_concurrency}"
    )
    return (
        f"{how}: {pick.fetch_concurrency} samples in flight per worker, predicted "
        f"{pick.samples_per_s:,.0f} samples/s with the same {i.num_workers} workers against "
        f"{now:,.0f} now (then limited by {pick.bound}); threads, so no extra memory"
    )


def _recommend(
    verdict: str,
    i: Inputs,
    points: tuple[PredictionPoint, ...],
    fetch: tuple[PredictionPoint, ...] = (),
) -> list[str]:
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
        fetch = _fetch_advice(i, fetch)
        out[:0] = [fetch] if fetch else []  # threads before processes: no extra memory
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
    runner = next(((s, n) for s, n in scored[1:] if s[0] >= _RUNNER_UP_MIN and n != name), None)
    points, model = predict(i)
    fetch = predict_concurrency(i) if points else ()
    return Diagnosis(
        bottleneck=name,
        explanation=text,
        evidence={**evidence, "score": score},
        runner_up=runner[1] if runner else None,
        runner_up_explanation=runner[0][1] if runner else "",
        prediction=points,
        model=model,
        recommendations=tuple(_recommend(name, i, points, fetch)),
        fetch_prediction=fetch,
    )
