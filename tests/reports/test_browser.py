"""The HTML report in a real browser: headless Chromium loads it, draws it, and logs no error.

Chromium is found on PATH (``chromium``, ``chromium-browser``, ``google-chrome``) or at
/usr/bin/chromium. Without it the test is skipped, except under ``CI=true``, where a
missing browser fails it: CI installs Chromium (.ci/run), so there it must run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reports import html as html_report

PAGE_TIMEOUT_S = 60  # a cold Chromium start on a busy CI machine takes a few seconds


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    reason = "Chromium is not installed (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must have it (.ci/run installs it)")
    pytest.skip(reason)


def _open(page: Path, shot: Path, profile_dir: Path) -> subprocess.CompletedProcess[str]:
    """Load ``page`` headless: the DOM on stdout, the console on stderr, a screenshot."""
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile_dir}",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            "--dump-dom",
            "--window-size=1200,3000",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT_S,
    )


def _console_errors(stderr: str) -> list[str]:
    # Chromium logs every console message (errors, uncaught exceptions, failed loads) as
    # "...:INFO:CONSOLE(...)" with --enable-logging=stderr.
    return [
        line
        for line in stderr.splitlines()
        if ":CONSOLE" in line or "Uncaught" in line or "net::ERR" in line
    ]


@pytest.mark.parametrize(
    "page_fixture, sections, figures",
    [
        ("profile_html", html_report.PROFILE_SECTIONS, 9),
        ("tune_html", html_report.TUNE_SECTIONS, 4),
    ],
)
def test_chromium_draws_the_report(
    request: pytest.FixtureRequest,
    page_fixture: str,
    sections: tuple[tuple[str, str], ...],
    figures: int,
    tmp_path: Path,
) -> None:
    import numpy as np
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(request.getfixturevalue(page_fixture), encoding="utf-8")
    shot = tmp_path / "shot.png"
    run = _open(page, shot, tmp_path / "chromium-profile")
    assert run.returncode == 0, run.stderr[-2000:]
    assert _console_errors(run.stderr) == []
    dom = run.stdout
    for anchor, title in sections:
        assert f'id="{anchor}"' in dom and f">{title}</h2>" in dom
    assert dom.count("<svg") == figures

    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 3000)
    rgb = np.asarray(image, dtype=np.uint32).reshape(-1, 3)
    colours = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    # neither the white of the cards nor the grey of the page
    drawn = 1.0 - np.isin(colours, [0xFFFFFF, 0xF5F5F5]).mean()
    assert len(np.unique(colours)) > 50, "the page looks blank"
    assert drawn > 0.05, f"only {drawn:.1%} of the page is drawn"
    # the orange app bar across the top
    r, g, b = image.getpixel((600, 10))
    assert r > 200 and 90 < g < 150 and b < 60


def test_console_errors_are_caught(tmp_path: Path) -> None:
    # The check above must be able to fail: a page with a script error is reported.
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><p>x</p><script>console.error('boom'); nope();</script>")
    run = _open(page, tmp_path / "bad.png", tmp_path / "chromium-profile")
    errors = _console_errors(run.stderr)
    assert any("boom" in line for line in errors)
    assert any("Uncaught ReferenceError" in line for line in errors)


def test_a_missing_browser_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must have it"):
        _chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        _chromium()
