"""Targets: turn "file.py:name" or "pkg.mod:name" into a LoaderFactory; clone loaders.

This is the one place that knows how to rebuild a user's loader with other settings:
profile, autotune and ``apply`` all go through :func:`clone`.

A TARGET names a DataLoader (torch's or ours), a Dataset (map-style or iterable), or a
callable returning either. A callable that accepts keyword arguments such as
``num_workers`` or ``batch_size`` receives the overrides given on the command line; others
are called without arguments.

# NOTE [ Target imports ]
A file target's folder goes first on ``sys.path`` so that the user's sibling imports
work, and the file is imported under its own name (so spawn-started workers can import
the classes it defines). loadtune's own top-level packages (``probes``, ``reports``,
``cli``) are imported before that, so a user's ``cli.py`` or ``reports/`` next to the target
cannot shadow them; a user module whose name is taken already is imported under
``loadtune_target_<name>`` instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.utils.data as tud

from .config import LoaderConfig
from .errors import ConfigError, TargetError

__all__ = ["LoaderFactory", "clone", "load_object", "resolve"]

BACKENDS = ("auto", "loadtune", "torch")


def _import_ours() -> None:
    importlib.import_module("probes")
    for name in ("reports", "cli"):
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def load_object(target: str) -> Any:
    """The object that ``file.py:name`` or ``package.module:name`` names (else TargetError)."""
    if ":" not in target:
        raise TargetError(
            f"TARGET must look like path/to/file.py:name or package.module:name, got {target!r}"
        )
    where, _, name = target.rpartition(":")
    if not where or not name:
        raise TargetError(
            f"TARGET must look like path/to/file.py:name or package.module:name, got {target!r}"
        )
    _import_ours()
    if where.endswith(".py") or os.sep in where:
        module = _import_file(Path(where), target)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise TargetError(
                f"cannot import {where!r} (from TARGET {target!r}): {type(exc).__name__}: {exc}"
            ) from exc
    obj: Any = module
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(
                f"{where!r} has no attribute {name!r} (from TARGET {target!r})"
            ) from None
    return obj


def _import_file(path: Path, target: str) -> Any:
    if not path.is_file():
        raise TargetError(f"no such file: {str(path)!r} (from TARGET {target!r})")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) != str(path.resolve()):
        name = f"loadtune_target_{name}"
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {str(path)!r} (from TARGET {target!r})")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise TargetError(
            f"importing {str(path)!r} failed (from TARGET {target!r}): {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _is_loader(obj: Any) -> bool:
    return isinstance(obj, tud.DataLoader)


def _is_dataset(obj: Any) -> bool:
    return isinstance(obj, (tud.Dataset, tud.IterableDataset))


def _loader_class(backend: str, template: Any | None) -> type:
    if backend == "loadtune":
        from .loader import DataLoader

        return DataLoader
    if backend == "torch":
        return tud.DataLoader
    return type(template) if template is not None else tud.DataLoader


def clone(
    loader: Any,
    config: LoaderConfig | None = None,
    *,
    backend: str = "auto",
    keep_auto: bool = False,
    **overrides: Any,
) -> Any:
    """Rebuild a DataLoader with other settings, keeping everything else it had.

    Kept: the dataset, the sampler (or shuffle with the same generator), a custom
    batch_sampler, collate_fn, drop_last, timeout, worker_init_fn, multiprocessing_context,
    generator, in_order, and the loader class (unless ``backend`` says otherwise; loadtune's
    own options too when both sides are loadtune's).

    Args:
        loader: A torch or loadtune DataLoader.
        config: The settings to apply (num_workers, prefetch_factor, batch_size, pin_memory,
            persistent_workers, fetch_concurrency); None keeps the loader's. A
            ``fetch_concurrency`` of None keeps the loader's own (loadtune's loader only).
        backend: ``"auto"`` (the loader's own class), ``"loadtune"`` or ``"torch"``.
        keep_auto: Keep ``num_workers="auto"`` / ``prefetch_factor="auto"`` of loadtune's
            loader although a ``config`` is given (its numbers are then the pool's size
            when it was read). Without a config they are kept unless an override sets them;
            a config otherwise fixes them: that is how autotune measures fixed settings.
        **overrides: Individual settings, applied after ``config``.

    Raises:
        TargetError: a batch size change asked of a loader with a custom batch_sampler.
        ConfigError: a ``fetch_concurrency`` above 1 for a torch DataLoader.
    """
    base = LoaderConfig.from_loader(loader)
    cfg = config or base
    if overrides:
        cfg = cfg.with_(**overrides)
    cls = _loader_class(backend, loader)
    from .loader import DataLoader as Ours

    # Asked for by the caller (a loader's own setting is dropped when it is rebuilt as torch's)
    concurrency = cfg.fetch_concurrency if config is not None or overrides else None
    if concurrency is not None and concurrency > 1 and not issubclass(cls, Ours):
        raise ConfigError(
            f"fetch_concurrency={concurrency} needs loadtune's DataLoader: torch's DataLoader "
            "has no such argument (build the loader with loadtune.DataLoader, or leave "
            "fetch_concurrency out of the config)"
        )
    kwargs: dict[str, Any] = {
        "num_workers": cfg.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": cfg.pin_memory,
        "timeout": loader.timeout if cfg.num_workers > 0 else 0,
        "worker_init_fn": loader.worker_init_fn,
        "generator": loader.generator,
        "prefetch_factor": cfg.prefetch_factor,
        "persistent_workers": cfg.persistent_workers,
        "in_order": getattr(loader, "in_order", True),
    }
    if cfg.num_workers > 0 and loader.multiprocessing_context is not None:
        kwargs["multiprocessing_context"] = loader.multiprocessing_context
    custom_batches = loader.batch_sampler is not None and not isinstance(
        loader.batch_sampler, tud.BatchSampler
    )
    if custom_batches:
        if cfg.batch_size != base.batch_size:
            raise TargetError(
                "this loader has a custom batch_sampler, so its batch size cannot be changed"
            )
        kwargs["batch_sampler"] = loader.batch_sampler
    else:
        kwargs["batch_size"] = cfg.batch_size
        kwargs["drop_last"] = loader.drop_last
        if loader._dataset_kind == 0:  # map-style: keep the sampler (shuffle included)
            kwargs["sampler"] = loader.sampler
    if issubclass(cls, Ours):
        own = base.fetch_concurrency  # None: the loader is torch's, and had none
        if cfg.fetch_concurrency is not None or own is not None:
            kwargs["fetch_concurrency"] = cfg.fetch_concurrency or own
    if isinstance(loader, Ours) and issubclass(cls, Ours):
        kwargs["dispatch"] = loader.dispatch
        kwargs["on_worker_death"] = loader.on_worker_death
        kwargs["max_worker_restarts"] = loader.max_worker_restarts
        kwargs["min_available_memory"] = loader.min_available_memory
        kwargs["numa"] = loader.numa
        kwargs["device"] = loader.device
        kwargs["validate"] = loader.validate
        kwargs["on_error"] = loader._error_policy.on_error
        kwargs["max_retries"] = loader._error_policy.max_retries
        kwargs["retry_backoff"] = loader._error_policy.backoff
        kwargs["retry_exhausted"] = loader._error_policy.retry_exhausted
        kwargs["per_sample_seed"] = loader.per_sample_seed
        keep = keep_auto or config is None
        if getattr(loader, "auto_workers", False) and keep and "num_workers" not in overrides:
            kwargs["num_workers"] = "auto"
            kwargs["max_workers"] = loader.max_workers
            kwargs["timeout"] = loader.timeout
            if loader.multiprocessing_context is not None:
                kwargs["multiprocessing_context"] = loader.multiprocessing_context
        if getattr(loader, "auto_prefetch", False) and keep and "prefetch_factor" not in overrides:
            kwargs["prefetch_factor"] = "auto"
        if kwargs["num_workers"] == "auto":
            new = cls(loader.dataset, **kwargs)
            new._pool_hook = loader._pool_hook  # tests force pool sizes through the clone
            return new
    return cls(loader.dataset, **kwargs)


@dataclass(frozen=True)
class LoaderFactory:
    """Builds the user's loader for a given config.

    Attributes:
        target: The TARGET string, or a description of the object given.
        kind: ``"loader"``, ``"dataset"`` or ``"callable"``.
        backend: Whose loader is built: ``"loadtune"`` or ``"torch"``.
        baseline: The settings the user's loader has as given (the incumbent).
    """

    target: str
    kind: str
    backend: str
    baseline: LoaderConfig
    _build: Callable[[LoaderConfig], Any]

    def __call__(self, config: LoaderConfig | None = None) -> Any:
        """A fresh loader with ``config`` (the baseline when None)."""
        return self._build(config or self.baseline)

    def describe(self) -> str:
        """One line: what is loaded and how."""
        b = self.baseline
        return (
            f"{self.target} ({self.kind}, {self.backend} DataLoader): batch_size={b.batch_size}, "
            f"num_workers={b.num_workers}, prefetch_factor={b.prefetch_factor}, "
            f"pin_memory={b.pin_memory}, persistent_workers={b.persistent_workers}"
            + (f", fetch_concurrency={b.fetch_concurrency}" if b.fetch_concurrency else "")
        )


def _accepted(fn: Callable, overrides: dict[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(overrides)
    return {k: v for k, v in overrides.items() if k in params}


def resolve(
    target: Any,
    *,
    backend: str = "auto",
    shuffle: bool = False,
    **overrides: Any,
) -> LoaderFactory:
    """A LoaderFactory for a TARGET string or a loader / dataset / callable object.

    Args:
        target: ``"path/to/file.py:name"``, ``"package.module:name"``, the object itself, or
            a LoaderFactory (returned as it is).
        backend: ``"auto"`` profiles a loader as it is (a dataset gets loadtune's loader);
            ``"loadtune"`` or ``"torch"`` rebuilds with that class.
        shuffle: For a dataset target: build the loader with ``shuffle=True``.
        **overrides: Settings (num_workers, batch_size, prefetch_factor, pin_memory,
            persistent_workers, fetch_concurrency) for the baseline; a callable receives
            those it accepts.

    Raises:
        TargetError: the target is missing, does not import, or is not a DataLoader, a
            Dataset or a callable returning one; the message says which, in one line.
        ConfigError: a ``fetch_concurrency`` above 1 asked of torch's DataLoader.

    Example:
        >>> import torch
        >>> factory = resolve(torch.utils.data.TensorDataset(torch.zeros(8)), batch_size=4)
        >>> factory.kind, factory.baseline.batch_size
        ('dataset', 4)
    """
    if isinstance(target, LoaderFactory):
        return target
    if backend not in BACKENDS:
        raise TargetError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    name = target if isinstance(target, str) else _describe(target)
    obj = load_object(target) if isinstance(target, str) else target
    kind = "loader" if _is_loader(obj) else "dataset" if _is_dataset(obj) else None
    if kind is None and callable(obj) and not isinstance(obj, type):
        made = obj(**_accepted(obj, overrides))
        if not (_is_loader(made) or _is_dataset(made)):
            raise TargetError(
                f"{name!r} returned a {type(made).__name__}, not a DataLoader or Dataset"
            )
        obj, kind = made, "callable"
    if kind is None:
        raise TargetError(
            f"{name!r} is a {type(obj).__name__}, not a DataLoader, a Dataset or a callable "
            "returning one"
        )
    if _is_dataset(obj):
        loader_cls = _loader_class("loadtune" if backend == "auto" else backend, None)
        cfg = LoaderConfig(
            num_workers=overrides.get("num_workers", 0),
            prefetch_factor=overrides.get("prefetch_factor"),
            batch_size=overrides.get("batch_size", 1),
            pin_memory=overrides.get("pin_memory", False),
            persistent_workers=overrides.get("persistent_workers", False),
            fetch_concurrency=overrides.get("fetch_concurrency"),
        )
        template = loader_cls(
            obj,
            batch_size=cfg.batch_size,
            shuffle=shuffle if not isinstance(obj, tud.IterableDataset) else None,
        )
    else:
        template = obj
        cfg = LoaderConfig.from_loader(obj)
        settable = {k: v for k, v in overrides.items() if k in LoaderConfig.__dataclass_fields__}
        cfg = cfg.with_(**settable) if settable else cfg
    resolved_backend = (
        "loadtune"
        if backend == "loadtune"
        else "torch"
        if backend == "torch"
        else _backend_of(template)
    )
    if resolved_backend == "loadtune" and cfg.fetch_concurrency is None:
        cfg = cfg.with_(fetch_concurrency=1)  # the loader's default, said explicitly
    elif resolved_backend == "torch" and (cfg.fetch_concurrency or 1) > 1:
        raise ConfigError(
            f"fetch_concurrency={cfg.fetch_concurrency} needs loadtune's DataLoader: torch's "
            "DataLoader has no such argument (use --backend loadtune)"
        )

    def build(config: LoaderConfig) -> Any:
        # the baseline is the loader as given: an "auto" pool stays "auto"
        return clone(template, config, backend=backend, keep_auto=config is cfg)

    return LoaderFactory(name, kind, resolved_backend, cfg, build)


def _backend_of(loader: Any) -> str:
    from .loader import DataLoader as Ours

    return "loadtune" if isinstance(loader, Ours) else "torch"


def _describe(obj: Any) -> str:
    return f"<{type(obj).__module__}.{type(obj).__qualname__} object>"
