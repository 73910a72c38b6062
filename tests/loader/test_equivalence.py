"""loadtune.DataLoader gives the same batches, errors, warnings and attributes as torch's.

Every test builds both loaders with the same arguments (fresh, identically seeded
generators and samplers for each), seeds torch, ``random`` and numpy identically before
each one, and compares the actual batches leaf by leaf, types included.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import random
import typing
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.utils.data as tud
from torch.utils.data import (
    BatchSampler,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

from loadtune import DataLoader

from . import datasets as ds

LOADERS = (tud.DataLoader, DataLoader)
PIN_WARNING = (
    "'pin_memory' argument is set as true but no accelerator is found, "
    "then device pinned memory won't be used."
)
TOO_MANY_WORKERS = "ignore:This DataLoader will create"


# ----------------------------------------------------------------------------- helpers


class Fresh:
    """A keyword argument made anew for each loader (generators, stateful samplers)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def gen(seed: int = 7) -> Fresh:
    return Fresh(lambda: torch.Generator().manual_seed(seed))


def build(cls: type, dataset: Any, **kwargs: Any) -> Any:
    kw = {k: (v.make() if isinstance(v, Fresh) else v) for k, v in kwargs.items()}
    return cls(dataset, **kw)


def seed_all(seed: int = 1234) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def collect(loader: Any, epochs: int = 1, stop_after: dict[int, int] | None = None) -> list:
    """The batches of each epoch; epoch e stops after ``stop_after[e]`` batches if given."""
    out = []
    for epoch in range(epochs):
        batches = []
        for batch in loader:
            batches.append(batch)
            if stop_after is not None and len(batches) == stop_after.get(epoch):
                break
        out.append(batches)
    return out


def run_both(
    dataset: Any, *, epochs: int = 1, stop_after: dict[int, int] | None = None, **kwargs: Any
) -> tuple[list, list]:
    """(torch's epochs, loadtune's epochs), each loader built after the same global seeding."""
    results = []
    for cls in LOADERS:
        seed_all()
        loader = build(cls, dataset, **kwargs)
        results.append(collect(loader, epochs, stop_after))
        del loader  # stops persistent workers before the next loader starts
    return results[0], results[1]


def assert_same(actual: Any, expected: Any, path: str = "batch") -> None:
    """Equal values and equal types, all the way down (dict key order included)."""
    assert type(actual) is type(expected), f"{path}: {type(actual)} != {type(expected)}"
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype, f"{path}: {actual.dtype} != {expected.dtype}"
        assert actual.shape == expected.shape, f"{path}: {actual.shape} != {expected.shape}"
        assert actual.layout == expected.layout, f"{path}: {actual.layout} != {expected.layout}"
        assert actual.requires_grad == expected.requires_grad, f"{path}: requires_grad"
        if expected.layout != torch.strided:
            actual, expected = actual.to_dense(), expected.to_dense()
        assert torch.equal(actual, expected), f"{path}: {actual} != {expected}"
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and np.array_equal(actual, expected), path
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: len {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def forget(exc: BaseException) -> BaseException:
    """Drop the tracebacks (they keep the failed iterator alive) and collect that iterator now.

    Otherwise a torch iterator left in a reference cycle can be garbage collected inside
    the next loader's forked workers, where its __del__ tries to shut down workers that
    are not that process's children.
    """
    chained: BaseException | None = exc
    while chained is not None:
        chained.__traceback__ = None
        chained = chained.__context__
    gc.collect()
    return exc


def raised(make: Callable[[], Any]) -> BaseException:
    """The exception that building (and starting) a loader raises."""
    with pytest.raises(Exception) as info:
        loader = make()
        next(iter(loader))
    exc = info.value
    del info
    return forget(exc)


def pairs(batches: list) -> list[tuple[int, int]]:
    """(sample, worker) pairs of batches of collated (index, worker) samples."""
    return [(int(i), int(w)) for batch in batches for i, w in zip(*batch, strict=True)]


# ----------------------------------------------------------------------------- map-style

MAP_CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "sequential": {"batch_size": 4},
    "sequential_drop_last": {"batch_size": 4, "drop_last": True},
    "shuffle_generator": {"batch_size": 4, "shuffle": True, "generator": gen(7)},
    "shuffle_generator_drop_last": {
        "batch_size": 5,
        "shuffle": True,
        "generator": gen(11),
        "drop_last": True,
    },
    "shuffle_global_seed": {"batch_size": 4, "shuffle": True},
    "custom_sampler": {"batch_size": 3, "sampler": ds.EvensThenOdds(22)},
    "subset_random_sampler": {
        "batch_size": 4,
        "sampler": Fresh(
            lambda: SubsetRandomSampler(range(3, 20), generator=torch.Generator().manual_seed(5))
        ),
    },
    "weighted_sampler": {
        "batch_size": 5,
        "sampler": Fresh(
            lambda: WeightedRandomSampler(
                [float(i % 4 + 1) for i in range(22)],
                30,
                generator=torch.Generator().manual_seed(5),
            )
        ),
    },
    "random_sampler_replacement": {
        "batch_size": 3,
        "sampler": Fresh(
            lambda: RandomSampler(
                range(22), replacement=True, num_samples=13, generator=torch.Generator()
            )
        ),
    },
    "custom_batch_sampler": {"batch_sampler": ds.GrowingBatches(22)},
    "builtin_batch_sampler": {
        "batch_sampler": Fresh(
            lambda: BatchSampler(
                RandomSampler(range(22), generator=torch.Generator().manual_seed(2)), 5, True
            )
        )
    },
    "no_auto_collation": {"batch_size": None},
    "no_auto_collation_shuffle": {"batch_size": None, "shuffle": True, "generator": gen(3)},
    "no_auto_collation_sampler": {"batch_size": None, "sampler": ds.EvensThenOdds(22)},
}


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("case", list(MAP_CASES))
def test_map_style_batches_match_torch(case: str, num_workers: int) -> None:
    """Same batches (random augmentation included) and len over two epochs."""
    kwargs = {**MAP_CASES[case], "num_workers": num_workers}
    dataset = ds.ProbeDataset(22)
    assert len(build(DataLoader, dataset, **kwargs)) == len(
        build(tud.DataLoader, dataset, **kwargs)
    )
    expected, actual = run_both(dataset, epochs=2, **kwargs)
    assert_same(actual, expected)
    assert sum(len(e) for e in expected) > 2


@pytest.mark.parametrize("num_workers", [0, 2])
def test_getitems_dataset_matches_torch(num_workers: int) -> None:
    """A dataset with ``__getitems__`` is fetched through it, as torch does."""
    expected, actual = run_both(ds.GetItemsDataset(10), batch_size=3, num_workers=num_workers)
    assert_same(actual, expected)
    assert expected[0][0]["batched"].all()


@pytest.mark.parametrize("batch_size", [4, None])
def test_views_of_one_storage_match_torch(batch_size: int | None) -> None:
    """Samples that view rows/columns of one big tensor, and a tensor repeated in a sample."""
    expected, actual = run_both(ds.RowViewDataset(10), batch_size=batch_size, num_workers=2)
    assert_same(actual, expected)


@pytest.mark.filterwarnings(TOO_MANY_WORKERS)
@pytest.mark.parametrize(("num_workers", "prefetch_factor"), [(1, 1), (2, 1), (2, 4), (3, 2)])
def test_worker_count_and_prefetch_match_torch(num_workers: int, prefetch_factor: int) -> None:
    """Round-robin over 1-3 workers with different prefetch windows gives torch's batches."""
    expected, actual = run_both(
        ds.ProbeDataset(20),
        batch_size=2,
        shuffle=True,
        generator=gen(5),
        num_workers=num_workers,
        prefetch_factor=prefetch_factor,
    )
    assert_same(actual, expected)


def test_timeout_with_workers_matches_torch() -> None:
    """A (generous) timeout does not change the batches."""
    expected, actual = run_both(ds.ProbeDataset(10), batch_size=4, num_workers=2, timeout=30.0)
    assert_same(actual, expected)


# ----------------------------------------------------------------------------- iterable


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n", [24, 22])
def test_sharded_iterable_matches_torch(n: int, drop_last: bool, num_workers: int) -> None:
    """An IterableDataset sharded by get_worker_info(), equal shard lengths."""
    expected, actual = run_both(
        ds.ShardedIterable(n), batch_size=4, drop_last=drop_last, num_workers=num_workers
    )
    assert_same(actual, expected)


def test_sharded_iterable_without_batching_matches_torch() -> None:
    """batch_size=None with an iterable: one sample per batch, torch's order."""
    expected, actual = run_both(ds.ShardedIterable(9), batch_size=None, num_workers=2)
    assert_same(actual, expected)
    assert len(expected[0]) == 9


@pytest.mark.filterwarnings(TOO_MANY_WORKERS)
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("lengths", [(3, 13), (0, 7), (5, 0, 9)])
def test_uneven_shards_match_torch(lengths: tuple[int, ...], drop_last: bool) -> None:
    """Shards of different lengths (some empty): same samples, same order within each worker."""
    expected, actual = run_both(
        ds.UnevenShards(lengths), batch_size=2, drop_last=drop_last, num_workers=len(lengths)
    )
    expected_pairs, actual_pairs = pairs(expected[0]), pairs(actual[0])
    assert Counter(actual_pairs) == Counter(expected_pairs)
    for worker in range(len(lengths)):
        mine = [p for p in actual_pairs if p[1] == worker]
        assert mine == [p for p in expected_pairs if p[1] == worker]
    key = [tuple(b[0].tolist()) for b in expected[0]]
    assert sorted(tuple(b[0].tolist()) for b in actual[0]) == sorted(key)
    full = sum(n // 2 * 2 if drop_last else n for n in lengths)
    assert len(expected_pairs) == full


def test_unsharded_iterable_duplicates_like_torch() -> None:
    """An IterableDataset that ignores get_worker_info() yields its stream once per worker."""
    expected, actual = run_both(ds.UnshardedIterable(6), batch_size=4, num_workers=2)
    assert_same(actual, expected)
    counts = Counter(int(i) for batch in actual[0] for i in batch["i"])
    assert counts == dict.fromkeys(range(6), 2)


# ----------------------------------------------------------------------------- workers, seeds


@pytest.mark.filterwarnings(TOO_MANY_WORKERS)
@pytest.mark.parametrize("num_workers", [2, 3])
def test_worker_info_and_seeds_match_torch(num_workers: int) -> None:
    """get_worker_info() and the torch/random/numpy streams in each worker are torch's."""
    expected, actual = run_both(
        ds.ProbeDataset(24), batch_size=3, shuffle=True, generator=gen(9), num_workers=num_workers
    )
    assert_same(actual, expected)
    batches = actual[0]
    assert all(b["same_dataset"].all() for b in batches)
    assert all([str(s) for s in b["seed"].tolist()] == b["initial_seed"] for b in batches)
    assert all(torch.equal(b["num_workers"], torch.full((3,), num_workers)) for b in batches)
    assert [int(b["worker"][0]) for b in batches] == [k % num_workers for k in range(8)]
    assert tud.get_worker_info() is None


def test_seeds_follow_generator() -> None:
    """A different generator seed gives different augmentations (the test above can fail)."""
    first = collect(build(DataLoader, ds.ProbeDataset(6), num_workers=2, generator=gen(1)))
    second = collect(build(DataLoader, ds.ProbeDataset(6), num_workers=2, generator=gen(2)))
    assert not torch.equal(first[0][0]["torch"], second[0][0]["torch"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_worker_init_fn_called_with_worker_id(num_workers: int) -> None:
    """worker_init_fn runs once in each worker, with its id, before any sample."""
    expected, actual = run_both(
        ds.InitProbeDataset(8),
        batch_size=2,
        num_workers=num_workers,
        worker_init_fn=ds.record_worker_init,
    )
    assert_same(actual, expected)
    for index, worker, init_id, calls in actual[0]:
        assert torch.equal(init_id, worker)
        assert calls.tolist() == ([1, 1] if num_workers else [0, 0])
        del index
    assert ds.INIT_CALLS == []


def test_worker_init_fn_error_like_torch() -> None:
    """An exception in worker_init_fn reaches the caller with torch's type and preamble."""
    errors = [
        raised(
            lambda c=cls: build(
                c, ds.IndexDataset(6), num_workers=2, worker_init_fn=ds.failing_worker_init
            )
        )
        for cls in LOADERS
    ]
    assert type(errors[1]) is type(errors[0]) is ValueError
    assert "Caught ValueError in DataLoader worker process 0" in str(errors[1])
    assert "init failed" in str(errors[1])


@pytest.mark.parametrize(
    "context",
    [
        "fork",
        pytest.param("spawn", marks=pytest.mark.slow),
        pytest.param("forkserver", marks=pytest.mark.slow),
        "fork_object",
    ],
)
def test_multiprocessing_context_matches_torch(context: str) -> None:
    """Each start method (by name or as a context object) gives torch's batches."""
    ctx: Any = mp.get_context("fork") if context == "fork_object" else context
    expected, actual = run_both(
        ds.ProbeDataset(8),
        batch_size=2,
        shuffle=True,
        generator=gen(4),
        num_workers=2,
        multiprocessing_context=ctx,
    )
    assert_same(actual, expected)
    assert all(b["same_dataset"].all() for b in actual[0])


# ----------------------------------------------------------------------------- epochs


@pytest.mark.parametrize("kind", ["map", "iterable"])
def test_persistent_workers_three_epochs_match_torch(kind: str) -> None:
    """Persistent workers: per-epoch batches and RNG streams continuing across epochs."""
    if kind == "map":
        dataset: Any = ds.ProbeDataset(16)
        kwargs: dict[str, Any] = {"batch_size": 3, "shuffle": True, "generator": gen(6)}
    else:
        dataset, kwargs = ds.UnshardedIterable(5), {"batch_size": 2}
    expected, actual = run_both(dataset, epochs=3, num_workers=2, persistent_workers=True, **kwargs)
    assert_same(actual, expected)
    firsts = [epoch[0]["torch"] for epoch in actual]
    assert not torch.equal(firsts[0], firsts[1]) and not torch.equal(firsts[1], firsts[2])


@pytest.mark.parametrize(
    ("num_workers", "persistent"), [(0, False), (2, False), (2, True)], ids=str
)
def test_break_mid_epoch_then_new_epochs_match_torch(num_workers: int, persistent: bool) -> None:
    """``break`` after two batches, then two full epochs: torch's batches throughout."""
    expected, actual = run_both(
        ds.ProbeDataset(20),
        epochs=3,
        stop_after={0: 2},
        batch_size=2,
        shuffle=True,
        generator=gen(8),
        num_workers=num_workers,
        persistent_workers=persistent,
    )
    assert [len(e) for e in expected] == [2, 10, 10]
    assert_same(actual, expected)


@pytest.mark.parametrize("lengths", [(10, 10), (3, 13)])
def test_iterable_break_with_persistent_workers_matches_torch(lengths: tuple[int, int]) -> None:
    """Iterable shards with persistent workers: break mid-epoch, streams restart each epoch."""
    expected, actual = run_both(
        ds.UnevenShards(lengths),
        epochs=3,
        stop_after={0: 3, 1: 1},
        batch_size=2,
        num_workers=2,
        persistent_workers=True,
    )
    assert [len(e) for e in expected] == [3, 1, 10 if lengths == (10, 10) else 9]
    assert_same(actual, expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_workers": 0, "shuffle": True},
        {"num_workers": 2, "shuffle": True},
        {"num_workers": 2, "shuffle": True, "generator": gen(5)},
    ],
    ids=["inline", "workers", "workers_generator"],
)
def test_rng_state_after_partial_epoch_matches_torch(kwargs: dict[str, Any]) -> None:
    """After one batch, the global torch/random/numpy RNGs and the generator match torch's."""
    states = []
    for cls in LOADERS:
        seed_all()
        loader = build(cls, ds.ProbeDataset(10), batch_size=2, **kwargs)
        it = iter(loader)
        next(it)
        del it
        generator = loader.generator
        states.append(
            (
                torch.get_rng_state(),
                random.getstate(),
                np.random.get_state()[1],
                generator.get_state() if generator is not None else None,
            )
        )
    (t0, r0, n0, g0), (t1, r1, n1, g1) = states
    assert torch.equal(t1, t0) and r1 == r0 and np.array_equal(n1, n0)
    assert (g0 is None and g1 is None) or torch.equal(g1, g0)


def test_two_live_iterators_of_one_loader_match_torch() -> None:
    """Two iterators of one (non-persistent) loader interleaved, as torch allows."""
    results = []
    for cls in LOADERS:
        loader = cls(ds.IndexDataset(10), batch_size=2, num_workers=2)
        first, second = iter(loader), iter(loader)
        out = [next(first), next(second), next(first), *second, *first]
        results.append(out)
        del first, second
    assert_same(results[1], results[0])


@pytest.mark.parametrize("kind", ["map", "iterable"])
def test_in_order_false_same_multiset(kind: str) -> None:
    """in_order=False: the same batches as torch's, in any order (a slow sample reorders)."""
    if kind == "map":
        dataset: Any = ds.IndexDataset(20, slow={0: 0.2})
    else:
        dataset = ds.ShardedIterable(20)
    expected, actual = run_both(dataset, batch_size=2, num_workers=2, in_order=False)

    def key(batch: Any) -> tuple:
        return tuple((batch[0] if kind == "iterable" else batch).tolist())

    assert Counter(map(key, actual[0])) == Counter(map(key, expected[0]))
    assert len(actual[0]) == 10


# ----------------------------------------------------------------------------- collate


@pytest.mark.parametrize(("num_workers", "batch_size"), [(0, 3), (2, 3), (2, None)], ids=str)
@pytest.mark.parametrize("kind", ds.COLLATE_KINDS)
def test_default_collate_matches_torch(kind: str, num_workers: int, batch_size: int | None) -> None:
    """default_collate / default_convert outputs: values and types (namedtuples, key order)."""
    expected, actual = run_both(
        ds.CollateDataset(kind, 7), batch_size=batch_size, num_workers=num_workers
    )
    assert_same(actual, expected)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_custom_collate_fn_matches_torch(num_workers: int) -> None:
    """A module-level collate_fn returning its own NamedTuple, lists, tuples and a view."""
    expected, actual = run_both(
        ds.CollateDataset("tuple", 9),
        batch_size=3,
        num_workers=num_workers,
        collate_fn=ds.custom_collate,
    )
    assert_same(actual, expected)
    assert type(actual[0][0]) is ds.CollateResult


@pytest.mark.parametrize("num_workers", [0, 2])
def test_default_collate_error_matches_torch(num_workers: int) -> None:
    """default_collate's TypeError for unsupported samples reaches the caller as torch's."""
    errors = [
        raised(lambda cls=cls: build(cls, ds.NoneDataset(), num_workers=num_workers, batch_size=2))
        for cls in LOADERS
    ]
    assert type(errors[1]) is type(errors[0]) is TypeError
    assert "default_collate: batch must contain" in str(errors[1])


# ----------------------------------------------------------------------------- memory


def test_many_live_batches_match_torch() -> None:
    """More live batches per worker than shared-memory blocks: all stay intact."""
    expected, actual = run_both(ds.CollateDataset("tensor", 150), batch_size=1, num_workers=2)
    assert_same(actual, expected)


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize(("batch_size", "persistent"), [(3, False), (3, True), (None, False)])
def test_transport_of_odd_tensors_matches_torch(batch_size: int | None, persistent: bool) -> None:
    """Batches that outgrow their block, expanded/strided views, sparse, Parameter, conj."""
    expected, actual = run_both(
        ds.TransportDataset(15, exotic=batch_size is None),
        epochs=2 if persistent else 1,
        batch_size=batch_size,
        num_workers=2,
        persistent_workers=persistent,
    )
    assert_same(actual, expected)


def test_batches_compared_while_streaming() -> None:
    """Batches dropped as soon as compared (blocks get reused) still match torch's."""
    loaders = [
        build(cls, ds.CollateDataset("nested", 40), batch_size=2, num_workers=2) for cls in LOADERS
    ]
    count = 0
    for expected, actual in zip(*loaders, strict=True):
        assert_same(actual, expected)
        count += 1
    assert count == 20


def test_views_outlive_their_batches() -> None:
    """Keeping only a view of each batch keeps its memory valid while later batches arrive."""
    views = []
    for cls in LOADERS:
        kept = [
            b[:, 0, 1:]
            for b in build(cls, ds.CollateDataset("tensor", 40), batch_size=2, num_workers=2)
        ]
        views.append(kept)
    assert_same(views[1], views[0])


# ----------------------------------------------------------------------------- warnings


def run_recording(cls: type, dataset: Any, **kwargs: Any) -> tuple[list, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seed_all()
        loader = build(cls, dataset, **kwargs)
        if isinstance(dataset, ds.SizedUnsharded):
            len(loader)
        batches = collect(loader)
    return batches, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


WARNING_CASES: dict[str, tuple[Any, dict[str, Any], str]] = {
    "pin_memory_inline": (ds.ProbeDataset(6), {"pin_memory": True, "batch_size": 2}, PIN_WARNING),
    "pin_memory_workers": (
        ds.ProbeDataset(6),
        {"pin_memory": True, "batch_size": 2, "num_workers": 2},
        PIN_WARNING,
    ),
    "pin_memory_device": (
        ds.ProbeDataset(6),
        {"pin_memory": True, "pin_memory_device": "cuda", "num_workers": 2},
        "pin_memory_device is deprecated",
    ),
    "too_many_workers": (ds.ProbeDataset(6), {"num_workers": 3}, "This DataLoader will create 3"),
    "iterable_len_exceeded": (
        ds.SizedUnsharded(4),
        {"batch_size": 1, "num_workers": 2},
        "Length of IterableDataset",
    ),
}


@pytest.mark.parametrize("case", list(WARNING_CASES))
def test_warnings_match_torch(case: str) -> None:
    """The same UserWarnings with the same text (pin_memory on CPU, ...) and the same batches."""
    dataset, kwargs, needle = WARNING_CASES[case]
    expected, expected_warnings = run_recording(tud.DataLoader, dataset, **kwargs)
    actual, actual_warnings = run_recording(DataLoader, dataset, **kwargs)
    assert any(needle in w for w in expected_warnings), expected_warnings
    assert actual_warnings == expected_warnings
    assert_same(actual, expected)
    for batch in actual[0]:
        assert not batch["torch"].is_pinned()


# ----------------------------------------------------------------------------- validation

_SEQ = ds.EvensThenOdds(10)
_BATCHES = BatchSampler(SequentialSampler(range(10)), 2, False)

INVALID: dict[str, tuple[str, dict[str, Any]]] = {
    "negative_num_workers": ("map", {"num_workers": -1}),
    "negative_timeout": ("map", {"timeout": -1}),
    "prefetch_without_workers": ("map", {"prefetch_factor": 2}),
    "negative_prefetch": ("map", {"num_workers": 2, "prefetch_factor": -1}),
    "persistent_without_workers": ("map", {"persistent_workers": True}),
    "sampler_and_shuffle": ("map", {"sampler": _SEQ, "shuffle": True}),
    "batch_sampler_and_batch_size": ("map", {"batch_sampler": _BATCHES, "batch_size": 2}),
    "batch_sampler_and_shuffle": ("map", {"batch_sampler": _BATCHES, "shuffle": True}),
    "batch_sampler_and_sampler": ("map", {"batch_sampler": _BATCHES, "sampler": _SEQ}),
    "batch_sampler_and_drop_last": ("map", {"batch_sampler": _BATCHES, "drop_last": True}),
    "no_batch_size_and_drop_last": ("map", {"batch_size": None, "drop_last": True}),
    "iterable_shuffle": ("iterable", {"shuffle": True}),
    "iterable_sampler": ("iterable", {"sampler": _SEQ}),
    "iterable_batch_sampler": ("iterable", {"batch_sampler": _BATCHES}),
    "bad_context_string": ("map", {"num_workers": 2, "multiprocessing_context": "bogus"}),
    "bad_context_object": ("map", {"num_workers": 2, "multiprocessing_context": object()}),
    "context_without_workers": ("map", {"multiprocessing_context": "fork"}),
    "timeout_without_workers": ("map", {"timeout": 5.0}),  # torch: AssertionError on iter()
}
_DATASETS = {"map": ds.IndexDataset(10), "iterable": ds.ShardedIterable(10)}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_arguments_raise_like_torch(case: str) -> None:
    """Each combination torch rejects: same exception type, same message."""
    kind, kwargs = INVALID[case]
    expected, actual = (raised(lambda c=c: build(c, _DATASETS[kind], **kwargs)) for c in LOADERS)
    assert type(actual) is type(expected)
    assert str(actual) == str(expected)


@pytest.mark.parametrize(
    ("attr", "value"),
    [
        ("batch_size", 8),
        ("batch_sampler", None),
        ("sampler", None),
        ("drop_last", True),
        ("dataset", None),
        ("persistent_workers", True),
    ],
)
def test_setting_frozen_attribute_raises_like_torch(attr: str, value: Any) -> None:
    """Setting batch_size (etc.) after init: torch's ValueError and message."""
    errors = []
    for cls in LOADERS:
        loader = cls(ds.IndexDataset(4), batch_size=2)
        with pytest.raises(ValueError) as info:
            setattr(loader, attr, value)
        errors.append(str(info.value))
    assert errors[1] == errors[0]


def test_unknown_dispatch_rejected() -> None:
    """loadtune's own argument: an unknown dispatch is a ValueError naming it."""
    with pytest.raises(ValueError, match="dispatch='nearest'"):
        DataLoader(ds.IndexDataset(4), dispatch="nearest")


# ----------------------------------------------------------------------------- attributes


def takes_tensor_loader(loader: DataLoader[torch.Tensor]) -> int:
    return len(loader)


def test_subscript_and_annotation() -> None:
    """``DataLoader[torch.Tensor]`` works as an annotation and as a callable alias."""
    alias = DataLoader[torch.Tensor]
    assert typing.get_origin(alias) is DataLoader
    assert typing.get_args(alias) == (torch.Tensor,)
    hints = typing.get_type_hints(takes_tensor_loader)
    assert hints["loader"] == alias
    loader = alias(ds.IndexDataset(4), batch_size=2)
    assert isinstance(loader, DataLoader) and isinstance(loader, tud.DataLoader)
    assert takes_tensor_loader(loader) == 2


def assert_same_sampler(actual: Any, expected: Any) -> None:
    assert type(actual) is type(expected)
    assert list(vars(actual)) == list(vars(expected))
    for name, value in vars(expected).items():
        mine = vars(actual)[name]
        if isinstance(value, (tud.Sampler, BatchSampler)):
            assert_same_sampler(mine, value)
        else:
            assert mine is value or mine == value, name


ATTR_CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "batch_none": {"batch_size": None},
    "shuffle_workers": {
        "batch_size": 4,
        "shuffle": True,
        "num_workers": 2,
        "prefetch_factor": 3,
        "persistent_workers": True,
        "timeout": 5.0,
        "drop_last": True,
        "in_order": False,
        "worker_init_fn": ds.record_worker_init,
        "multiprocessing_context": "fork",
    },
    "batch_sampler": {"batch_sampler": ds.GrowingBatches(10), "collate_fn": ds.custom_collate},
    "iterable": {"batch_size": 3, "num_workers": 1},
}
PUBLIC = [
    "dataset",
    "batch_size",
    "num_workers",
    "collate_fn",
    "drop_last",
    "pin_memory",
    "pin_memory_device",
    "timeout",
    "worker_init_fn",
    "prefetch_factor",
    "persistent_workers",
    "generator",
    "in_order",
]


@pytest.mark.parametrize("case", list(ATTR_CASES))
def test_public_attributes_match_torch(case: str) -> None:
    """Public attributes (and len) equal torch's; collate_fn defaults to torch's functions."""
    dataset: Any = ds.SizedUnsharded(10) if case == "iterable" else ds.IndexDataset(10)
    kwargs = {**ATTR_CASES[case], "generator": torch.Generator().manual_seed(1)}
    expected, actual = (cls(dataset, **kwargs) for cls in LOADERS)
    for name in PUBLIC:
        assert getattr(actual, name) is getattr(expected, name) or getattr(actual, name) == getattr(
            expected, name
        ), name
    assert_same_sampler(actual.sampler, expected.sampler)
    if expected.batch_sampler is None:
        assert actual.batch_sampler is None
    else:
        assert_same_sampler(actual.batch_sampler, expected.batch_sampler)
    assert type(actual.multiprocessing_context) is type(expected.multiprocessing_context)
    if "collate_fn" not in kwargs:
        default = (
            tud.default_collate
            if "batch_size" not in kwargs or kwargs["batch_size"]
            else (tud.default_convert)
        )
        assert actual.collate_fn is default
    assert len(actual) == len(expected)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("batch_size", [4, None])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataset_value_error_like_torch(num_workers: int, batch_size: int | None) -> None:
    """A ValueError at index 13: both raise ValueError after the same batches."""
    results = []
    for cls in LOADERS:
        batches = []
        loader = build(
            cls, ds.FailingDataset(20, 13), batch_size=batch_size, num_workers=num_workers
        )
        with pytest.raises(ValueError) as info:
            for batch in loader:
                batches.append(batch)
        results.append((batches, forget(info.value)))
        del info, loader
    (expected, expected_exc), (actual, actual_exc) = results
    assert_same(actual, expected)
    assert type(actual_exc) is type(expected_exc) is ValueError
    message = str(actual_exc)
    assert "broken sample" in message
    if num_workers:
        assert "Caught ValueError in DataLoader worker process" in message
        assert "index 13" in message


@pytest.mark.parametrize("exc_type", ["KeyError", "TwoArgError"])
def test_other_dataset_errors_like_torch(exc_type: str) -> None:
    """KeyError keeps a readable message; an exception that cannot be rebuilt is a RuntimeError."""
    errors = [
        raised(lambda c=cls: build(c, ds.FailingDataset(6, 0, exc_type), num_workers=2))
        for cls in LOADERS
    ]
    expected, actual = errors
    assert isinstance(actual, type(expected))
    assert f"Caught {exc_type} in DataLoader worker process 0" in str(actual)
    assert ("\nOriginal Traceback" in str(actual)) == ("\nOriginal Traceback" in str(expected))


# ----------------------------------------------------------------------------- balanced


def indices(batches: list) -> list[int]:
    return [int(i) for batch in batches for i in batch]


@pytest.mark.parametrize("shuffle", [False, True])
def test_balanced_dispatch_every_index_once_in_order(shuffle: bool) -> None:
    """dispatch="balanced", in_order=True: torch's batch order, each index exactly once."""
    kwargs: dict[str, Any] = {"batch_size": 3, "num_workers": 2}
    if shuffle:
        kwargs.update(shuffle=True, generator=gen(12))
    dataset = ds.IndexDataset(30, slow={0: 0.15, 4: 0.05})
    seed_all()
    expected = collect(build(tud.DataLoader, dataset, **kwargs))
    seed_all()
    actual = collect(build(DataLoader, dataset, dispatch="balanced", **kwargs))
    assert_same(actual, expected)
    assert sorted(indices(actual[0])) == list(range(30))


@pytest.mark.filterwarnings(TOO_MANY_WORKERS)
@pytest.mark.parametrize("kind", ["map", "sharded", "uneven", "uneven_drop_last"])
def test_balanced_dispatch_out_of_order_covers_everything(kind: str) -> None:
    """dispatch="balanced" (in_order=False for map-style): torch's samples, each exactly once."""
    if kind == "map":
        dataset: Any = ds.IndexDataset(30, slow={0: 0.15})
        (batches,) = collect(
            DataLoader(dataset, batch_size=3, num_workers=2, in_order=False, dispatch="balanced")
        )
        assert sorted(indices(batches)) == list(range(30))
        return
    dataset = ds.ShardedIterable(30) if kind == "sharded" else ds.UnevenShards((5, 0, 9))
    kwargs: dict[str, Any] = {
        "batch_size": 2,
        "num_workers": 2 if kind == "sharded" else 3,
        "drop_last": kind == "uneven_drop_last",
    }
    expected, _ = run_both(dataset, **kwargs)
    (actual,) = collect(DataLoader(dataset, dispatch="balanced", **kwargs))
    assert Counter(pairs(actual)) == Counter(pairs(expected[0]))
    for worker in range(kwargs["num_workers"]):
        assert [p for p in pairs(actual) if p[1] == worker] == [
            p for p in pairs(expected[0]) if p[1] == worker
        ]


def test_balanced_dispatch_augmentation_reproducible() -> None:
    """Balanced: two runs with the same generator seed give the same augmentations."""
    runs = []
    for slow in ({1: 0.1}, {6: 0.1}):  # different timing, so different worker assignment
        seed_all()
        loader = DataLoader(
            ds.ProbeDataset(24, slow=slow),
            batch_size=2,
            shuffle=True,
            generator=torch.Generator().manual_seed(21),
            num_workers=2,
            persistent_workers=True,
            dispatch="balanced",
        )
        runs.append(
            [
                [{k: b[k] for k in ("index", "torch", "random", "numpy")} for b in epoch]
                for epoch in collect(loader, epochs=2)
            ]
        )
        del loader
    assert_same(runs[1], runs[0])
    assert not torch.equal(runs[0][0][0]["torch"], runs[0][1][0]["torch"])
