"""GpuProbe: the precise unavailable reason without CUDA, and the measurement with it."""

from __future__ import annotations

import json
from collections import namedtuple

import pytest
import torch

from probes import gpu
from probes.base import Probe, ProbeResult, Watch
from probes.gpu import GpuProbe, batch_tensors

Pair = namedtuple("Pair", ["image", "label"])


def _batch() -> dict:
    """A loader-shaped batch: 64 x 3 x 64 x 64 float32 images, int64 labels, a string list."""
    return {
        "pair": Pair(torch.rand(64, 3, 64, 64), torch.arange(64)),
        "extra": [torch.zeros(64, 16, dtype=torch.float16), ("id",) * 64],
        "n": 64,
    }


def _run(options: dict) -> ProbeResult:
    probe = GpuProbe(repeats=3)
    probe.start(Watch(options=options))
    probe.sample(0.0)
    probe.sample(0.5)
    return probe.stop()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the path taken without CUDA")
def test_unavailable_without_cuda_says_why() -> None:
    probe = GpuProbe()
    assert isinstance(probe, Probe)
    result = _run({"sample_batch": _batch()})
    if torch.backends.cuda.is_built():
        expected = "no CUDA device is visible"
    else:
        expected = f"torch {torch.__version__} was built without CUDA"
    assert result == ProbeResult(name="gpu", available=False, reason=expected)
    assert ProbeResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the path taken without CUDA")
def test_cuda_build_without_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    # A CUDA build of torch on a machine whose driver shows no device.
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    result = _run({"sample_batch": _batch()})
    assert (result.available, result.reason) == (False, "no CUDA device is visible")
    assert result.summary == {} and result.detail == {}


def test_batch_tensors_walks_nested_containers() -> None:
    batch = _batch()
    tensors = batch_tensors(batch)
    assert [t.shape for t in tensors] == [(64, 3, 64, 64), (64,), (64, 16)]
    assert tensors[0] is batch["pair"].image  # the batch's own tensors, not copies
    assert sum(t.numel() * t.element_size() for t in tensors) == (
        64 * 3 * 64 * 64 * 4 + 64 * 8 + 64 * 16 * 2
    )
    sparse = torch.eye(3).to_sparse()
    assert batch_tensors([sparse, "x", 3, None]) == []


def test_reason_helper_matches_this_torch() -> None:
    reason = gpu.cuda_unavailable_reason()
    if torch.cuda.is_available():
        assert reason is None
    elif not torch.backends.cuda.is_built():
        assert reason == f"torch {torch.__version__} was built without CUDA"
    else:
        assert reason == "no CUDA device is visible"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_measures_a_real_batch_on_cuda() -> None:
    batch = _batch()
    result = _run({"sample_batch": batch})
    assert result.available, result.reason
    nbytes = sum(t.numel() * t.element_size() for t in batch_tensors(batch))
    assert result.summary["batch_bytes"] == nbytes
    for key in ("pageable_gbps", "pinned_gbps", "pinned_speedup"):
        assert result.summary[key] > 0, key
    for key in ("pageable_copy_s", "pinned_copy_s"):
        # The reported bandwidth is the bytes over the reported median time.
        assert result.summary[key.replace("copy_s", "gbps")] == pytest.approx(
            nbytes / result.summary[key] / 1e9
        )
    assert 0.0 <= result.summary["overlap_hidden_fraction"] <= 1.0
    assert result.detail["device"] == torch.cuda.get_device_name()
    assert len(result.detail["pinned_copy_s"]) == 3
    assert ProbeResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_without_a_sample_batch_is_unavailable() -> None:
    result = _run({})
    assert (result.available, result.reason) == (
        False,
        "no batch to measure: watch.options['sample_batch'] is not set",
    )
    result = _run({"sample_batch": ["no tensors", 3]})
    assert result.reason == "the sample batch holds no CPU tensor bytes to copy"
