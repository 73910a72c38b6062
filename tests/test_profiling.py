"""profile() and `loadtune profile`: what is measured, what is written, bad input."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
import torch

import cli
from loadtune import DataLoader
from loadtune.errors import ResultFormatError, TargetError
from loadtune.profiling import profile
from loadtune.results import ProfileResult, load, save


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
