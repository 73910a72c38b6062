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
from loadtune.errors import UsageError
from loadtune.results import ProfileResult
from probes.base import ProbeResult
from reports import html as html_report
from reports import plotdata, plots, terminal
from reports.compare import Comparison

from .conftest import DATA, EVIL_FILE, EVIL_FUNCTION, EVIL_REASON, EVIL_ROLE, EVIL_TARGET

# What the fixture says, written out by hand (not computed with the code under test).
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


@pytest.mark.parametrize("suffix", RENDERERS)
def test_every_renderer_says_the_key_numbers(
    profile: ProfileResult, suffix: str, tmp_path: Path
) -> None:
    path = reports.write(profile, tmp_path / f"report{suffix}")
    seen = _plain(path.read_text(encoding="utf-8"), suffix)
    for fact in KEY_FACTS:
        assert fact in seen, f"{suffix}: {fact!r} missing"


@pytest.mark.parametrize("color_system", [None, "truecolor"])
def test_terminal_text_is_exact_at_80_columns(
    profile: ProfileResult, color_system: str | None
) -> None:
    console = Console(
        file=io.StringIO(), width=80, record=True, color_system=color_system, force_terminal=True
    )
    console.print(terminal.render(profile))
    lines = [line.rstrip() for line in console.export_text(clear=False).splitlines()]
    expected = (DATA / "profile_v1.txt").read_text(encoding="utf-8").splitlines()
    assert lines == expected
    assert max(len(line) for line in lines) <= 80
    styled = console.export_text(styles=True)
    assert "\x1b[1m" in styled  # bold keys either way: weight is not colour
    colour = re.search(r"\x1b\[(?:[\d;]*;)?(?:3[0-8]|9[0-7])[;m]", styled)
    assert colour is None or color_system is not None


def test_no_color_and_pipes_get_plain_text(
    profile: ProfileResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    Console(file=out, width=80, force_terminal=True).print(terminal.render(profile))
    assert "\x1b[3" not in out.getvalue() and "\x1b[9" not in out.getvalue()  # no colours
    monkeypatch.delenv("NO_COLOR")
    piped = io.StringIO()
    Console(file=piped, width=80).print(terminal.render(profile))  # not a TTY
    assert "\x1b[" not in piped.getvalue()
    expected = (DATA / "profile_v1.txt").read_text(encoding="utf-8")
    assert [x.rstrip() for x in piped.getvalue().splitlines()] == expected.splitlines()


def test_terminal_shows_markup_as_text(evil: ProfileResult) -> None:
    text = terminal.render_text(dataclasses.replace(evil, target="[bold]x[/] [/oops]"))
    assert "[bold]x[/] [/oops]" in text


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


def test_html_is_self_contained_with_every_section(profile_html: str) -> None:
    page = profile_html
    assert page.startswith("<!DOCTYPE html>")
    for banned in ("<script", "http://", "https://", "<link", "@import", "<iframe", "<img"):
        assert banned not in page
    assert re.findall(r"url\((?!#)", page) == []  # only references inside the page
    assert {"src", "srcset"}.isdisjoint(_parse(page).attrs)
    for anchor, title in html_report.PROFILE_SECTIONS:
        assert f'<section id="{anchor}"><h2>{html.escape(title)}</h2>' in page
    ids = _parse(page).ids
    assert len(ids) == len(set(ids))  # several figures in one page share no id
    assert page.count("<svg") == 9  # every figure the fixture can have


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


def test_unknown_kind_is_refused() -> None:
    class Other:
        kind = "tune"

    with pytest.raises(TypeError, match="'tune'"):
        html_report.render(Other())
    with pytest.raises(TypeError, match="'tune'"):
        terminal.render(Other())


def test_write_picks_by_suffix_and_is_atomic(
    profile: ProfileResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = reports.write(profile, tmp_path / "r.txt")
    assert text.read_text(encoding="utf-8") == (DATA / "profile_v1.txt").read_text("utf-8")
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
