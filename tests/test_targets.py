"""Target resolution, cloning and apply: every setting the user had is kept."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

import loadtune
from loadtune.config import LoaderConfig, apply, read, write
from loadtune.errors import ConfigError, TargetError
from loadtune.targets import clone, resolve

DATA = torch.utils.data.TensorDataset(torch.arange(40.0))


def _collate(batch: list) -> list:
    return batch


def _init(worker_id: int) -> None:
    return None


def test_clone_keeps_every_setting_and_changes_only_the_config() -> None:
    gen = torch.Generator().manual_seed(3)
    original = DataLoader(
        DATA,
        batch_size=4,
        shuffle=True,
        num_workers=2,
        collate_fn=_collate,
        drop_last=True,
        timeout=7,
        worker_init_fn=_init,
        multiprocessing_context="spawn",
        generator=gen,
        prefetch_factor=3,
        persistent_workers=True,
        in_order=False,
    )
    copy = clone(original, LoaderConfig(num_workers=3, prefetch_factor=5, batch_size=8))
    assert type(copy) is DataLoader
    assert copy.dataset is DATA and copy.sampler is original.sampler
    assert isinstance(copy.sampler, RandomSampler) and copy.generator is gen
    assert copy.collate_fn is _collate and copy.worker_init_fn is _init
    assert copy.drop_last and copy.timeout == 7 and copy.in_order is False
    assert copy.multiprocessing_context is original.multiprocessing_context
    assert (copy.num_workers, copy.prefetch_factor, copy.batch_size) == (3, 5, 8)
    assert copy.persistent_workers is False  # the config says so


def test_clone_to_zero_workers_drops_what_torch_refuses() -> None:
    original = DataLoader(DATA, batch_size=4, num_workers=2, timeout=5, persistent_workers=True)
    copy = clone(original, LoaderConfig(num_workers=0, batch_size=4))
    assert copy.num_workers == 0 and copy.prefetch_factor is None and copy.timeout == 0
    assert next(iter(copy))[0].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_clone_across_backends_and_loadtune_options() -> None:
    ours = loadtune.DataLoader(DATA, batch_size=5, dispatch="balanced", on_worker_death="raise")
    same = clone(ours, num_workers=1)
    assert type(same) is loadtune.DataLoader
    assert same.dispatch == "balanced" and same.on_worker_death == "raise"
    theirs = clone(ours, backend="torch")
    assert type(theirs) is DataLoader
    back = clone(theirs, backend="loadtune")
    assert type(back) is loadtune.DataLoader and back.batch_size == 5


def test_custom_batch_sampler_keeps_its_batches_and_refuses_a_new_batch_size() -> None:
    sampler = BatchSampler(SequentialSampler(DATA), 3, False)
    custom = [[0, 1], [5, 6, 7]]
    original = DataLoader(DATA, batch_sampler=custom)
    assert [b[0].tolist() for b in clone(original)] == [[0.0, 1.0], [5.0, 6.0, 7.0]]
    with pytest.raises(TargetError, match="custom batch_sampler"):
        clone(original, batch_size=8)
    assert clone(DataLoader(DATA, batch_sampler=sampler), batch_size=6).batch_size == 6


def test_apply_round_trips_through_json_and_toml(tmp_path: Path) -> None:
    cfg = LoaderConfig(num_workers=2, prefetch_factor=4, batch_size=16, persistent_workers=True)
    for name in ("tuned.json", "tuned.toml"):
        write(cfg, tmp_path / name, {"measurement": {"speedup": 1.5, "trials": 12}})
        back, raw = read(tmp_path / name)
        assert back == cfg and raw["measurement"]["trials"] == 12
        applied = apply(tmp_path / name, DataLoader(DATA, batch_size=2))
        assert LoaderConfig.from_loader(applied) == cfg
    text = (tmp_path / "tuned.toml").read_text()
    assert "num_workers = 2\n" in text and "[measurement]" in text
    assert json.loads((tmp_path / "tuned.json").read_text())["prefetch_factor"] == 4


def test_fetch_concurrency_is_written_only_when_set(tmp_path: Path) -> None:
    assert "fetch_concurrency" not in LoaderConfig(num_workers=2).to_dict()
    cfg = LoaderConfig(num_workers=2, batch_size=4, fetch_concurrency=8)
    assert cfg.to_dict()["fetch_concurrency"] == 8
    for name in ("tuned.json", "tuned.toml"):
        write(cfg, tmp_path / name)
        assert read(tmp_path / name)[0] == cfg
    assert "fetch_concurrency = 8\n" in (tmp_path / "tuned.toml").read_text()
    # a file written before the setting existed has no such key: it reads as "not set"
    (tmp_path / "old.json").write_text('{"num_workers": 2, "prefetch_factor": 2, "batch_size": 4}')
    assert read(tmp_path / "old.json")[0].fetch_concurrency is None
    with pytest.raises(ConfigError, match="fetch_concurrency must be >= 1, got 0"):
        LoaderConfig(fetch_concurrency=0)


def test_apply_sets_fetch_concurrency_on_our_loader_and_keeps_it_otherwise(
    tmp_path: Path,
) -> None:
    ours = loadtune.DataLoader(DATA, batch_size=4, fetch_concurrency=4)
    assert LoaderConfig.from_loader(ours).fetch_concurrency == 4
    applied = apply(LoaderConfig(num_workers=0, batch_size=4, fetch_concurrency=16), ours)
    assert type(applied) is loadtune.DataLoader and applied.fetch_concurrency == 16
    # a config without it (an old file) leaves the loader's own
    (tmp_path / "old.json").write_text('{"num_workers": 1, "batch_size": 8}')
    kept = apply(tmp_path / "old.json", ours)
    assert (kept.fetch_concurrency, kept.num_workers, kept.batch_size) == (4, 1, 8)
    # a torch loader rebuilt as ours gets it too
    theirs = DataLoader(DATA, batch_size=4)
    rebuilt = clone(theirs, LoaderConfig(batch_size=4, fetch_concurrency=2), backend="loadtune")
    assert rebuilt.fetch_concurrency == 2
    # ours rebuilt as torch's drops its own setting: torch's loader has none
    assert type(clone(ours, backend="torch")) is DataLoader


def test_apply_refuses_fetch_concurrency_for_a_torch_loader(tmp_path: Path) -> None:
    theirs = DataLoader(DATA, batch_size=4)
    write(LoaderConfig(num_workers=0, batch_size=4, fetch_concurrency=8), tmp_path / "t.json")
    with pytest.raises(ConfigError) as info:
        apply(tmp_path / "t.json", theirs)
    assert str(info.value) == (
        f"config {str(tmp_path / 't.json')!r}: fetch_concurrency=8 needs loadtune's "
        "DataLoader: torch's DataLoader has no such argument (build the loader with "
        "loadtune.DataLoader, or leave fetch_concurrency out of the config)"
    )
    # 1 is what torch's loader does anyway
    same = apply(LoaderConfig(num_workers=0, batch_size=2, fetch_concurrency=1), theirs)
    assert type(same) is DataLoader and same.batch_size == 2
    with pytest.raises(ConfigError, match="fetch_concurrency=4 needs loadtune's DataLoader"):
        resolve(theirs, fetch_concurrency=4)
    assert resolve(DATA, batch_size=4).baseline.fetch_concurrency == 1  # ours, said so
    assert resolve(theirs).baseline.fetch_concurrency is None


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read config"),
        ("{not json", "is not valid json"),
        ('{"num_workers": "two"}', "num_workers must be an integer"),
        ('{"workers": 2}', "unknown key(s) workers"),
        ('{"num_workers": -1}', "num_workers must be >= 0"),
        ('{"fetch_concurrency": true}', "fetch_concurrency must be an integer, got True"),
    ],
)
def test_bad_config_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        read(path)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def _write_target(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "helpers.py").write_text("SIZE = 24\n")
    (folder / "cli.py").write_text("raise RuntimeError('the user cli.py was imported')\n")
    (folder / "reports").mkdir(exist_ok=True)
    (folder / "reports" / "__init__.py").write_text("raise RuntimeError('user reports')\n")
    (folder / "train.py").write_text(
        textwrap.dedent(
            """
            import torch
            from helpers import SIZE

            dataset = torch.utils.data.TensorDataset(torch.arange(float(SIZE)))
            loader = torch.utils.data.DataLoader(dataset, batch_size=6)
            number = 3

            def make(num_workers=0, batch_size=2):
                return torch.utils.data.DataLoader(
                    dataset, batch_size=batch_size, num_workers=num_workers
                )

            def make_plain():
                return dataset
            """
        )
    )
    return folder / "train.py"


def test_file_targets_with_sibling_imports_and_shadowing_names(tmp_path: Path) -> None:
    path = _write_target(tmp_path / "proj")
    f = resolve(f"{path}:loader")
    assert (f.kind, f.backend, f.baseline.batch_size) == ("loader", "torch", 6)
    assert len(list(f())) == 4
    f = resolve(f"{path}:dataset", batch_size=5, num_workers=0)
    assert (f.kind, f.backend, f.baseline.batch_size) == ("dataset", "loadtune", 5)
    f = resolve(f"{path}:make", batch_size=8, num_workers=0)
    assert (f.kind, f.baseline.batch_size) == ("callable", 8)
    assert resolve(f"{path}:make_plain").kind == "callable"
    import cli
    import reports

    assert hasattr(cli, "main") and hasattr(reports, "__path__")


@pytest.mark.parametrize(
    "target, message",
    [
        ("nothing_here.py:loader", "no such file: 'nothing_here.py'"),
        ("no_colon", "TARGET must look like path/to/file.py:name"),
        ("not_a_module_xyz:loader", "cannot import 'not_a_module_xyz'"),
        ("{path}:missing", "has no attribute 'missing'"),
        ("{path}:number", "is a int, not a DataLoader, a Dataset or a callable returning one"),
    ],
)
def test_bad_targets(tmp_path: Path, target: str, message: str) -> None:
    path = _write_target(tmp_path / "proj")
    with pytest.raises(TargetError) as info:
        resolve(target.format(path=path))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_target_that_fails_to_import(tmp_path: Path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("import does_not_exist_anywhere\n")
    with pytest.raises(TargetError, match=r"importing .* failed .*ModuleNotFoundError"):
        resolve(f"{bad}:x")


def test_an_auto_pool_stays_auto_unless_a_setting_is_given() -> None:
    loader = loadtune.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(40.0)),
        batch_size=4,
        num_workers="auto",
        max_workers=3,
        prefetch_factor="auto",
    )
    kept = clone(loader)
    assert (kept.auto_workers, kept.max_workers, kept.auto_prefetch) == (True, 3, True)
    fixed = clone(loader, LoaderConfig(num_workers=2, batch_size=4, prefetch_factor=3))
    assert (fixed.auto_workers, fixed.num_workers, fixed.auto_prefetch) == (False, 2, False)
    assert fixed.prefetch_factor == 3
    one = clone(loader, num_workers=1)
    assert (one.auto_workers, one.num_workers, one.auto_prefetch) == (False, 1, True)
    factory = resolve(loader)
    assert factory().auto_workers and factory().max_workers == 3  # the loader as given
    other = factory(factory.baseline.with_(num_workers=2))  # what autotune's trials build
    assert (other.auto_workers, other.num_workers) == (False, 2)
