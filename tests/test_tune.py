"""`loadtune autotune` on the command line: what it prints and writes, and bad input.

The rest of autotune is tested in tests/tune/, one file per module of loadtune/tune/.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from rich.console import Console

import cli
import loadtune
from loadtune.results import load
from reports import terminal

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


# -- the command line ------------------------------------------------------------------------


def _target(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.py"
    path.write_text(
        textwrap.dedent(
            """
            import time, torch

            class Sleepy(torch.utils.data.Dataset):
                def __len__(self): return 100000
                def __getitem__(self, i):
                    time.sleep(0.002)
                    return torch.zeros(8)

            dataset = Sleepy()
            """
        )
    )
    return path


def test_cli_autotune_prints_the_verdict_and_writes_its_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _target(tmp_path)
    out = tmp_path / "tuned.json"
    code = cli.main(
        [
            "autotune",
            f"{path}:dataset",
            "--batch-size",
            "4",
            "--space",
            "num_workers=0..2,prefetch_factor=2,persistent_workers=false",
            "--storage",
            f"sqlite:///{tmp_path / 'l.db'}",
            "--batches",
            "20",
            "--rounds",
            "2",
            "--finalists",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    result = load(tmp_path / "tune.json")
    # the terminal summary of the study first, then the files written
    summary = terminal.render_text(result, width=Console().width).splitlines()
    assert [x.rstrip() for x in stdout.splitlines()][: len(summary)] == summary
    assert f"wrote {out}, {tmp_path / 'tune.json'}, {tmp_path / 'tune.html'}\n" in stdout
    page = (tmp_path / "tune.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and f"<code>{path}:dataset</code>" in page
    assert f"    num_workers={result.tuned.num_workers}," in stdout
    assert f"loader = loadtune.apply({str(out)!r}, loader)" in stdout
    assert loadtune.config.read(out)[0] == result.tuned
    assert result.storage == f"sqlite:///{tmp_path / 'l.db'}" and result.study_name


@pytest.mark.parametrize(
    "args, message",
    [
        (["--space", "num_workers=0..x"], "space: num_workers='x' is not a whole number"),
        (["--storage", "loadtune.db"], "storage 'loadtune.db' is not a database URL"),
        (["--config", "missing.json"], "cannot read config 'missing.json'"),
        (["--memory-limit", "lots"], "memory limit 'lots' is not a size"),
        (["--out", "tuned.yaml"], "--out 'tuned.yaml': the file name should end in .json"),
        (["--rounds", "1"], "rounds must be >= 2"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    path = _target(tmp_path)
    code = cli.main(["autotune", f"{path}:dataset", "--storage", "none", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"loadtune: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "tune.json").exists()


def test_a_usage_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["autotune", "x.py:loader", "--patience", "-1"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "loadtune autotune: error: argument --patience: expected a number >= 0, got -1 "
        "(see loadtune autotune --help)\n"
    )


def test_an_unreachable_server_is_one_line_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _target(tmp_path)
    url = "postgresql://loadtune:secret@127.0.0.1:1/nothing"
    code = cli.main(["autotune", f"{path}:dataset", "--storage", url])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("loadtune: error: cannot open the trial storage 'postgresql+")
    assert "://loadtune:***@127.0.0.1:1/nothing': " in err
    assert "secret" not in err
