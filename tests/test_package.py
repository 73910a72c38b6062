"""The package's promises: a small public API, light imports, a fast --help, CI's exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import loadtune

ROOT = Path(__file__).resolve().parents[1]


def test_all_is_sorted_and_importable() -> None:
    assert loadtune.__all__ == sorted(loadtune.__all__)
    for name in loadtune.__all__:
        assert getattr(loadtune, name) is not None


def test_import_does_not_load_heavy_libraries() -> None:
    code = (
        "import sys, loadtune, cli; "
        "print(sorted(m for m in ('optuna', 'matplotlib', 'py_spy', 'rich') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_generic_subscript_and_isinstance() -> None:
    import torch

    alias = loadtune.DataLoader[torch.Tensor]
    assert alias.__origin__ is loadtune.DataLoader
    loader = loadtune.DataLoader(torch.utils.data.TensorDataset(torch.zeros(2)))
    assert isinstance(loader, torch.utils.data.DataLoader)


def _make_pytest(args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "pytest", f"PYTEST_ARGS={args}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )


@pytest.mark.slow
def test_make_pytest_fails_on_a_failing_test_and_prints_the_summary(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text(
        "def test_ok():\n    pass\n\ndef test_bad():\n    assert 0\n"
    )
    result = _make_pytest(f"-q -p no:cacheprovider --rootdir={tmp_path} {tmp_path}")
    assert result.returncode != 0
    assert "1 failed, 1 passed" in result.stdout


@pytest.mark.slow
def test_make_pytest_fails_when_nothing_is_collected(tmp_path: Path) -> None:
    result = _make_pytest(f"-q -p no:cacheprovider --rootdir={tmp_path} {tmp_path}")
    assert result.returncode != 0
    assert "no tests ran" in result.stdout


def test_ci_script_runs_make_test() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in script and "make test" in script
