"""The command line: --version, --help, sysinfo, and exit codes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import cli
import loadtune

ROOT = Path(__file__).resolve().parents[1]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"loadtune {loadtune.__version__}\n"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "sysinfo" in capsys.readouterr().out


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["nonsense"])
    assert info.value.code == 2
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


def test_sysinfo_prints_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from loadtune import system

    assert cli.main(["sysinfo"]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        key = "numa nodes" if line.startswith("numa nodes") else line.split()[0]
        rows[key] = line[len(key) :].strip()
    assert list(rows) == [
        "cpu",
        "cores",
        "memory",
        "/dev/shm",
        "numa nodes",
        "python",
        "torch",
        "cuda",
    ]
    info = system.collect()
    assert rows["cores"].startswith(f"{info.logical_cores} logical")
    assert rows["torch"] == torch.__version__
    assert "GiB total" in rows["memory"] and "GiB total" in rows["/dev/shm"]
    if torch.cuda.is_available():
        assert rows["cuda"].startswith("available: ")
    else:
        assert rows["cuda"].startswith("not available: ")
    assert rows["numa nodes"].split(":")[0] == str(len(info.numa_nodes))


def test_usage_error_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def bad(args: object) -> int:
        raise loadtune.TargetError("no such file: 'x.py' (from TARGET 'x.py:loader')")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["sysinfo"].set_defaults(func=bad)
    assert cli.main(["sysinfo"]) == 2
    err = capsys.readouterr().err
    assert err == "loadtune: error: no such file: 'x.py' (from TARGET 'x.py:loader')\n"
    with pytest.raises(loadtune.TargetError):
        cli.main(["--debug", "sysinfo"])


def test_console_script_help_is_fast() -> None:
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "cli", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0 and "sysinfo" in out.stdout
    # not a speed test: it guards against importing optuna/matplotlib at start-up
    assert time.monotonic() - start < 30
