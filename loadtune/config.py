"""LoaderConfig: the settings loadtune measures and tunes; reading, writing and applying them.

A config file is flat: the top-level keys are the LoaderConfig fields; a ``measurement``
section (written by autotune) is kept but not needed to apply the file. JSON and TOML are
both read and written; the suffix decides. ``fetch_concurrency`` is written only when it is
set: a file without it (every file written before it existed) leaves the loader's own.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from .atomic import write_text
from .errors import ConfigError

__all__ = ["LoaderConfig", "apply", "read", "write"]


@dataclass(frozen=True, slots=True)
class LoaderConfig:
    """The settings of a DataLoader that loadtune measures and tunes.

    ``prefetch_factor`` is None exactly when ``num_workers`` is 0, and
    ``persistent_workers`` is False then, as torch requires.

    ``fetch_concurrency`` (samples each worker fetches at once) exists only on loadtune's
    DataLoader. None means "not set": applying the config keeps whatever the loader has, and
    the key is left out of ``to_dict()`` and of config files. A torch DataLoader takes only
    None or 1 (see :func:`apply`).

    Example:
        >>> LoaderConfig(num_workers=4, batch_size=64).prefetch_factor
        2
        >>> LoaderConfig(num_workers=2, fetch_concurrency=8).to_dict()["fetch_concurrency"]
        8
    """

    num_workers: int = 0
    prefetch_factor: int | None = None
    batch_size: int | None = 1
    pin_memory: bool = False
    persistent_workers: bool = False
    fetch_concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.num_workers == 0:
            object.__setattr__(self, "prefetch_factor", None)
            object.__setattr__(self, "persistent_workers", False)
        elif self.prefetch_factor is None:
            object.__setattr__(self, "prefetch_factor", 2)
        elif self.prefetch_factor < 1:
            raise ConfigError(f"prefetch_factor must be >= 1, got {self.prefetch_factor}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        if self.fetch_concurrency is not None and self.fetch_concurrency < 1:
            raise ConfigError(f"fetch_concurrency must be >= 1, got {self.fetch_concurrency}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict; ``fetch_concurrency`` only when it is set."""
        data = asdict(self)
        if data["fetch_concurrency"] is None:
            del data["fetch_concurrency"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> LoaderConfig:
        """Build from a dict; unknown keys other than ``measurement`` are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names - {"measurement"})
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
        values = {k: data[k] for k in names if k in data}
        for key in ("num_workers", "prefetch_factor", "batch_size", "fetch_concurrency"):
            value = values.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ConfigError(f"{source}: {key} must be an integer, got {values[key]!r}")
        for key in ("pin_memory", "persistent_workers"):
            if key in values and not isinstance(values[key], bool):
                raise ConfigError(f"{source}: {key} must be true or false, got {values[key]!r}")
        return cls(**values)

    @classmethod
    def from_loader(cls, loader: Any) -> LoaderConfig:
        """The settings a torch or loadtune DataLoader was built with.

        ``fetch_concurrency`` is the loader's own on loadtune's DataLoader, None on torch's.
        """
        return cls(
            num_workers=loader.num_workers,
            prefetch_factor=loader.prefetch_factor,
            batch_size=loader.batch_size,
            pin_memory=loader.pin_memory,
            persistent_workers=loader.persistent_workers,
            fetch_concurrency=getattr(loader, "fetch_concurrency", None),
        )

    def with_(self, **changes: Any) -> LoaderConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to TOML")


def _to_toml(data: dict[str, Any]) -> str:
    """TOML for a flat dict plus one level of tables (None values are left out)."""
    out = [
        f"{k} = {_toml_value(v)}"
        for k, v in data.items()
        if v is not None and not isinstance(v, dict)
    ]
    for name, table in data.items():
        if isinstance(table, dict):
            out.append("")
            out.append(f"[{name}]")
            out.extend(f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None)
    return "\n".join(out) + "\n"


def read(path: str | os.PathLike) -> tuple[LoaderConfig, dict[str, Any]]:
    """Read a config file; return the config and the raw data (``measurement`` included).

    Raises:
        ConfigError: a missing or unreadable file, bad syntax or a bad value; the message
            names the file.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(p)!r}: {exc.strerror}") from exc
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"config {str(p)!r} is not valid {p.suffix[1:] or 'JSON'}: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(p)!r} must hold a table of settings")
    return LoaderConfig.from_dict(data, source=f"config {str(p)!r}"), data


def write(
    config: LoaderConfig, path: str | os.PathLike, extra: dict[str, Any] | None = None
) -> None:
    """Write a config file (JSON, or TOML for a ``.toml`` suffix) atomically."""
    p = Path(path)
    data = {**config.to_dict(), **(extra or {})}
    text = _to_toml(data) if p.suffix == ".toml" else json.dumps(data, indent=2) + "\n"
    write_text(p, text)


def apply(config: LoaderConfig | str | os.PathLike, loader: Any) -> Any:
    """The user's loader rebuilt with a config's settings; everything else is kept.

    ``fetch_concurrency`` is set when the config has it (a loadtune DataLoader only) and
    otherwise kept as the loader has it.

    Args:
        config: A LoaderConfig or the path of a config file (JSON or TOML).
        loader: A torch or loadtune DataLoader.

    Returns:
        A new loader of the same class as ``loader``.

    Raises:
        ConfigError: a bad config file, or a ``fetch_concurrency`` above 1 for a torch
            DataLoader (which has no such argument); the message names the file.
        TargetError: a batch size change asked of a loader with a custom batch_sampler.

    Example:
        >>> import torch
        >>> from loadtune import LoaderConfig, apply
        >>> loader = torch.utils.data.DataLoader(torch.arange(8), batch_size=2)
        >>> apply(LoaderConfig(num_workers=0, batch_size=4), loader).batch_size
        4
    """
    from .targets import clone

    source = "config"
    if not isinstance(config, LoaderConfig):
        source = f"config {str(config)!r}"
        config, _ = read(config)
    try:
        return clone(loader, config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def python_snippet(config: LoaderConfig, backend: str, config_path: str | None = None) -> str:
    """Python that builds a loader with ``config``'s settings (and the ``apply`` one-liner).

    ``fetch_concurrency`` appears only when the config sets it (None keeps a loader's own).
    The CLI prints this after autotune and the reports show it; this is its one source.

    Args:
        config: The settings.
        backend: ``"loadtune"`` (``loadtune.DataLoader``) or ``"torch"``.
        config_path: A config file for the ``loadtune.apply`` line; None leaves it out.

    Returns:
        The code, ending in a newline.

    Example:
        >>> print(python_snippet(LoaderConfig(num_workers=0, batch_size=8), "torch"), end="")
        import torch
        <BLANKLINE>
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=8,
            num_workers=0,
            pin_memory=False,
        )
    """
    c = config
    ours = backend == "loadtune"
    cls = "DataLoader" if ours else "torch.utils.data.DataLoader"
    head = "from loadtune import DataLoader\n\n" if ours else "import torch\n\n"
    args = [f"    batch_size={c.batch_size},", f"    num_workers={c.num_workers},"]
    if c.num_workers:
        args.append(f"    prefetch_factor={c.prefetch_factor},")
        args.append(f"    persistent_workers={c.persistent_workers},")
    args.append(f"    pin_memory={c.pin_memory},")
    if c.fetch_concurrency is not None:
        args.append(f"    fetch_concurrency={c.fetch_concurrency},")
    text = f"{head}loader = {cls}(\n    dataset,\n" + "\n".join(args) + "\n)\n"
    return text + apply_snippet(config_path) if config_path else text


def apply_snippet(config_path: str) -> str:
    """The ``loadtune.apply`` lines that end :func:`python_snippet` given a config file."""
    return (
        "\n# or keep everything else your loader has:\nimport loadtune\n\n"
        f"loader = loadtune.apply({config_path!r}, loader)\n"
    )
