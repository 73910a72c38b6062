"""profile() and `loadtune profile`: what is measured, what is written, bad input."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest
import torch

import cli
from loadtune import DataLoader
from loadtune.errors import ResultFormatError, TargetError
from loadtune.profiling import expected_window, profile
from loadtune.results import ProfileResult, load, save
from probes.pyspy import choose_rate, find_pyspy


class Sleepy(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2000

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        time.sleep(0.002)
        return torch.zeros(16), i


def test_profile_measures_the_window_and_writes_its_files(tmp_path: Path) -> None:
    loader = DataLoader(Sleepy(), batch_size=4, num_workers=2)
    result = profile(
        loader, batches=20, warmup=3, probes=["stages", "cpu", "memory"], out_dir=tmp_path
    )
    m = result.measurement
    assert (m.window_batches, m.warmup_batches, m.repeats) == (20, 3, 1)
    assert m.samples_per_s == pytest.approx(4 * m.batches_per_s)
    assert 0.0 <= m.stall_fraction <= 1.0 and m.time_to_first_batch_s > 0
    assert set(result.probes) == {"stages", "cpu", "memory"}
    assert result.probes["stages"].summary["batches"] == 20
    assert result.diagnosis is not None and result.diagnosis.bottleneck == "io_latency"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.json", "trace.json"]
    assert result.artifacts == {"trace": "trace.json", "profile": "profile.json"}
    again = load(tmp_path / "profile.json")
    assert isinstance(again, ProfileResult) and again.to_dict() == result.to_dict()
    trace = json.loads((tmp_path / "trace.json").read_text())
    names = {e["args"].get("name") for e in trace["traceEvents"] if e.get("ph") == "M"}
    assert {"worker 0", "worker 1", "main"} <= names


def test_overhead_accounts_for_every_probe() -> None:
    loader = DataLoader(Sleepy(), batch_size=4, num_workers=2)
    # a window of about 0.25 s (60 batches of 4 samples of 2 ms, 2 workers): a dozen ticks
    probes = ["stages", "cpu", "memory"]
    result = profile(loader, batches=60, warmup=3, probes=probes, interval=0.02)
    o = result.overhead
    assert set(o) == {
        "sampler_cpu_s",
        "sampler_window_cpu_s",
        "sample_cpu_s.stages",
        "sample_cpu_s.cpu",
        "sample_cpu_s.memory",
        "probes_window_s",
    }
    split = o["sample_cpu_s.stages"] + o["sample_cpu_s.cpu"] + o["sample_cpu_s.memory"]
    assert o["sampler_window_cpu_s"] == pytest.approx(split)
    # the window's ticks are a part of all ticks, which also open and close the window
    assert 0.0 < o["sampler_window_cpu_s"] < o["sampler_cpu_s"]
    # the sampler's first and last tick are the CPU probe's first and last sample
    cpu = result.probes["cpu"].summary["window_s"]
    assert o["probes_window_s"] == pytest.approx(cpu, rel=1e-9)


def test_pyspy_in_a_profile_gets_the_rule_rate_and_its_cpu_is_counted() -> None:
    if find_pyspy() is None:
        pytest.skip("py-spy is not installed")
    loader = DataLoader(Sleepy(), batch_size=4, num_workers=2)
    result = profile(loader, batches=20, warmup=3, probes=["stages", "pyspy"])
    pyspy = result.probes["pyspy"]
    assert pyspy.available, pyspy.reason
    cores = len(os.sched_getaffinity(0))
    # a window of well under a minute: the CPU budget, not the sample target, sets the rate
    assert pyspy.detail["rate_per_s"] == choose_rate(3, cores)
    assert pyspy.detail["rate_rule"].startswith(
        f"choose_rate: 3 processes, {cores} cores, window ~"
    )
    o = result.overhead
    assert o["pyspy_cpu_s"] == pyspy.summary["recorder_cpu_s"] > 0.0
    assert o["pyspy_start_cpu_s"] == pyspy.summary["recorder_start_cpu_s"] > 0.0


@pytest.mark.parametrize(
    ("batches", "seconds", "warmup", "first", "now", "expected"),
    [
        (200, None, 5, 10.0, 10.5, 25.0),  # 4 warm-up batches in 0.5 s, times 200
        (200, 5.0, 5, 10.0, 10.5, 5.0),  # the time limit comes first
        (200, 60.0, 5, 10.0, 10.5, 25.0),  # the batches come first
        (None, 8.0, 5, 10.0, 10.5, 8.0),
        (200, None, 1, 10.0, 10.0, None),  # no warm-up after the first batch: no pace
        (200, None, 5, None, 10.5, None),  # no first batch seen
        (200, None, 5, 10.0, 10.0, None),  # no time passed: no pace
        (200, 3.0, 1, None, 10.0, 3.0),
    ],
)
def test_expected_window(
    batches: int | None,
    seconds: float | None,
    warmup: int,
    first: float | None,
    now: float,
    expected: float | None,
) -> None:
    assert expected_window(batches, seconds, warmup, first, now) == expected


def test_torch_loader_is_profiled_from_outside() -> None:
    loader = torch.utils.data.DataLoader(Sleepy(), batch_size=4, num_workers=2)
    result = profile(loader, batches=15, probes=["stages", "cpu"])
    assert result.backend == "torch"
    stages = result.probes["stages"]
    assert stages.detail["mode"] == "external" and stages.summary["batches"] == 15
    workers = [r for r in result.probes["cpu"].detail["processes"] if r["role"] != "main"]
    assert len(workers) == 2


def test_a_slow_training_step_is_the_consumer() -> None:
    loader = DataLoader(Sleepy(), batch_size=2, num_workers=2)
    result = profile(loader, batches=12, step_ms=40, probes=["stages", "cpu"])
    assert result.step == "40 ms"
    assert result.measurement.stall_fraction < 0.1
    assert result.diagnosis.bottleneck == "consumer"


def test_unknown_probe() -> None:
    with pytest.raises(Exception, match="unknown probe"):
        profile(DataLoader(Sleepy()), batches=2, probes=["stages", "nope"])


def _target(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.py"
    path.write_text(
        textwrap.dedent(
            """
            import time, torch

            class Sleepy(torch.utils.data.Dataset):
                def __len__(self): return 400
                def __getitem__(self, i):
                    time.sleep(0.001)
                    return torch.zeros(8)

            dataset = Sleepy()
            answer = 42
            """
        )
    )
    return path


def test_cli_profile_writes_and_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _target(tmp_path)
    out = tmp_path / "out"
    code = cli.main(
        [
            "profile",
            f"{path}:dataset",
            "--batch-size",
            "4",
            "--num-workers",
            "2",
            "--batches",
            "10",
            "--probes",
            "stages,cpu",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    assert "loadtune profile" in stdout and "bottleneck" in stdout
    assert f"wrote {out}/profile.json, {out}/trace.json" in stdout
    result = load(out / "profile.json")
    assert result.config.num_workers == 2 and result.config.batch_size == 4


@pytest.mark.parametrize(
    "target, message",
    [
        ("missing.py:dataset", "loadtune: error: no such file: 'missing.py'"),
        ("{path}:answer", "loadtune: error: '{path}:answer' is a int, not a DataLoader"),
        ("{path}:nothing", "loadtune: error: '{path}' has no attribute 'nothing'"),
        ("no.such.module:x", "loadtune: error: cannot import 'no.such.module'"),
    ],
)
def test_cli_bad_target_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, message: str
) -> None:
    path = _target(tmp_path)
    code = cli.main(["profile", target.format(path=path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(message.format(path=path))
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o" / "profile.json").exists()
    with pytest.raises(TargetError):
        cli.main(["--debug", "profile", target.format(path=path)])


def test_result_files_with_unknown_schema_or_missing_fields(tmp_path: Path) -> None:
    loader = DataLoader(Sleepy(), batch_size=4)
    result = profile(loader, batches=3, warmup=1, probes=["stages"])
    good = tmp_path / "p.json"
    save(result, good)
    data = json.loads(good.read_text())
    data["schema"] = 99
    (tmp_path / "v.json").write_text(json.dumps(data))
    with pytest.raises(ResultFormatError, match=r"v\.json: unknown schema version 99"):
        load(tmp_path / "v.json")
    data = json.loads(good.read_text())
    del data["measurement"]["stall_fraction"]
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(
        ResultFormatError, match=r"m\.json: missing field 'measurement.stall_fraction'"
    ):
        load(tmp_path / "m.json")
    (tmp_path / "x.json").write_text("not json")
    with pytest.raises(ResultFormatError, match=r"x\.json: not a JSON result file"):
        load(tmp_path / "x.json")


def _auto_pool_loader() -> DataLoader:
    """An "auto" pool that a test hook grows to 3 workers after 6 batches."""
    loader = DataLoader(Sleepy(), batch_size=4, num_workers="auto", max_workers=3)
    loader._pool_hook = lambda handed_out: 3 if handed_out >= 6 else None
    return loader


def test_an_auto_pool_is_profiled_as_auto_and_its_changes_are_shown(tmp_path: Path) -> None:
    result = profile(
        _auto_pool_loader, batches=30, warmup=2, probes=["stages", "cpu"], out_dir=tmp_path
    )
    history = result.probes["stages"].detail["worker_history"]
    assert [(h["from"], h["to"]) for h in history] == [(2, 3)]
    assert history[0]["reason"] == "forced by the pool hook"
    assert result.diagnosis.model  # the model ran on the pool the window ended with
    measured = [p for p in result.diagnosis.prediction if p.measured]
    assert [p.num_workers for p in measured] == [3]
    trace = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    pool = [e for e in trace if e.get("cat") == "pool"]
    assert [e["name"] for e in pool] == ["num_workers 2 -> 3"]
