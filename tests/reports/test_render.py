"""The renderers: every format says the key numbers; terminal text exact; HTML safe and whole."""

from __future__ import annotations

import dataclasses
import html
import io
import re
import stat
from html.parser import HTMLParser
from pathlib import Path

import pytest
from rich.console import Console

import reports
from loadtune.config import LoaderConfig
from loadtune.errors import UsageError
from loadtune.results import ProfileResult, TuneResult, load
from probes.base import ProbeResult
from reports import html as html_report
from reports import plotdata, plots, terminal
from reports.compare import Comparison

from .conftest import (
    DATA,
    EVIL_FILE,
    EVIL_FUNCTION,
    EVIL_REASON,
    EVIL_ROLE,
    EVIL_TARGET,
    EVIL_TRIAL_REASON,
    evil_tune_data,
)

# What the fixtures say, written out by hand (not computed with the code under test).
KEY_FACTS = (
    "914 samples/s",
    "57.1 batches/s",
    "69%",  # data stall
    "130.1 ms",  # time to first batch
    "11.9 ms",  # mean wait
    "34.1 ms",  # mean fetch
    "9592",  # worker-0's pid
    "Images.__getitem__",
    "75%",  # its share of py-spy's samples
    "busy 97% of the time but only 33% of that on a CPU",  # the verdict's explanation
    "set num_workers=6: predicted 2,387 samples/s against 914 now",
    "torch 2.13.0+cpu was built without CUDA",  # why the GPU probe has nothing
)
TUNE_FACTS = (
    "pipeline.py:loader",
    "446 samples/s",  # current: the median of the A/B's incumbent rounds (441, 446, 458)
    "1,295 samples/s",  # tuned: the median of the candidate's (1,278, 1,295, 1,330)
    "2.90x",  # the speedup
    "2.89x to 2.92x",  # its 95% interval
    "num_workers=3, prefetch_factor=1",  # what changes
    "1,236",  # trial 10's samples/s in the search
    "the loader used 219 MiB, over the 128 MiB limit",  # why trial 1 was infeasible
    "stopped after 8 of 24 batches at 875 samples/s",  # why trial 20 was pruned
    "while loading dataset index 0.",  # why trial 4 failed
    "14 trials",
    "chosen",  # the finalist that won
    "prefetch_factor=1,",  # the snippet's line
)
FACTS = {"profile": KEY_FACTS, "tune": TUNE_FACTS}
TEXTS = {"profile": "profile_v1.txt", "tune": "tune_v1.txt"}


def _plain(text: str, suffix: str) -> str:
    """What a reader sees: tags dropped and entities decoded (HTML), boxes dropped (text)."""
    if suffix in (".html", ".htm"):
        text = re.sub(r"<svg.*?</svg>", " ", text, flags=re.S)
        text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    text = re.sub(r"[│╭╮╰╯─]", " ", text)
    return " ".join(text.split())


# One suffix per renderer (.htm is another name for .html).
RENDERERS = sorted(
    {render: suffix for suffix, render in reversed(reports.FORMATS.items())}.values()
)


@pytest.mark.parametrize("kind", sorted(FACTS))
@pytest.mark.parametrize("suffix", RENDERERS)
def test_every_renderer_says_the_key_numbers(
    request: pytest.FixtureRequest, kind: str, suffix: str, tmp_path: Path
) -> None:
    path = reports.write(request.getfixturevalue(kind), tmp_path / f"report{suffix}")
    seen = _plain(path.read_text(encoding="utf-8"), suffix)
    for fact in FACTS[kind]:
        assert fact in seen, f"{kind} {suffix}: {fact!r} missing"


def test_every_kind_has_a_renderer_of_every_format() -> None:
    assert set(FACTS) | {"compare"} == set(reports.KINDS)


@pytest.mark.parametrize("kind", sorted(TEXTS))
@pytest.mark.parametrize("color_system", [None, "truecolor"])
def test_terminal_text_is_exact_at_80_columns(
    request: pytest.FixtureRequest, kind: str, color_system: str | None
) -> None:
    console = Console(
        file=io.StringIO(), width=80, record=True, color_system=color_system, force_terminal=True
    )
    console.print(terminal.render(request.getfixturevalue(kind)))
    lines = [line.rstrip() for line in console.export_text(clear=False).splitlines()]
    expected = (DATA / TEXTS[kind]).read_text(encoding="utf-8").splitlines()
    assert lines == expected
    assert max(len(line) for line in lines) <= 80
    styled = console.export_text(styles=True)
    assert "\x1b[1m" in styled  # bold keys either way: weight is not colour
    colour = re.search(r"\x1b\[(?:[\d;]*;)?(?:3[0-8]|9[0-7])[;m]", styled)
    assert colour is None or color_system is not None


@pytest.mark.parametrize("kind", sorted(TEXTS))
def test_no_color_and_pipes_get_plain_text(
    request: pytest.FixtureRequest, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = request.getfixturevalue(kind)
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    Console(file=out, width=80, force_terminal=True).print(terminal.render(result))
    assert "\x1b[3" not in out.getvalue() and "\x1b[9" not in out.getvalue()  # no colours
    monkeypatch.delenv("NO_COLOR")
    piped = io.StringIO()
    Console(file=piped, width=80).print(terminal.render(result))  # not a TTY
    assert "\x1b[" not in piped.getvalue()
    expected = (DATA / TEXTS[kind]).read_text(encoding="utf-8")
    assert [x.rstrip() for x in piped.getvalue().splitlines()] == expected.splitlines()


def test_terminal_shows_markup_as_text(evil: ProfileResult, tune: TuneResult) -> None:
    text = terminal.render_text(dataclasses.replace(evil, target="[bold]x[/] [/oops]"))
    assert "[bold]x[/] [/oops]" in text
    trials = list(tune.trials)
    trials[4] = dataclasses.replace(trials[4], reason="[red]boom[/red]")
    text = terminal.render_text(dataclasses.replace(tune, target="[b]t[/b]", trials=tuple(trials)))
    assert "[b]t[/b]" in text and "#4 failed       [red]boom[/red]" in text


def test_terminal_compare_fits_80_columns(profile: ProfileResult, faster: ProfileResult) -> None:
    text = terminal.render_text(Comparison(profile, faster, before_path="a.json"))
    assert max(len(line) for line in text.splitlines()) <= 80
    row = next(line for line in text.splitlines() if line.lstrip().startswith("samples/s"))
    assert row.split() == ["samples/s", "914", "1,463", "1.60x", "better"]


class _Tags(HTMLParser):
    """Every tag and attribute name in a document."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)
        self.ids.extend(value or "" for name, value in attrs if name == "id")


def _parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    return parser


def test_html_escapes_everything_from_the_user(evil: ProfileResult) -> None:
    page = html_report.render(evil)
    assert EVIL_TARGET not in page and html.escape(EVIL_TARGET) in page
    assert EVIL_FUNCTION not in page and html.escape(EVIL_FUNCTION) in page
    assert html.escape(EVIL_FILE, quote=True) in page  # the file, in a title attribute
    assert html.escape(EVIL_REASON) in page
    for raw in (
        "<script",
        "<img",
        "<marquee",
        "<blink",
        "<em>",
        "<a href='",
        "<code onclick",
        "<i>",
    ):
        assert raw not in page
    parsed = _parse(page)
    assert not parsed.tags & {"script", "img", "marquee", "blink", "em", "i", "u", "iframe"}
    assert not {a for a in parsed.attrs if a.startswith("on")}
    assert "src" not in parsed.attrs


def test_svg_text_is_escaped(evil: ProfileResult) -> None:
    # The role name reaches a figure's legend: matplotlib writes it escaped.
    svg = plots.line_chart(plotdata.worker_cpu(evil))
    assert EVIL_ROLE not in svg and html.escape(EVIL_ROLE, quote=False) in svg
    assert EVIL_ROLE not in html_report.render(evil)
    chart = plotdata.LineChart("<b>t</b>", "<i>y</i>", (plotdata.Line("<s>x</s>", (0, 1), (1, 2)),))
    svg = plots.line_chart(chart)
    assert not {"b", "i", "s"} & _parse(svg).tags


@pytest.mark.parametrize(
    "page_fixture, sections, figures",
    [
        ("profile_html", html_report.PROFILE_SECTIONS, 9),  # every figure the fixture can have
        ("tune_html", html_report.TUNE_SECTIONS, 4),  # history, importance, grid, A/B
    ],
)
def test_html_is_self_contained_with_every_section(
    request: pytest.FixtureRequest,
    page_fixture: str,
    sections: tuple[tuple[str, str], ...],
    figures: int,
) -> None:
    page = request.getfixturevalue(page_fixture)
    assert page.startswith("<!DOCTYPE html>")
    for banned in ("<script", "http://", "https://", "<link", "@import", "<iframe", "<img"):
        assert banned not in page
    assert re.findall(r"url\((?!#)", page) == []  # only references inside the page
    assert {"src", "srcset"}.isdisjoint(_parse(page).attrs)
    for anchor, title in sections:
        assert f'<section id="{anchor}"><h2>{html.escape(title)}</h2>' in page
    ids = _parse(page).ids
    assert len(ids) == len(set(ids))  # several figures in one page share no id
    assert page.count("<svg") == figures


def test_unavailable_probes_show_their_reason(profile: ProfileResult) -> None:
    probes = dict(profile.probes)
    probes["cpu"] = ProbeResult.unavailable("cpu", "cpu says <no>")
    probes["pyspy"] = ProbeResult.unavailable("pyspy", "py-spy needs ptrace")
    del probes["memory"], probes["io"], probes["numa"]
    page = html_report.render(dataclasses.replace(profile, probes=probes))

    def section(anchor: str) -> str:
        return re.search(rf'<section id="{anchor}">.*?</section>', page, re.S).group(0)

    for anchor in ("workers", "cpu"):
        assert "Not measured." in section(anchor) and "cpu says &lt;no&gt;" in section(anchor)
        assert "<svg" not in section(anchor)
    for anchor in ("memory", "io", "numa"):
        assert "this probe was not run" in section(anchor) and "<svg" not in section(anchor)
    assert "py-spy needs ptrace" in section("hot")
    assert "torch 2.13.0+cpu was built without CUDA" in section("gpu")
    assert "cpu says &lt;no&gt;" in section("summary")  # listed under "not measured"
    assert "<svg" in section("timeline") and "<svg" in section("stages")


def test_compare_page(profile: ProfileResult, faster: ProfileResult) -> None:
    page = html_report.render(Comparison(profile, faster))
    for anchor, title in html_report.COMPARE_SECTIONS:
        assert f'<section id="{anchor}"><h2>{html.escape(title)}</h2>' in page
    seen = _plain(page, ".html")
    assert "samples/s 914 1,463 1.60x better" in seen
    assert "data stall 69% 12% 0.17x better" in seen


def test_tune_html_escapes_everything_from_the_user() -> None:
    page = html_report.render(TuneResult.from_dict(evil_tune_data()))
    assert EVIL_TARGET not in page and html.escape(EVIL_TARGET) in page
    assert EVIL_TRIAL_REASON not in page and html.escape(EVIL_TRIAL_REASON) in page
    for raw in ("<script", "<img", "<iframe", "<b on", "<em>", "<i>", "<u>", "<marquee", "<blink"):
        assert raw not in page
    parsed = _parse(page)
    assert not parsed.tags & {"script", "img", "iframe", "b", "em", "i", "u", "marquee", "blink"}
    assert not {a for a in parsed.attrs if a.startswith("on")}
    assert "src" not in parsed.attrs


def _section(page: str, anchor: str) -> str:
    found = re.search(rf'<section id="{anchor}">.*?</section>', page, re.S)
    assert found is not None, anchor
    return found.group(0)


def test_tune_page_sections_say_what_they_show(tune: TuneResult, tune_html: str) -> None:
    seen = {
        anchor: _plain(_section(tune_html, anchor), ".html")
        for anchor, _ in html_report.TUNE_SECTIONS
    }
    assert f"apply {tune.reason}" in seen["summary"]  # the verdict and why, in words
    assert "Do this: use num_workers=3, prefetch_factor=1" in seen["summary"]
    assert "PED-ANOVA over 6 complete trials" in seen["importance"]
    # the snippet is selectable text in a <pre>, the same as the terminal's
    snippet = re.search(r'<pre class="snippet"><code>(.*?)</code></pre>', tune_html, re.S)
    assert html.unescape(snippet.group(1)).startswith("from loadtune import DataLoader\n\n")
    assert "    num_workers=3,\n    prefetch_factor=1,\n" in html.unescape(snippet.group(1))
    # the trials table marks the tuned and the current config's rows
    assert '<tr class="tuned"><td class=num>10</td>' in tune_html
    assert '<tr class="incumbent"><td class=num>0</td>' in tune_html
    assert "1 to 4, log scale" in seen["config"]  # the space searched
    assert "AMD EPYC" in seen["system"] and "128.0 MiB" in seen["system"]  # the memory limit
    rounds = seen["ab"]
    assert "1 441 1,278 2.90x 2 446 1,295 2.90x 3 458 1,330 2.91x" in rounds


def test_tune_page_without_importance_says_why(tune: TuneResult) -> None:
    # Two complete trials that differ in one setting only: nothing to rank.
    keep = {0, 2}  # num_workers 1 and 2, both with prefetch_factor=2
    trials = tuple(t for t in tune.trials if t.state != "complete" or t.number in keep)
    page = html_report.render(dataclasses.replace(tune, trials=trials))
    importance = _section(page, "importance")
    assert "<svg" not in importance
    assert "only num_workers took more than one value in the complete trials" in importance
    assert "<svg" in _section(page, "history") and "<svg" in _section(page, "grid")


def test_a_study_that_keeps_and_has_no_ab_still_renders(tune: TuneResult, tmp_path: Path) -> None:
    failed = tuple(t for t in tune.trials if t.state != "complete")
    result = dataclasses.replace(
        tune,
        trials=failed,
        ab=None,
        finalists=(),
        verdict="keep",
        tuned=tune.incumbent,
        reason="keep the current settings: no trial completed",
    )
    page = html_report.render(result)
    for anchor, text in (
        ("history", "no trial completed, so there is no throughput to plot"),
        ("importance", "it needs at least 2 complete trials; this study has 0"),
        ("ab", "no finalist could be compared with the current settings"),
    ):
        assert "<svg" not in _section(page, anchor) and text in _section(page, anchor)
    assert "<svg" in _section(page, "grid")  # the failed cells are still placed
    text = terminal.render_text(result)
    assert "keep: your current settings stay" in text
    assert "n/a samples/s" in text and "A/B            none: no finalist could be compared" in text
    assert "A/B tests against" not in text


def test_rendering_a_study_leaves_no_trace(
    tune: TuneResult, capfd: pytest.CaptureFixture[str]
) -> None:
    import matplotlib
    from matplotlib import pyplot as plt

    before = dict(matplotlib.rcParams)
    figures = plt.get_fignums()
    html_report.render(tune)
    assert plt.get_fignums() == figures  # Optuna's pyplot figures are closed
    assert dict(matplotlib.rcParams) == before  # and its ggplot style undone
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # no "A new study created" log line, no warning


def test_unknown_kind_is_refused() -> None:
    class Other:
        kind = "nonsense"

    with pytest.raises(TypeError, match="'nonsense'"):
        html_report.render(Other())
    with pytest.raises(TypeError, match="'nonsense'"):
        terminal.render(Other())


def test_write_picks_by_suffix_and_is_atomic(
    profile: ProfileResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = reports.write(profile, tmp_path / "r.txt")
    assert text.read_text(encoding="utf-8") == (DATA / "profile_v1.txt").read_text("utf-8")
    tune_text = reports.write(load(DATA / "tune_v1.json"), tmp_path / "t.txt")
    assert tune_text.read_text(encoding="utf-8") == (DATA / "tune_v1.txt").read_text("utf-8")
    tune_text.unlink()
    page = reports.write(profile, tmp_path / "r.HTML")
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert stat.S_IMODE(page.stat().st_mode) == 0o644
    with pytest.raises(UsageError, match="report format of"):
        reports.write(profile, tmp_path / "r.pdf")

    def broken(result: object) -> str:
        raise RuntimeError("renderer failed")

    monkeypatch.setitem(reports.FORMATS, ".txt", broken)
    with pytest.raises(RuntimeError):
        reports.write(profile, tmp_path / "r.txt")
    assert text.read_text(encoding="utf-8").startswith("╭")  # the old file, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.HTML", "r.txt"]  # no temp file


def _sparse(profile: ProfileResult) -> ProfileResult:
    """What a torch DataLoader with only the stages probe gives: waits, no workers, no verdict."""
    stages = profile.probes["stages"]
    outside = ProbeResult(
        "stages",
        summary={k: v for k, v in stages.summary.items() if k.startswith(("wait_", "batch"))}
        | {"window_s": stages.summary["window_s"], "stall_fraction": 0.5},
        series=stages.series,
        detail={"mode": "external"},
    )
    return dataclasses.replace(
        profile,
        backend="torch",
        probes={"stages": outside},
        diagnosis=None,
        step=None,
        artifacts={},
    )


@pytest.mark.parametrize("suffix", RENDERERS)
def test_a_sparse_result_still_renders(profile: ProfileResult, suffix: str, tmp_path: Path) -> None:
    path = reports.write(_sparse(profile), tmp_path / f"r{suffix}")
    seen = _plain(path.read_text(encoding="utf-8"), suffix)
    assert "914 samples/s" in seen and "11.9 ms" in seen
    if suffix != ".txt":
        assert "only the consumer's waits are seen" in seen
        assert seen.count("this probe was not run") == 7  # cpu x2, memory, io, numa, gpu, py-spy
        assert "the result holds no diagnosis" in seen


@pytest.mark.parametrize(
    "varied, header",
    [
        (2, ["#", "workers", "prefetch", "state", "samples/s", "memory", "source"]),
        (4, ["#", "workers", "prefetch", "batch", "pin", "state", "samples/s", "memory"]),
        (5, ["#", "workers", "prefetch", "batch", "pin", "persist", "state", "samples/s"]),
    ],
)
def test_terminal_trials_fit_80_columns_however_many_settings_vary(
    tune: TuneResult, varied: int, header: list[str]
) -> None:
    trials = []
    for i, t in enumerate(tune.trials):
        settings = {
            "num_workers": 1 + i % 3,
            "prefetch_factor": 1 + i % 2,
            "batch_size": 4 * (1 + i % 2) if varied > 2 else 4,
            "pin_memory": i % 2 == 0 if varied > 3 else False,
            "persistent_workers": i % 3 == 0 if varied > 4 else False,
        }
        trials.append(dataclasses.replace(t, config=LoaderConfig(**settings)))
    text = terminal.render_text(dataclasses.replace(tune, trials=tuple(trials)))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[lines.index("trials") + 1].split() == header
