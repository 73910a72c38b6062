"""`loadtune report`, `loadtune compare`, and the report.html that `loadtune profile` writes.

`loadtune autotune`'s tune.html is checked where autotune's command line is (tests/test_tune.py).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import cli

from .conftest import PROFILE, TUNE, faster_copy, profile_data, tune_data


def test_report_prints_the_summary_and_writes_html(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.html"
    assert cli.main(["report", str(PROFILE), "--html", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "loadtune profile" in stdout and "914 samples/s" in stdout
    assert stdout.endswith(f"wrote {out}\n")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_report_draws_a_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tune.html"
    assert cli.main(["report", str(TUNE), "--html", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "loadtune autotune" in stdout and "apply: use num_workers=3, prefetch_factor=1" in stdout
    assert stdout.endswith(f"wrote {out}\n")
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<h1>Autotune of <code>pipeline.py:loader" in page
    assert cli.main(["report", str(TUNE), "--html", str(out), "--no-terminal"]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"


def test_compare_refuses_a_study(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["compare", str(PROFILE), str(TUNE)]) == 2
    assert capsys.readouterr().err == (
        f"loadtune: error: {TUNE}: compare takes two profiles, not a 'tune' result\n"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(schema=2), "unknown schema version 2 (this loadtune reads 1)"),
        (lambda d: d.pop("trials"), "missing field 'trials'"),
        (lambda d: d["trials"][3].pop("state"), "missing field 'trials[3].state'"),
        (lambda d: d["trials"][0].update(state="lost"), "trials[0].state is 'lost', not a trial"),
        (lambda d: d["ab"].pop("ratios"), "missing field 'ab.ratios'"),
        (lambda d: d["finalists"][1].pop("speedup"), "missing field 'finalists[1].speedup'"),
        (lambda d: d.update(verdict="maybe"), "verdict is 'maybe', not 'apply' or 'keep'"),
    ],
)
def test_a_bad_study_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: object, message: str
) -> None:
    data = tune_data()
    change(data)  # type: ignore[operator]
    bad = tmp_path / "tune.json"
    bad.write_text(json.dumps(data))
    page = tmp_path / "tune.html"
    assert cli.main(["report", str(bad), "--html", str(page)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"loadtune: error: {bad}: ")
    assert message in captured.err and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err and captured.out == ""
    assert not page.exists()


def test_report_without_html_prints_only_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", str(PROFILE)]) == 0
    stdout = capsys.readouterr().out
    assert "time per batch" in stdout and "wrote" not in stdout


def test_report_no_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    assert cli.main(["report", str(PROFILE), "--html", str(out), "--no-terminal"]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert out.exists()
    assert cli.main(["report", str(PROFILE), "--no-terminal"]) == 2
    assert capsys.readouterr().err == (
        "loadtune: error: nothing to do: --no-terminal without --html FILE\n"
    )


def test_compare_prints_the_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    after = tmp_path / "after.json"
    after.write_text(json.dumps(faster_copy(profile_data())))
    page = tmp_path / "cmp.html"
    assert cli.main(["compare", str(PROFILE), str(after), "--html", str(page)]) == 0
    lines = capsys.readouterr().out.splitlines()

    def row(metric: str) -> list[str]:
        return next(x for x in lines if x.strip().startswith(metric)).split()

    assert row("samples/s") == ["samples/s", "914", "1,463", "1.60x", "better"]
    assert row("data stall") == ["data", "stall", "69%", "12%", "0.17x", "better"]
    assert row("wait (mean)")[-2:] == ["0.20x", "better"]
    assert row("fetch (mean)")[-1] == "1.00x"
    assert row("num_workers") == ["num_workers", "2", "4"]
    assert lines[-1] == f"wrote {page}"
    assert "1.60x" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(schema=99), "unknown schema version 99"),
        (lambda d: d["measurement"].pop("stall_fraction"), "'measurement.stall_fraction'"),
        (lambda d: d.pop("target"), "missing field 'target'"),
        (lambda d: d.update(kind="nonsense"), "unknown result kind 'nonsense'"),
    ],
)
@pytest.mark.parametrize("command", ["report", "compare"])
def test_a_bad_result_file_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: object,
    message: str,
    command: str,
) -> None:
    data = profile_data()
    change(data)  # type: ignore[operator]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    argv = [command, str(bad)] if command == "report" else [command, str(PROFILE), str(bad)]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"loadtune: error: {bad}: ")
    assert message in captured.err and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err and captured.out == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "{missing}"], "cannot read"),
        (["report", str(PROFILE), "--html", "{tmp}/r.pdf"], "should end in .html"),
        (["report", str(PROFILE), "--html", "{tmp}/no/such/dir/r.html"], "cannot write"),
        (["compare", str(PROFILE), "{missing}"], "cannot read"),
    ],
)
def test_bad_paths_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    args = [a.format(tmp=tmp_path, missing=tmp_path / "missing.json") for a in argv]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("loadtune: error: ") and message in err and err.count("\n") == 1


def test_profile_writes_report_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "pipe.py"
    target.write_text(
        textwrap.dedent(
            """
            import torch
            dataset = torch.utils.data.TensorDataset(torch.zeros(400, 8))
            """
        )
    )
    out = tmp_path / "out"
    argv = [
        "profile",
        f"{target}:dataset",
        "--batch-size",
        "4",
        "--batches",
        "10",
        "--probes",
        "stages,cpu",
        "--no-terminal",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    stdout = capsys.readouterr().out
    assert stdout.rstrip().endswith(f", {out}/report.html")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f"<code>{target}:dataset</code>" in page and '<section id="timeline">' in page
