"""The resume state: what ``DataLoader.state_dict()`` holds and how an epoch is restored.

# NOTE [ Resume ]
An epoch's randomness is fixed at its start: the iterator draws ``base_seed`` from the
loader's generator (torch's global RNG when there is none), then the sampler draws its own
seed the first time it is asked for an index. The state therefore records, for the epoch
in progress, the generator state *after* the base-seed draw (the "sampler point"), the base
seed, the sampler's own ``state_dict()`` when it has one, and which batch numbers are done
(handed out, or dropped because every sample failed). Restoring sets the generator (or
torch's global RNG) back to the sampler point, reuses the base seed, and fast-forwards the
sampler past the done batches without fetching them; batch numbers keep their values, so
batch k still goes to worker ``k % num_workers``. Later epochs then draw exactly what the
uninterrupted run drew. At an epoch boundary the state holds the generator *before* the
next base-seed draw and ``base_seed`` None, so the next iterator draws it as usual.

IterableDatasets resume only when the dataset has ``state_dict()``/``load_state_dict()``:
each worker reports its copy's state with every batch, the state keeps the one that went
with the last batch handed out from each worker, and a resumed worker loads it before it
calls ``iter(dataset)``. Batches a worker had prefetched but not handed out are produced
again, so nothing is lost or repeated.

With ``num_workers="auto"`` or ``prefetch_factor="auto"`` the state also holds ``pool``:
the pool's size and depth when it was taken, so a resumed run starts where the saved one
had got to instead of ramping up again (NOTE [ Adaptive worker pool ] in _autopool.py).
Batch contents do not depend on the pool's size there (per-batch seeds).

Where we differ from torchdata's StatefulDataLoader: worker RNG streams are not captured,
so a random augmentation of a batch after the resume point differs from the uninterrupted
run (batch contents, i.e. indices, do not), unless ``dispatch="balanced"`` whose per-batch
seeds make it identical; and with ``generator=None`` resuming sets torch's global RNG back
to the sampler point, since that is where the sampler draws from.
"""

from __future__ import annotations

import base64
from typing import Any

import torch

__all__ = ["FORMAT", "capture_rngs", "check", "restore_rngs"]

FORMAT = "loadtune.DataLoader/1"


def _encode(state: torch.Tensor) -> str:
    return base64.b64encode(state.numpy().tobytes()).decode("ascii")


def _decode(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def _stateful_sampler(loader: Any) -> Any:
    """The sampler object whose own state matters (the batch sampler, or the one it wraps)."""
    for candidate in (loader.batch_sampler, getattr(loader.batch_sampler, "sampler", None)):
        if candidate is not None and hasattr(candidate, "state_dict"):
            return candidate
    sampler = loader.sampler
    return sampler if hasattr(sampler, "state_dict") else None


def capture_rngs(loader: Any) -> dict:
    """The generator (or global RNG) and sampler state now, as plain data."""
    gen = loader.generator
    sampler = _stateful_sampler(loader)
    return {
        "generator": _encode(gen.get_state()) if gen is not None else None,
        "global_rng": _encode(torch.get_rng_state()) if gen is None else None,
        "sampler": sampler.state_dict() if sampler is not None else None,
    }


def restore_rngs(loader: Any, state: dict) -> None:
    """Set the generator (or global RNG) and the sampler back to a captured point."""
    if state.get("generator") is not None and loader.generator is not None:
        loader.generator.set_state(_decode(state["generator"]))
    elif state.get("global_rng") is not None and loader.generator is None:
        torch.set_rng_state(_decode(state["global_rng"]))
    sampler = _stateful_sampler(loader)
    if sampler is not None and state.get("sampler") is not None:
        sampler.load_state_dict(state["sampler"])


def check(state: Any) -> dict:
    """Validate a state handed to ``load_state_dict``; return it.

    Raises:
        ValueError: naming what is wrong with it.
    """
    if not isinstance(state, dict):
        raise ValueError(f"a DataLoader state is a dict, got {type(state).__name__}")
    if state.get("format") != FORMAT:
        raise ValueError(
            f"unknown DataLoader state format {state.get('format')!r}; expected {FORMAT!r}"
        )
    for key in ("epoch", "done_prefix", "done_extra", "base_seed", "dataset"):
        if key not in state:
            raise ValueError(f"DataLoader state has no {key!r} field")
    pool = state.get("pool")
    if pool is not None and not (
        isinstance(pool, dict)
        and all(
            _count(pool.get(key), low) for key, low in (("num_workers", 1), ("prefetch_factor", 0))
        )
    ):
        raise ValueError(
            "DataLoader state's 'pool' field should be {'num_workers': an int >= 1, "
            f"'prefetch_factor': an int >= 0}}, got {pool!r}"
        )
    return state


def _count(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low
