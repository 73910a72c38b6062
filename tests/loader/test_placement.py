"""numa= pins workers to CPUs; device= copies batches to a GPU (or says it cannot)."""

from __future__ import annotations

import os
import warnings

import psutil
import pytest
import torch

from loadtune import DataLoader
from probes.numa import plan_affinity, read_topology

DATA = torch.utils.data.TensorDataset(torch.arange(24.0))


@pytest.mark.parametrize("mode", ["spread", "compact"])
def test_numa_pins_each_worker_to_its_planned_cpus(mode: str) -> None:
    plan = plan_affinity(read_topology(), 2, mode)
    it = iter(DataLoader(DATA, batch_size=4, num_workers=2, numa=mode))
    next(it)
    got = [set(psutil.Process(w.pid).cpu_affinity()) for w in it._workers]
    assert got == plan
    assert set(os.sched_getaffinity(0)) >= set().union(*plan)  # the main process is untouched
    del it


def test_bad_numa_and_device_values() -> None:
    with pytest.raises(ValueError, match="numa should be None, 'spread' or 'compact'"):
        DataLoader(DATA, numa="interleave")
    with pytest.raises(ValueError, match="device should be a CUDA device or None"):
        DataLoader(DATA, device="meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
@pytest.mark.parametrize("workers", [0, 2])
def test_device_without_cuda_warns_and_keeps_batches_on_the_cpu(workers: int) -> None:
    plain = [b[0] for b in DataLoader(DATA, batch_size=5, num_workers=workers)]
    loader = DataLoader(DATA, batch_size=5, num_workers=workers, device="cuda")
    with pytest.warns(RuntimeWarning) as record:
        moved = [b[0] for b in loader]
    texts = [str(w.message) for w in record]
    assert (
        "device='cuda' was asked for but CUDA is not available (torch "
        f"{torch.__version__} was built without CUDA); batches stay on the CPU"
    ) in texts
    assert all(not t.is_cuda for t in moved)
    assert all(torch.equal(a, b) for a, b in zip(plain, moved, strict=True))
    assert all(e.to_device is None for e in loader.events)


def test_cpu_device_is_a_no_op() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = [b[0] for b in DataLoader(DATA, batch_size=12, device="cpu")]
    assert torch.equal(torch.cat(batches), DATA.tensors[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("workers", [0, 2])
def test_device_copies_on_a_side_stream(workers: int) -> None:
    loader = DataLoader(DATA, batch_size=5, num_workers=workers, device="cuda")
    batches = [b[0] for b in loader]
    assert all(t.is_cuda for t in batches)
    assert torch.cat([t.cpu() for t in batches]).tolist() == DATA.tensors[0].tolist()
    events = list(loader.events)
    assert all(e.pin >= 0 for e in events)
    assert any(e.to_device is not None and e.to_device > 0 for e in events)
