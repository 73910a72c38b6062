"""The search space: which values each loader setting may take, parsed and enumerated.

A space maps setting names to :class:`Dim`: num_workers, prefetch_factor,
persistent_workers, pin_memory, batch_size and, on loadtune's DataLoader,
fetch_concurrency (NOTE [ Search and decision ] in ``decide.py`` says what each defaults
to). This module also maps a config to and from Optuna's params, so that the study and the
space agree on names and on what is conditional.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import LoaderConfig
from ..errors import ConfigError

SETTINGS = (
    "num_workers",
    "prefetch_factor",
    "persistent_workers",
    "pin_memory",
    "batch_size",
    "fetch_concurrency",
)
_WORKER_ONLY = ("prefetch_factor", "persistent_workers")
_INT_MIN = {"num_workers": 0, "prefetch_factor": 1, "batch_size": 1, "fetch_concurrency": 1}
_LOG = ("prefetch_factor", "fetch_concurrency")  # ranges searched on a log scale
MAX_FETCH_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class Dim:
    """The values one setting may take: an integer range or a tuple of choices.

    Example:
        >>> Dim(low=1, high=4).values()
        (1, 2, 3, 4)
    """

    low: int | None = None
    high: int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def values(self) -> tuple[Any, ...]:
        """Every value, in order."""
        if self.choices:
            return self.choices
        assert self.low is not None and self.high is not None
        return tuple(range(self.low, self.high + 1))

    @property
    def fixed(self) -> bool:
        """True when only one value is allowed."""
        return len(self.values()) == 1

    def to_dict(self) -> dict[str, Any]:
        """``{"low", "high", "log"}`` for a range, ``{"choices": [...]}`` otherwise."""
        if self.choices:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log}


def _scalar(name: str, text: Any) -> Any:
    if isinstance(text, str):
        word = text.strip().lower()
        if word in ("true", "false"):
            return word == "true"
        try:
            return int(word)
        except ValueError:
            raise ConfigError(
                f"space: {name}={text!r} is not a whole number or true/false"
            ) from None
    return text


def _check(name: str, value: Any) -> Any:
    if name in _INT_MIN:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"space: {name} takes whole numbers, got {value!r}")
        if value < _INT_MIN[name]:
            raise ConfigError(f"space: {name} must be >= {_INT_MIN[name]}, got {value}")
    elif not isinstance(value, bool):
        raise ConfigError(f"space: {name} takes true or false, got {value!r}")
    return value


def _range(name: str, low: Any, high: Any) -> Dim:
    if name not in _INT_MIN:
        raise ConfigError(f"space: {name} is true or false, not a range")
    low, high = _check(name, _scalar(name, low)), _check(name, _scalar(name, high))
    if low > high:
        raise ConfigError(f"space: {name} range {low}..{high} is empty")
    return Dim(low=low, high=high, log=name in _LOG)


def _dim(name: str, value: Any) -> Dim:
    if isinstance(value, str) and ".." in value:
        low, _, high = value.partition("..")
        return _range(name, low, high)
    if isinstance(value, str) and "|" in value:
        value = value.split("|")
    if isinstance(value, Mapping):
        if "choices" in value:
            value = list(value["choices"])
        elif "low" in value and "high" in value:
            return _range(name, value["low"], value["high"])
        else:
            raise ConfigError(f"space: {name} needs low and high, or choices, got {value!r}")
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ConfigError(f"space: {name} as a tuple is a range (low, high), got {value!r}")
        return _range(name, *value)
    if isinstance(value, (list, range)):
        choices = tuple(dict.fromkeys(_check(name, _scalar(name, v)) for v in value))
        if not choices:
            raise ConfigError(f"space: {name} has no values")
        return Dim(choices=tuple(sorted(choices)))
    return Dim(choices=(_check(name, _scalar(name, value)),))


def parse_space(spec: Mapping[str, Any] | str | None) -> dict[str, Dim]:
    """Parse the settings a search space fixes or narrows.

    Forms (the same in Python, JSON and on the command line):

    * a value fixes a setting: ``prefetch_factor=2``, ``persistent_workers=true``;
    * ``lo..hi`` (or a tuple ``(lo, hi)``, or ``{"low": lo, "high": hi}``) is an inclusive
      range of whole numbers: ``num_workers=0..8``;
    * ``a|b|c`` (or a list, or ``{"choices": [...]}``) lists the values allowed:
      ``batch_size=64|128``.

    Text is either JSON (``{"num_workers": "0..8", "batch_size": [64, 128]}``) or
    comma-separated ``name=value`` entries. Settings: num_workers, prefetch_factor,
    persistent_workers, pin_memory, batch_size, fetch_concurrency.

    Args:
        spec: The settings as a dict, JSON text or ``name=value`` text; None for none.

    Returns:
        One :class:`Dim` per setting named.

    Raises:
        ConfigError: an unknown setting, a malformed entry, an empty range, a value of the
            wrong kind; the message names the entry.

    Example:
        >>> parse_space("num_workers=0..8,batch_size=64|128")["batch_size"].values()
        (64, 128)
    """
    if spec is None:
        return {}
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"space is not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise ConfigError("space JSON must be an object of settings")
        else:
            data = {}
            for part in (p.strip() for p in text.split(",")):
                if not part:
                    continue
                name, eq, value = part.partition("=")
                if not eq or not value.strip():
                    raise ConfigError(
                        f"space entry {part!r} must look like name=value, name=lo..hi or name=a|b"
                    )
                data[name.strip()] = value.strip()
    elif isinstance(spec, Mapping):
        data = dict(spec)
    else:
        raise ConfigError(f"space must be a dict or text, got {type(spec).__name__}")
    out = {}
    for name, value in data.items():
        if name not in SETTINGS:
            raise ConfigError(f"space: unknown setting {name!r}; known: {', '.join(SETTINGS)}")
        if value is not None:
            out[name] = _dim(name, value)
    return out


def _accelerator() -> bool:
    import torch

    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    return bool(torch.cuda.is_available())


def build_space(
    baseline: LoaderConfig,
    *,
    max_workers: int | None = None,
    batch_sizes: Sequence[int] | None = None,
    space: Mapping[str, Any] | str | None = None,
    accelerator: bool | None = None,
    cores: int | None = None,
    concurrency: bool = False,
) -> dict[str, Dim]:
    """The search space: the defaults (NOTE [ Search and decision ]) narrowed by ``space``.

    Args:
        baseline: The incumbent: its batch size, pin_memory and fetch_concurrency are kept
            where they are not searched.
        max_workers: Upper bound of num_workers (default: 2 x ``cores``).
        batch_sizes: Batch sizes to search; without it the baseline's is kept.
        space: Fixes or narrows settings (see :func:`parse_space`).
        accelerator: Whether pin_memory is searched (default: whether torch sees one).
        cores: Usable cores (default: this process's CPU affinity).
        concurrency: Search fetch_concurrency (1 to 32, log scale): loadtune's DataLoader
            on a map-style dataset. Otherwise it is the baseline's, and left out of the
            space when the baseline has none (torch's DataLoader).

    Returns:
        One :class:`Dim` per setting.

    Raises:
        ConfigError: a negative max_workers or a bad ``space``.

    Example:
        >>> s = build_space(LoaderConfig(batch_size=32), max_workers=4, accelerator=False)
        >>> s["num_workers"].values(), s["pin_memory"].values(), s["batch_size"].values()
        ((0, 1, 2, 3, 4), (False,), (32,))
    """
    if max_workers is not None and max_workers < 0:
        raise ConfigError(f"max_workers must be >= 0, got {max_workers}")
    if accelerator is None:
        accelerator = _accelerator()
    if max_workers is None:
        max_workers = 2 * (cores or len(os.sched_getaffinity(0)))
    dims = {
        "num_workers": Dim(low=0, high=max_workers),
        "prefetch_factor": Dim(low=1, high=16, log=True),
        "persistent_workers": Dim(choices=(False, True)),
        "pin_memory": Dim(choices=(False, True) if accelerator else (baseline.pin_memory,)),
        "batch_size": _dim("batch_size", list(batch_sizes))
        if batch_sizes
        else Dim(choices=(baseline.batch_size,)),
    }
    if concurrency:
        dims["fetch_concurrency"] = Dim(low=1, high=MAX_FETCH_CONCURRENCY, log=True)
    elif baseline.fetch_concurrency is not None:
        dims["fetch_concurrency"] = Dim(choices=(baseline.fetch_concurrency,))
    asked = parse_space(space)
    if (
        "fetch_concurrency" in asked
        and not concurrency
        and asked["fetch_concurrency"].values() != (baseline.fetch_concurrency or 1,)
    ):
        raise ConfigError(
            "space: fetch_concurrency is searched only on loadtune's DataLoader with a "
            "map-style dataset (use --backend loadtune; an IterableDataset is read one sample "
            "at a time)"
        )
    dims.update(asked)
    if "fetch_concurrency" in asked and baseline.fetch_concurrency is None and not concurrency:
        del dims["fetch_concurrency"]  # 1 on torch's loader: what it does anyway
    return dims


def parse_memory(text: str | float | int | None) -> float | None:
    """Bytes from ``2GiB``, ``512MiB``, ``1.5GB``, ``800M`` or a plain number.

    Example:
        >>> parse_memory("2GiB")
        2147483648.0
    """
    if text is None or isinstance(text, (int, float)):
        if text is not None and text <= 0:
            raise ConfigError(f"memory limit must be > 0, got {text}")
        return None if text is None else float(text)
    units = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9}
    units |= {"t": 1e12, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in units:
        raise ConfigError(f"memory limit {text!r} is not a size like 2GiB, 512MiB or 8e9")
    value = float(match.group(1)) * units[match.group(2).lower()]
    if value <= 0:
        raise ConfigError(f"memory limit must be > 0, got {text!r}")
    return value


def _config_of(values: Mapping[str, Any]) -> LoaderConfig:
    workers = values["num_workers"]
    return LoaderConfig(
        num_workers=workers,
        prefetch_factor=values.get("prefetch_factor") if workers else None,
        batch_size=values["batch_size"],
        pin_memory=values["pin_memory"],
        persistent_workers=bool(values.get("persistent_workers")) if workers else False,
        fetch_concurrency=values.get("fetch_concurrency"),
    )


def _values(space: Mapping[str, Dim], name: str) -> tuple[Any, ...]:
    """A setting's values; (None,) for one the space leaves out (fetch_concurrency on torch)."""
    dim = space.get(name)
    return dim.values() if dim is not None else (None,)


def grid(space: Mapping[str, Dim]) -> list[LoaderConfig]:
    """Every config in the space (small: a few hundred on a 2-core machine).

    Example:
        >>> len(grid(parse_space("num_workers=0..2,prefetch_factor=1..3,"
        ...     "persistent_workers=false,pin_memory=false,batch_size=8")))
        7
    """
    out = []
    common = list(
        itertools.product(
            _values(space, "pin_memory"),
            _values(space, "batch_size"),
            _values(space, "fetch_concurrency"),
        )
    )
    for workers in space["num_workers"].values():
        inner = (
            itertools.product(
                space["prefetch_factor"].values(), space["persistent_workers"].values()
            )
            if workers
            else [(None, False)]
        )
        for (prefetch, persistent), (pin, batch, fetch) in itertools.product(inner, common):
            out.append(
                _config_of(
                    {
                        "num_workers": workers,
                        "prefetch_factor": prefetch,
                        "persistent_workers": persistent,
                        "pin_memory": pin,
                        "batch_size": batch,
                        "fetch_concurrency": fetch,
                    }
                )
            )
    return out


def _distance(a: LoaderConfig, b: LoaderConfig, span: int) -> float:
    """How far apart two configs are: each setting's step counts about as much as another's."""
    d = abs(a.num_workers - b.num_workers) / max(1, span)
    d += abs(math.log2(a.prefetch_factor or 2) - math.log2(b.prefetch_factor or 2)) / 4
    d += 0.25 * (a.persistent_workers != b.persistent_workers) + 0.25 * (
        a.pin_memory != b.pin_memory
    )
    d += abs(math.log2(a.batch_size or 1) - math.log2(b.batch_size or 1)) / 4
    d += abs(math.log2(a.fetch_concurrency or 1) - math.log2(b.fetch_concurrency or 1)) / 5
    return d


def _key(config: LoaderConfig) -> str:
    """A config as text: equal configs, equal keys (storage holds configs as dicts)."""
    return json.dumps(config.to_dict(), sort_keys=True)


def _params(config: LoaderConfig, space: Mapping[str, Dim]) -> dict[str, Any]:
    """The Optuna params of a config: the free settings whose value lies in the space."""
    values = config.to_dict()
    out = {}
    for name in SETTINGS:
        if (name in _WORKER_ONLY and not config.num_workers) or name not in space:
            continue
        dim = space[name]
        if not dim.fixed and values.get(name) in dim.values():
            out[name] = values[name]
    return out


def _suggest(trial: Any, space: Mapping[str, Dim], preset: LoaderConfig | None) -> LoaderConfig:
    """Ask the trial for every free setting; a queued trial keeps its own config."""
    values: dict[str, Any] = {}
    fixed = preset.to_dict() if preset is not None else {}
    for name in SETTINGS:
        if (name in _WORKER_ONLY and values["num_workers"] == 0) or name not in space:
            continue
        dim = space[name]
        if dim.fixed:
            values[name] = dim.values()[0]
        elif preset is not None and fixed.get(name) not in dim.values():
            values[name] = fixed.get(name)  # outside the space (an incumbent): not a param
        elif dim.choices:
            values[name] = trial.suggest_categorical(name, list(dim.choices))
        else:
            values[name] = trial.suggest_int(name, dim.low, dim.high, log=dim.log)
    return preset if preset is not None else _config_of(values)
