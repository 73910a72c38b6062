"""DataLoader: torch's arguments, defaults, attributes and errors, with loadtune's iterator.

``loadtune.DataLoader`` subclasses ``torch.utils.data.DataLoader`` for its *configuration*
only: torch's ``__init__`` validates the arguments, so the defaults, the attributes
(``dataset``, ``batch_size``, ``sampler``, ``batch_sampler``, ...), ``len()`` and every
error for an invalid combination are torch's own, and ``isinstance(loader,
torch.utils.data.DataLoader)`` holds for code (trainers, wrappers) that checks it. The
iteration is ours: :mod:`loadtune.loader._iterator` and :mod:`loadtune.loader._worker`
implement the worker processes, dispatch, the result pipes, the prefetch window, shared
memory transport and the pin-memory step; no part of torch's iterator is used.
"""

from __future__ import annotations

import inspect
import warnings
import weakref
from typing import Any, TypeVar

import psutil
import torch
import torch.utils.data

from probes.events import EventLog, PoolEvent

from . import _iterator, _resume
from ._autopool import PREFETCH, WORKERS, PoolSettings
from ._fetch import ON_ERROR, RETRY_EXHAUSTED, ErrorPolicy, SampleFailure
from ._iterator import MultiProcessIter, SingleProcessIter
from ._resize import PoolState, default_max_workers, usable_cores

__all__ = ["DataLoader"]

T_co = TypeVar("T_co", covariant=True)

_DISPATCH = ("round_robin", "balanced")
_ON_DEATH = ("restart", "raise")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} should be one of {choices}, but got {name}={value!r}")


def _is_auto(name: str, value: Any, expected: str) -> bool:
    """Whether ``value`` is "auto"; any other string is refused with what is expected."""
    if isinstance(value, str):
        if value == "auto":
            return True
        raise ValueError(f"{name} should be {expected} or 'auto', but got {name}={value!r}")
    return False


def _check_max_workers(dataset: Any, auto: bool, num_workers: Any, max_workers: Any) -> None:
    if max_workers is not None and not auto:
        raise ValueError(
            f"max_workers bounds num_workers='auto'; with num_workers={num_workers!r} leave "
            f"it None, but got max_workers={max_workers!r}"
        )
    if not auto:
        return
    if max_workers is not None and (
        isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
    ):
        raise ValueError(
            "max_workers should be a positive integer (num_workers='auto' keeps at least one "
            "worker), or None for a bound from the cores and the available memory, but got "
            f"max_workers={max_workers!r}"
        )
    if isinstance(dataset, torch.utils.data.IterableDataset):
        raise ValueError(
            "num_workers='auto' needs a map-style dataset: an IterableDataset is split among "
            "its workers by get_worker_info().num_workers, which a changing pool would break "
            "mid-stream; give a fixed num_workers"
        )


def _check_concurrency(dataset: Any, k: Any, per_sample_seed: bool) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"fetch_concurrency should be a positive integer, but got {k!r}")
    if isinstance(dataset, torch.utils.data.IterableDataset) and (k > 1 or per_sample_seed):
        raise ValueError(
            "fetch_concurrency > 1 and per_sample_seed need a map-style dataset: an "
            "IterableDataset's stream is read by one iterator, one sample after another"
        )
    if (
        per_sample_seed
        and k > 1
        and not inspect.iscoroutinefunction(getattr(dataset, "aget", None))
    ):
        warnings.warn(
            f"per_sample_seed=True with fetch_concurrency={k}: the global RNGs are shared by "
            "the fetch threads, so each __getitem__ runs alone under a lock and no latency is "
            "hidden; give the dataset an 'async def aget(self, index)' to keep both",
            RuntimeWarning,
            stacklevel=3,
        )


class DataLoader(torch.utils.data.DataLoader[T_co]):
    """A drop-in for ``torch.utils.data.DataLoader``: same arguments, batches and seeds.

    Every argument of torch's DataLoader is accepted with the same default and meaning.
    What differs is how batches travel and what is recorded:

    * batches cross from the workers through reused shared-memory blocks and arrive in
      the main process without a copy (a batch stays valid while anything refers to it);
    * every batch leaves a :class:`probes.events.BatchEvent` in ``loader.events``
      (dispatch, worker, fetch and collate time, bytes, transport, wait);
    * each worker has its own pipes, so one worker cannot block another.

    Args:
        dataset, batch_size, shuffle, sampler, batch_sampler, collate_fn,
        pin_memory, drop_last, timeout, worker_init_fn, multiprocessing_context,
        generator, persistent_workers, pin_memory_device, in_order:
            As in ``torch.utils.data.DataLoader``.
        num_workers: As in torch (an int), or ``"auto"``: a pool that grows and shrinks
            while the loader runs (NOTE [ Adaptive worker pool ] in _autopool.py). It starts
            with 2 workers (``max_workers`` if fewer; a loaded state's size when resuming)
            and, from its own events, adds one while the consumer waits for batches and
            cores are idle, or while the workers mostly wait on I/O (there more workers than
            cores pay); it retires one when the workers sit idle, or when more workers than
            cores compute. Changes are one worker at a time, need consecutive measurement
            windows (0.15 s each) to agree, are followed by a cool-down after
            which their effect is measured, and are undone once if they did not pay; so a
            noisy neighbour does not make the pool oscillate. Every decision is a
            :class:`probes.events.PoolEvent` (time, before, after, reason with the measured
            numbers) in ``loader.worker_history`` and ``loader.events.pool_events()``. The
            batches are those of a fixed pool: the same indices, the same order with
            ``in_order=True``, every index once; a retired worker takes no new batch and
            finishes the ones it holds (if it dies first, the others take them).
            Randomness: with "auto", dispatch is ``"balanced"`` whatever ``dispatch`` says,
            and each batch seeds ``random``, torch and numpy from (base seed, epoch, batch
            number), so augmentations do not depend on how many workers ran and equal those
            of a fixed pool with ``dispatch="balanced"``; for torch's per-worker seeds use a
            fixed ``num_workers``. ``loader.num_workers`` reads the pool's size now (the
            starting size before the first batch, the size reached after);
            ``get_worker_info().num_workers`` in a worker is ``max_workers`` and worker ids
            stay below it; ``worker_init_fn`` runs in every worker added. Map-style datasets
            only.
        prefetch_factor: As in torch, or ``"auto"`` (with ``num_workers`` > 0 or "auto"):
            the batches in flight per worker start at 2 and grow by one, up to 16, while the
            consumer waits although the workers are not busy (a slow batch holds the ones
            behind it, and a deeper buffer lets the others run ahead), as long as all the
            batches in flight fit 10% of the memory available when iteration starts; over
            that budget it shrinks at once. ``loader.prefetch_factor`` reads the depth now;
            decisions are in ``loader.prefetch_history``.
        dispatch: ``"round_robin"`` (default) sends batch k to worker ``k % num_workers``
            exactly as torch does, so random augmentations give torch's samples.
            ``"balanced"`` hands the next batch to the worker with the least work, so a
            slow sample does not hold the batches queued behind it; each batch then seeds
            ``random``, torch and numpy from (base seed, epoch, batch number), which keeps
            runs reproducible but differs from torch's per-worker streams (NOTE [ Seed
            scheme ] in _worker.py).
        event_capacity: How many BatchEvents ``loader.events`` keeps (oldest dropped).
        on_error: What a sample that raises does. ``"raise"`` (default): the original
            exception type is raised in the main process with the dataset index, the worker
            and its traceback in the message. ``"skip"``: the sample is left out of its
            batch (a batch left empty is skipped) and recorded in ``loader.failures``.
            ``"retry"``: tried again ``max_retries`` times with exponential backoff from
            ``retry_backoff`` seconds, then ``retry_exhausted`` ("raise" or "skip"). For an
            IterableDataset a skipped sample is replaced by the stream's next one; a
            generator that raised is finished, so its stream ends there.
        on_worker_death: ``"restart"`` (default): a worker that dies (killed, segfault,
            ``os._exit``, OOM) is replaced by one with the same id and seed, the batches it
            held are dispatched again, and a RuntimeWarning names what happened; no index
            is lost or repeated. The replacement's RNG starts afresh, so a random
            augmentation of a re-dispatched batch differs from the uninterrupted run unless
            ``dispatch="balanced"`` (per-batch seeds). An IterableDataset's stream cannot be
            replayed, so its workers' deaths always raise. ``"raise"``: WorkerCrashError at
            once.
        max_worker_restarts: Restarts allowed per iterator; one more raises WorkerCrashError.
        min_available_memory: Below this much available system memory (a fraction of the
            total when < 1, else bytes; None turns it off) the loader keeps one batch in
            flight per worker instead of ``prefetch_factor``, instead of being killed by the
            OOM killer, and says so once with a RuntimeWarning.
        numa: Pin worker processes to CPUs: ``"spread"`` puts workers round-robin on the
            NUMA nodes (each may run on any CPU of its node), ``"compact"`` fills node 0's
            CPUs first, one CPU per worker (see ``probes.numa.plan_affinity``).
        device: A CUDA device (``"cuda"``, ``"cuda:1"``): each batch is pinned and copied
            to it on a side stream by the pin-memory thread while the current batch is in
            use; the consumer's stream waits for the copy before the batch is handed out.
            Without CUDA a RuntimeWarning says so and batches stay on the CPU.
        validate: Called on every sample in the worker, before collate; what it raises
            (``loadtune.DataFormatError``, ``DataCorruptionError``, anything) is that
            sample's error and follows ``on_error``: raised with the index, skipped and
            counted in ``loader.failures``, or retried. Must pickle under ``spawn``.
        fetch_concurrency: How many samples each worker fetches at once (default 1: one
            after another, as torch does). With k > 1 a worker runs its samples' fetches in
            k threads, or, when the dataset has ``async def aget(self, index)``, as
            coroutines on one asyncio event loop, k at a time; and it starts on its next
            batch while the slowest samples of the current one are still out. This hides
            per-sample latency (remote storage, network file systems, databases) without
            more processes. Batches, their order, ``on_error``, ``validate`` and
            ``loader.failures`` are as with k = 1: samples are collated in sampler order,
            and under ``on_error="raise"`` the batch raises the error of its first failing
            sample in sampler order (the one k = 1 raises; its later samples are not started
            or are waited for and dropped). A dataset with ``aget`` should also have a
            ``__getitem__`` giving the same sample (used when k is 1); one with
            ``__getitems__`` (and no ``aget``) is called once per batch as usual, and up to
            k such calls overlap. With ``num_workers=0`` the k fetches of each batch
            overlap in the main process, but batches do not. Map-style datasets only.
            Thread safety: the dataset's ``__getitem__`` then runs in k threads at once.
            Randomness: the k fetches share the worker's ``random``, torch and numpy RNGs,
            and which sample gets which draw depends on thread timing, so random
            augmentations are not reproducible with k > 1 unless ``per_sample_seed=True``.
        per_sample_seed: Seed ``random``, torch's CPU generator and numpy's global RNG
            before each sample from (base seed, epoch, dataset index), and before collate_fn
            from (base seed, epoch, batch number): a sample's augmentation is then the same
            whatever ``fetch_concurrency``, ``num_workers``, dispatch or restarts, run after
            run for the same ``generator`` (not torch's per-worker streams, though). Since
            those RNGs are process-wide, a plain ``__getitem__`` with k > 1 holds a lock
            from seeding to return: correct, but one sample at a time per worker, so no
            latency is hidden (the loader warns). ``aget`` keeps full concurrency: each
            coroutine's RNG state is swapped in and out at its awaits (about 0.1 ms per
            await). In the main process the caller's RNG state is restored after each
            batch. See NOTE [ Per-sample seeds ] in _fetch.py.

        max_workers: The most workers ``num_workers="auto"`` may run. Default: 4 per usable
            core (``os.sched_getaffinity``), at most 64, and no more than half the available
            memory holds at 128 MiB per worker; once batches are seen the pool also keeps
            its batches in flight within half the available memory. Only with "auto".

    Attributes:
        worker_history: The pool's size changes so far, as a tuple of PoolEvent (empty for
            a fixed ``num_workers``); readable during and after iteration.
        prefetch_history: The same for ``prefetch_factor="auto"``.
        auto_workers: Whether ``num_workers`` is "auto".
        auto_prefetch: Whether ``prefetch_factor`` is "auto".
        max_workers: The bound of the "auto" pool (None for a fixed ``num_workers``).

    Raises:
        ValueError, TypeError: Exactly where torch's DataLoader raises them, plus
            ``ValueError`` for an unknown ``dispatch``, a ``fetch_concurrency`` below 1,
            ``fetch_concurrency`` > 1 or ``per_sample_seed`` with an IterableDataset, a
            string other than "auto" for ``num_workers`` or ``prefetch_factor``, a
            ``max_workers`` below 1 or without ``num_workers="auto"``, and "auto" with an
            IterableDataset.

    Example:
        >>> import torch
        >>> from loadtune import DataLoader
        >>> data = torch.utils.data.TensorDataset(torch.arange(10.0))
        >>> [b[0].tolist() for b in DataLoader(data, batch_size=4)]
        [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0]]
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset[T_co],
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Any = None,
        batch_sampler: Any = None,
        num_workers: int | str = 0,
        collate_fn: Any = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Any = None,
        multiprocessing_context: Any = None,
        generator: Any = None,
        *,
        prefetch_factor: int | str | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
        dispatch: str = "round_robin",
        event_capacity: int = 100_000,
        on_error: str = "raise",
        max_retries: int = 3,
        retry_backoff: float = 0.05,
        retry_exhausted: str = "raise",
        on_worker_death: str = "restart",
        max_worker_restarts: int = 8,
        min_available_memory: float | None = 0.05,
        numa: str | None = None,
        device: str | torch.device | None = None,
        validate: Any = None,
        fetch_concurrency: int = 1,
        per_sample_seed: bool = False,
        max_workers: int | None = None,
    ) -> None:
        _check_choice("dispatch", dispatch, _DISPATCH)
        self.auto_workers = _is_auto("num_workers", num_workers, "a non-negative integer")
        self.auto_prefetch = _is_auto(
            "prefetch_factor", prefetch_factor, "a non-negative integer, None"
        )
        _check_max_workers(dataset, self.auto_workers, num_workers, max_workers)
        if self.auto_workers:
            if max_workers is None:
                max_workers = default_max_workers(usable_cores(), _iterator.available_memory())
            num_workers = min(2, max_workers)
            dispatch = "balanced"  # per-batch seeds: see NOTE [ Adaptive worker pool ]
        self.max_workers = max_workers
        if self.auto_prefetch and num_workers != 0:
            prefetch_factor = 2  # torch refuses "auto" with num_workers=0, in its own words
        self._pool_state = PoolState(0, None)  # torch's __init__ sets both through properties
        self._pool_settings = PoolSettings()
        self._prefetch_budget: int | None = None  # bytes; None: 10% of available memory
        self._pool_hook: Any = None  # tests: batches handed out -> pool size to force
        _check_concurrency(dataset, fetch_concurrency, per_sample_seed)
        self.fetch_concurrency = fetch_concurrency
        self.per_sample_seed = per_sample_seed
        _check_choice("on_error", on_error, ON_ERROR)
        _check_choice("retry_exhausted", retry_exhausted, RETRY_EXHAUSTED)
        _check_choice("on_worker_death", on_worker_death, _ON_DEATH)
        if max_retries < 0 or retry_backoff < 0 or max_worker_restarts < 0:
            raise ValueError(
                "max_retries, retry_backoff and max_worker_restarts should be non-negative, but "
                f"got {max_retries}, {retry_backoff} and {max_worker_restarts}"
            )
        if min_available_memory is not None and min_available_memory < 0:
            raise ValueError(
                "min_available_memory should be a fraction of memory (< 1), a number of bytes "
                f"(>= 1) or None, but got min_available_memory={min_available_memory}"
            )
        self.min_available_memory = min_available_memory
        if numa not in (None, "spread", "compact"):
            raise ValueError(f"numa should be None, 'spread' or 'compact', but got numa={numa!r}")
        self.numa = numa
        if device is not None and torch.device(device).type not in ("cpu", "cuda"):
            raise ValueError(f"device should be a CUDA device or None, but got device={device!r}")
        self.device = device
        if validate is not None and not callable(validate):
            raise TypeError(f"validate should be a callable or None, but got {validate!r}")
        self.validate = validate
        self.on_worker_death = on_worker_death
        self.max_worker_restarts = max_worker_restarts
        self._error_policy = ErrorPolicy(on_error, max_retries, retry_backoff, retry_exhausted)
        self.failures: list[SampleFailure] = []
        # Set before torch's __init__ (which freezes some attributes once initialized).
        self.dispatch = dispatch
        self.events = EventLog(event_capacity)
        self._epochs = 0
        self._pin_thread = False  # tests: run the pin-memory thread without an accelerator
        self._pending_state: dict | None = None
        self._last_iter: weakref.ref | None = None
        super().__init__(
            dataset,
            batch_size,
            shuffle,
            sampler,
            batch_sampler,
            num_workers,
            collate_fn,
            pin_memory,
            drop_last,
            timeout,
            worker_init_fn,
            multiprocessing_context,
            generator,
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            pin_memory_device=pin_memory_device,
            in_order=in_order,
        )

    @property
    def num_workers(self) -> int:  # type: ignore[override]
        """Worker processes: the fixed number, or with "auto" the pool's size now."""
        return self._pool_state.workers

    @num_workers.setter
    def num_workers(self, value: int) -> None:
        self._pool_state.workers = value

    @property
    def prefetch_factor(self) -> int | None:  # type: ignore[override]
        """Batches in flight per worker: the fixed number, or with "auto" the depth now."""
        return self._pool_state.prefetch

    @prefetch_factor.setter
    def prefetch_factor(self, value: int | None) -> None:
        self._pool_state.prefetch = value

    @property
    def worker_history(self) -> tuple[PoolEvent, ...]:
        """Every change of the pool's size so far (``num_workers="auto"``), oldest first."""
        return tuple(e for e in self._pool_state.history if e.setting == WORKERS)

    @property
    def prefetch_history(self) -> tuple[PoolEvent, ...]:
        """Every change of ``prefetch_factor="auto"`` so far, oldest first."""
        return tuple(e for e in self._pool_state.history if e.setting == PREFETCH)

    def _min_available_bytes(self) -> int | None:
        value = self.min_available_memory
        if value is None:
            return None
        return int(value * psutil.virtual_memory().total) if value < 1 else int(value)

    def _next_epoch(self) -> int:
        epoch = self._epochs
        self._epochs += 1
        return epoch

    def _set_epoch(self, epoch: int) -> int:
        self._epochs = epoch + 1
        return epoch

    def _get_iterator(self) -> SingleProcessIter | MultiProcessIter:
        if self.num_workers == 0:
            it: SingleProcessIter | MultiProcessIter = SingleProcessIter(self)
        else:
            if not self.auto_workers:  # "auto" keeps itself within its own bound
                self.check_worker_number_rationality()
            it = MultiProcessIter(self)
        self._last_iter = weakref.ref(it)
        return it

    def state_dict(self) -> dict[str, Any]:
        """Where iteration stands, as plain data; see :meth:`load_state_dict`.

        Taken mid-epoch it describes the epoch in progress: the batches already handed out
        and the randomness the epoch started from. Taken between epochs (or before the
        first) it describes the start of the next one. The dict holds ints, strings, lists
        and dicts (plus whatever an IterableDataset's own ``state_dict()`` returns), so it
        goes through ``torch.save`` and ``json.dumps``.

        Example:
            >>> import torch
            >>> from loadtune import DataLoader
            >>> loader = DataLoader(torch.arange(6), batch_size=2)
            >>> it = iter(loader); _ = next(it)
            >>> resumed = DataLoader(torch.arange(6), batch_size=2)
            >>> resumed.load_state_dict(loader.state_dict())
            >>> [b.tolist() for b in resumed]
            [[2, 3], [4, 5]]
        """
        it = self._last_iter() if self._last_iter is not None else None
        if it is not None and not it._finished:
            return it.state_dict()
        persistent = it if self.persistent_workers and self.num_workers > 0 else None
        state = {
            "format": _resume.FORMAT,
            "epoch": self._epochs,
            "done_prefix": 0,
            "done_extra": [],
            "base_seed": persistent._base_seed if persistent is not None else None,
            **_resume.capture_rngs(self),
            "dataset": {},
        }
        if self.auto_workers or self.auto_prefetch:
            state["pool"] = {
                "num_workers": self.num_workers,
                "prefetch_factor": self.prefetch_factor,
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`, in this process or a new one.

        The next ``iter(loader)`` yields exactly the batches the original had not handed
        out yet in that epoch, then the following epochs as the uninterrupted run would
        have had them (NOTE [ Resume ] in _resume.py says how, and where this differs from
        torchdata's StatefulDataLoader).

        With ``num_workers="auto"`` (or ``prefetch_factor="auto"``) the pool starts from
        the size (and depth) the saved run had reached, within this loader's
        ``max_workers``; a fixed setting ignores them.

        Raises:
            ValueError: The state is not one this loader wrote.
        """
        self._pending_state = _resume.check(state)
        pool = state.get("pool")
        if pool is not None:
            if self.auto_workers:
                self.num_workers = max(1, min(self.max_workers, pool["num_workers"]))
            if self.auto_prefetch and self.num_workers > 0:
                self.prefetch_factor = pool["prefetch_factor"]

    def __repr__(self) -> str:
        workers = f"{self.num_workers}"
        if self.auto_workers:
            workers = f"'auto' (now {self.num_workers}, max_workers={self.max_workers})"
        prefetch = f"{self.prefetch_factor}"
        if self.auto_prefetch:
            prefetch = f"'auto' (now {self.prefetch_factor})"
        return (
            f"loadtune.DataLoader(dataset={type(self.dataset).__name__}, "
            f"batch_size={self.batch_size}, num_workers={workers}, "
            f"prefetch_factor={prefetch}, pin_memory={self.pin_memory}, "
            f"persistent_workers={self.persistent_workers}, dispatch={self.dispatch!r})"
        )
