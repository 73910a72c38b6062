"""GPU transfer: what copying a real batch to the GPU costs, pinned vs pageable, and overlap.

:class:`GpuProbe` measures, for the batch in ``watch.options["sample_batch"]``:

- host-to-device bandwidth from pageable memory (a plain ``.to("cuda")``) and from pinned
  memory (what ``pin_memory=True`` gives), each the median of several timed copies;
- how much of a pinned copy a side-stream prefetch hides behind compute: a synthetic
  matmul workload about as long as the copy is timed alone, the copy alone, and both with
  the copy on a side stream, and the hidden fraction is
  ``(t_copy + t_compute - t_both) / t_copy`` clamped to [0, 1].

Without CUDA the probe is unavailable with the precise reason; it never reports a number
it did not measure.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .base import ProbeResult, Watch

if TYPE_CHECKING:
    import torch

__all__ = ["GpuProbe", "batch_tensors", "cuda_unavailable_reason"]

# Matmul sizes tried for the synthetic compute, largest first: the largest whose single run
# is no longer than the copy is repeated to last about as long as the copy.
_MATMUL_SIZES = (4096, 2048, 1024, 512, 256)
_MAX_MATMULS = 10_000


def cuda_unavailable_reason() -> str | None:
    """Why CUDA cannot be used here, or None when it can.

    Returns:
        ``"torch <version> was built without CUDA"`` for a CPU-only build,
        ``"no CUDA device is visible"`` for a CUDA build that sees no device, else None.

    Example:
        >>> reason = cuda_unavailable_reason()
        >>> reason is None or isinstance(reason, str)
        True
    """
    import torch

    if torch.cuda.is_available():
        return None
    if not torch.backends.cuda.is_built():
        return f"torch {torch.__version__} was built without CUDA"
    return "no CUDA device is visible"


def batch_tensors(batch: Any) -> list[torch.Tensor]:
    """The CPU tensors in a batch as a loader yields it, in traversal order.

    Tensors may be nested in lists, tuples (named tuples included) and mappings; anything
    else (numbers, strings, tensors already on a device, sparse tensors) is not counted.

    Args:
        batch: A collated batch.

    Returns:
        The CPU tensors, depth first, mappings in their iteration order.

    Example:
        >>> import torch
        >>> x = torch.zeros(2, 3)
        >>> [t.shape for t in batch_tensors({"x": x, "meta": [torch.ones(4), "id"]})]
        [torch.Size([2, 3]), torch.Size([4])]
    """
    import torch

    found: list[torch.Tensor] = []

    def walk(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            # Sparse and other layouts have no plain byte count to copy; leave them out.
            if item.device.type == "cpu" and item.layout == torch.strided:
                found.append(item)
        elif isinstance(item, Mapping):
            for value in item.values():
                walk(value)
        elif isinstance(item, (list, tuple)):
            for value in item:
                walk(value)

    walk(batch)
    return found


class GpuProbe:
    """Host-to-device copy cost of a real batch, and how much a side stream hides.

    The measurement runs in :meth:`stop`, not :meth:`start`: by then the loader's measured
    window is over, so the copy benchmark neither competes with the workers for memory
    bandwidth nor disturbs what the other probes measure, and the profiling run may put
    ``watch.options["sample_batch"]`` in place at any time before ``stop``. It also keeps
    CUDA uninitialised while the loader forks its workers. :meth:`sample` does nothing.

    Options read from ``watch.options``: ``sample_batch`` (required for a measurement),
    ``gpu_device`` (a CUDA device index; default the current device).

    ``stop`` returns, when it measured: summary ``batch_bytes``, ``pageable_copy_s``,
    ``pinned_copy_s``, ``pageable_gbps`` and ``pinned_gbps`` (GB/s, 1e9 bytes),
    ``pinned_speedup`` (pageable time / pinned time) and ``overlap_hidden_fraction``;
    detail: the device name, versions, per-repeat times and the synthetic compute used.
    Otherwise it is unavailable with the reason (no CUDA, no sample batch, no tensor bytes,
    or the CUDA error that stopped the measurement).

    Args:
        repeats: Timed repeats of each measurement (after one untimed warm-up); the
            medians are reported.

    Example:
        >>> probe = GpuProbe()
        >>> probe.start(Watch())
        >>> result = probe.stop()
        >>> result.available or bool(result.reason)
        True
    """

    name = "gpu"

    def __init__(self, repeats: int = 5) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.repeats = repeats
        self._watch: Watch | None = None

    def start(self, watch: Watch) -> None:
        """Remember what to measure; the measurement itself runs in :meth:`stop`."""
        self._watch = watch

    def sample(self, now: float) -> None:
        """Nothing: a copy benchmark per sample would disturb the loader it observes."""

    def stop(self) -> ProbeResult:
        """Measure the sample batch's copies (see the class docstring); never raises."""
        reason = cuda_unavailable_reason()
        if reason is not None:
            return ProbeResult.unavailable(self.name, reason)
        if self._watch is None:
            return ProbeResult.unavailable(self.name, "stop() was called before start()")
        if "sample_batch" not in self._watch.options:
            return ProbeResult.unavailable(
                self.name, "no batch to measure: watch.options['sample_batch'] is not set"
            )
        tensors = batch_tensors(self._watch.options["sample_batch"])
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        if nbytes == 0:
            return ProbeResult.unavailable(
                self.name, "the sample batch holds no CPU tensor bytes to copy"
            )
        import torch

        index = self._watch.options.get("gpu_device")
        device = torch.device("cuda", torch.cuda.current_device() if index is None else index)
        try:
            with torch.cuda.device(device):
                return self._measure(tensors, nbytes, device)
        except RuntimeError as exc:  # CUDA errors, out of memory included
            return ProbeResult.unavailable(
                self.name, f"the copy measurement failed on {device}: {exc}"
            )
        finally:
            # Give back the device memory the benchmark cached, for the training run.
            try:
                torch.cuda.empty_cache()
            except RuntimeError:
                pass

    def _measure(
        self, tensors: list[torch.Tensor], nbytes: int, device: torch.device
    ) -> ProbeResult:
        import torch

        contiguous = [t.contiguous() for t in tensors]
        was_pinned = any(t.is_pinned() for t in contiguous)
        # The pageable side must really be pageable: a batch from pin_memory=True is pinned
        # already, so copy such tensors into ordinary memory first.
        pageable = [
            torch.empty(t.shape, dtype=t.dtype).copy_(t) if t.is_pinned() else t for t in contiguous
        ]
        pinned = [t.pin_memory() for t in pageable]
        dst = [torch.empty(t.shape, dtype=t.dtype, device=device) for t in pageable]
        main = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)

        def copy_pageable() -> None:
            for d, s in zip(dst, pageable, strict=True):
                d.copy_(s)

        def copy_pinned() -> None:
            for d, s in zip(dst, pinned, strict=True):
                d.copy_(s, non_blocking=True)

        # Bandwidth: pageable and pinned alternate, so drift on a shared machine hits both.
        pageable_s: list[float] = []
        pinned_s: list[float] = []
        _timed(main, copy_pageable, device)
        _timed(main, copy_pinned, device)
        for _ in range(self.repeats):
            pageable_s.append(_timed(main, copy_pageable, device))
            pinned_s.append(_timed(main, copy_pinned, device))
        t_pageable = statistics.median(pageable_s)
        t_pinned = statistics.median(pinned_s)

        # Overlap: copy alone on the side stream, compute alone, then both at once.
        compute, matmul_n, matmuls = _synthetic_compute(device, main, t_pinned)
        _timed(side, copy_pinned, device)
        _timed(main, compute, device)
        _timed_overlap(main, side, copy_pinned, compute, device)
        copy_alone: list[float] = []
        compute_alone: list[float] = []
        both: list[float] = []
        for _ in range(self.repeats):
            copy_alone.append(_timed(side, copy_pinned, device))
            compute_alone.append(_timed(main, compute, device))
            both.append(_timed_overlap(main, side, copy_pinned, compute, device))
        t_copy = statistics.median(copy_alone)
        t_compute = statistics.median(compute_alone)
        t_both = statistics.median(both)
        if min(t_pageable, t_pinned, t_copy) <= 0.0:
            return ProbeResult.unavailable(
                self.name, f"a {nbytes}-byte copy is too short to time with CUDA events"
            )
        hidden = min(1.0, max(0.0, (t_copy + t_compute - t_both) / t_copy))

        summary = {
            "batch_bytes": float(nbytes),
            "pageable_copy_s": t_pageable,
            "pinned_copy_s": t_pinned,
            "pageable_gbps": nbytes / t_pageable / 1e9,
            "pinned_gbps": nbytes / t_pinned / 1e9,
            "pinned_speedup": t_pageable / t_pinned,
            "overlap_hidden_fraction": hidden,
        }
        detail = {
            "device": torch.cuda.get_device_name(device),
            "device_index": device.index,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "measured_in": "stop",
            "tensors": len(tensors),
            "batch_was_pinned": was_pinned,
            "repeats": self.repeats,
            "pageable_copy_s": pageable_s,
            "pinned_copy_s": pinned_s,
            "overlap": {
                "compute": f"{matmuls} x float32 matmul {matmul_n}x{matmul_n}",
                "copy_s": copy_alone,
                "compute_s": compute_alone,
                "both_s": both,
                "median_copy_s": t_copy,
                "median_compute_s": t_compute,
                "median_both_s": t_both,
            },
        }
        return ProbeResult(name=self.name, summary=summary, detail=detail)


def _timed(stream: torch.cuda.Stream, work: Callable[[], None], device: torch.device) -> float:
    """Seconds ``work`` takes on ``stream``, by CUDA events, starting from an idle device."""
    import torch

    torch.cuda.synchronize(device)
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    with torch.cuda.stream(stream):
        start.record(stream)
        work()
        end.record(stream)
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def _timed_overlap(
    main: torch.cuda.Stream,
    side: torch.cuda.Stream,
    copy: Callable[[], None],
    compute: Callable[[], None],
    device: torch.device,
) -> float:
    """Seconds from launching ``copy`` on ``side`` and ``compute`` on ``main`` until both end.

    The side stream waits for the start event so that both begin together; the main stream
    waits for the copy before the end event, as a training step waits for its prefetch.
    """
    import torch

    torch.cuda.synchronize(device)
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    copied = torch.cuda.Event()
    start.record(main)
    side.wait_event(start)
    with torch.cuda.stream(side):
        copy()  # launched first: non_blocking from pinned memory returns at once
        copied.record(side)
    with torch.cuda.stream(main):
        compute()
    main.wait_event(copied)
    end.record(main)
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def _synthetic_compute(
    device: torch.device, stream: torch.cuda.Stream, target_s: float
) -> tuple[Callable[[], None], int, int]:
    """A matmul workload lasting about ``target_s`` on ``device``.

    Returns:
        The workload, the matmul size n (n x n float32) and how many matmuls it runs.
    """
    import torch

    for n in _MATMUL_SIZES:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        out = torch.empty(n, n, device=device)

        def one(a: torch.Tensor = a, b: torch.Tensor = b, out: torch.Tensor = out) -> None:
            torch.matmul(a, b, out=out)

        _timed(stream, one, device)  # warm-up: cuBLAS picks its kernel on the first call
        t_one = statistics.median([_timed(stream, one, device) for _ in range(3)])
        if t_one <= target_s or n == _MATMUL_SIZES[-1]:
            count = min(_MAX_MATMULS, max(1, math.ceil(target_s / max(t_one, 1e-9))))

            def run(one: Callable[[], None] = one, count: int = count) -> None:
                for _ in range(count):
                    one()

            return run, n, count
        del a, b, out
    raise AssertionError("unreachable: the last size always returns")
