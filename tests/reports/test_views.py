"""reports.views, tables and compare: what is said about a result, before any layout."""

from __future__ import annotations

import dataclasses

import pytest

from loadtune.results import ProfileResult
from probes.base import ProbeResult
from reports import compare, tables, views


@pytest.mark.parametrize(
    "key, value, text",
    [
        ("wait_s", 0.0119, "11.9 ms"),
        ("worker_s_per_batch", 0.0347, "34.7 ms"),
        ("read_bytes_per_s", 4300.0, "4.2 KiB/s"),
        ("samples_per_s", 913.9, "914/s"),
        ("peak_bytes", 3 * 2**20, "3.0 MiB"),
        ("worker_busy_fraction", 0.974, "97%"),
        ("worker_cpu_share", 0.004, "0.4%"),
        ("iowait_pct", 12.4, "12%"),
        ("pinned_gbps", 11.5, "11.50 GB/s"),
        ("cores", 2.0, "2"),
        ("score", 0.33214, "0.332"),
        ("anything", None, "n/a"),
    ],
)
def test_fmt_value_by_unit_suffix(key: str, value: float | None, text: str) -> None:
    assert views.fmt_value(key, value) == text


def test_fmt_cpus() -> None:
    assert views.fmt_cpus([5, 0, 1, 2]) == "0-2,5"
    assert views.fmt_cpus([]) == "none"


def test_summary_cards(profile: ProfileResult) -> None:
    cards = {c.label: c for c in views.summary_cards(profile)}
    assert list(cards) == ["throughput", "data stall", "time to first batch", "bottleneck"]
    assert cards["throughput"].value == "914 samples/s"
    assert cards["data stall"].value == "69%" and cards["data stall"].level == "bad"
    assert cards["time to first batch"].value == "130.1 ms"
    assert cards["bottleneck"].value == "I/O latency"
    assert cards["bottleneck"].note == profile.diagnosis.explanation


def test_evidence_lists_the_score_last(profile: ProfileResult) -> None:
    rows = views.evidence_rows(profile)
    assert rows[0] == ("worker busy fraction", "97%")
    assert rows[-1] == ("score", "0.332")


def test_probe_reason_tells_not_run_from_unavailable(profile: ProfileResult) -> None:
    assert views.probe_reason(profile, "cpu") is None
    assert views.probe_reason(profile, "gpu") == "torch 2.13.0+cpu was built without CUDA"
    missing = dataclasses.replace(profile, probes={"stages": profile.probes["stages"]})
    assert "not run" in views.probe_reason(missing, "cpu")
    assert views.worker_rows(missing) == [] and tables.cpu_rows(missing) == []
    assert views.unavailable(profile) == [("gpu", "torch 2.13.0+cpu was built without CUDA")]


def test_worker_rows_join_cpu_stages_and_memory(profile: ProfileResult) -> None:
    assert views.worker_rows(profile) == [
        ("main", "9584", "12%", "4%", "n/a", "10.6 MiB"),
        ("worker-0", "9592", "32%", "20%", "98%", "9.4 MiB"),
        ("worker-1", "9595", "31%", "19%", "95%", "9.3 MiB"),
    ]


def test_hot_functions(profile: ProfileResult) -> None:
    top = tables.hot_functions(profile, "all", "self", 2)
    assert [(f.function, f.where, f.samples) for f in top] == [
        ("Images.__getitem__", "pipeline.py:7", 296),
        ("Process._parse_smaps_rollup", "_pslinux.py:1886", 58),
    ]
    assert [g for g, _ in tables.hot_groups(profile)] == [
        "all",
        "main",
        "workers",
        "worker-0",
        "worker-1",
    ]
    assert tables.hot_functions(profile, "nobody") == []


def test_numa_and_gpu_tables(profile: ProfileResult) -> None:
    assert tables.numa_node_rows(profile) == [("0", "0-1", "7.2 GiB", "3.1 GiB")]
    assert tables.placement_rows(profile)[1] == ("worker-0", "9592", "0-1", "0", "node 0 100%")
    assert tables.gpu_rows(profile) == []  # unavailable here: the reason is shown instead
    gpu = ProbeResult(
        "gpu",
        summary={
            "batch_bytes": 2**20,
            "pageable_copy_s": 0.002,
            "pinned_copy_s": 0.001,
            "pageable_gbps": 0.52,
            "pinned_gbps": 1.05,
            "pinned_speedup": 2.0,
            "overlap_hidden_fraction": 0.9,
        },
        detail={"device": "H100", "cuda": "12.4"},
    )
    with_gpu = dataclasses.replace(profile, probes={**profile.probes, "gpu": gpu})
    assert tables.gpu_rows(with_gpu) == [
        ("device", "H100 (CUDA 12.4)"),
        ("batch", "1.0 MiB"),
        ("pageable copy", "2.0 ms (0.52 GB/s)"),
        ("pinned copy", "1.0 ms (1.05 GB/s)"),
        ("pinned speed-up", "2.00x"),
        ("copy hidden behind compute", "90% (side stream)"),
    ]


def test_compare_rows_give_b_over_a(profile: ProfileResult, faster: ProfileResult) -> None:
    c = compare.Comparison(profile, faster)
    rows = {r.metric: r for r in compare.compare_rows(c)}
    throughput = rows["samples/s"]
    assert throughput.ratio == pytest.approx(1.6) and throughput.ratio_text == "1.60x"
    assert (throughput.before, throughput.after, throughput.verdict) == ("914", "1,463", "better")
    stall = rows["data stall"]
    assert (stall.before, stall.after, stall.verdict) == ("69%", "12%", "better")
    assert rows["wait (mean)"].ratio == pytest.approx(0.2)
    assert rows["fetch (mean)"].ratio == pytest.approx(1.0) and rows["fetch (mean)"].verdict == ""
    assert (rows["num_workers"].before, rows["num_workers"].after) == ("2", "4")
    assert rows["num_workers"].ratio is None
    worse = {r.metric: r for r in compare.compare_rows(compare.Comparison(faster, profile))}
    assert worse["samples/s"].verdict == "worse"
    assert compare.compare_headline(c) == (
        "B runs at 1.60x the throughput of A (914 -> 1,463 samples/s); data stall 69% -> 12%"
    )


def _with_cache_and_pool(profile: ProfileResult) -> ProfileResult:
    """The fixture with a sample-cache probe and two pool-size changes (num_workers="auto")."""
    cache = ProbeResult(
        "cache",
        summary={
            "hits": 1234,
            "misses": 91,
            "hit_rate_pct": 93.132,
            "bytes_held": 512 * 2**20,
            "max_bytes": 2**30,
        },
    )
    stages = profile.probes["stages"]
    history = [
        {"time_s": -0.5, "from": 1, "to": 2, "reason": "warm-up: the consumer waited"},
        {"time_s": 1.25, "from": 2, "to": 3, "reason": "the consumer waited 40% of the time"},
    ]
    stages = dataclasses.replace(stages, detail={**stages.detail, "worker_history": history})
    return dataclasses.replace(profile, probes={**profile.probes, "stages": stages, "cache": cache})


def test_cache_line(profile: ProfileResult) -> None:
    assert views.cache_line(profile) is None  # no cache probe: nothing is said
    rich = _with_cache_and_pool(profile)
    text = "93.1% hits (1,234 of 1,325), 512.0 MiB held of 1.0 GiB"
    assert views.cache_line(rich) == text
    assert ("sample cache", text) in views.resource_rows(rich)
    cold = ProbeResult("cache", summary={"hits": 0, "misses": 0, "bytes_held": 0})
    empty = dataclasses.replace(profile, probes={**profile.probes, "cache": cold})
    assert views.cache_line(empty) == "no lookups in the window, 0 B held"
    off = ProbeResult.unavailable("cache", "the dataset is not a SharedCache")
    assert views.cache_line(dataclasses.replace(profile, probes={"cache": off})) is None


def test_pool_rows(profile: ProfileResult) -> None:
    assert views.pool_rows(profile) == []
    assert views.pool_rows(_with_cache_and_pool(profile)) == [
        ("-0.50 s", "1", "2", "warm-up: the consumer waited"),
        ("1.25 s", "2", "3", "the consumer waited 40% of the time"),
    ]


def test_cache_and_pool_in_both_renderers(profile: ProfileResult) -> None:
    from reports import html, terminal

    rich = _with_cache_and_pool(profile)
    text = terminal.render_text(rich)
    assert " sample cache       93.1% hits (1,234 of 1,325), 512.0 MiB held of 1.0 GiB" in text
    table = text[text.index("worker pool changes") :].splitlines()
    assert table[1].split() == ["at", "from", "to", "why"]
    assert table[3].split()[:3] == ["-0.50", "s", "1"]
    plain = terminal.render_text(profile)
    assert "sample cache" not in plain and "worker pool" not in plain
    page = html.render(rich)
    summary = page[page.index('<section id="summary">') : page.index('<section id="diagnosis">')]
    assert "sample cache: 93.1% hits (1,234 of 1,325), 512.0 MiB held of 1.0 GiB" in summary
    memory = page[page.index('<section id="memory">') : page.index('<section id="io">')]
    assert "sample cache: 93.1% hits" in memory
    workers = page[page.index('<section id="workers">') : page.index('<section id="cpu">')]
    assert "<td>the consumer waited 40% of the time</td>" in workers
    assert "Dashed orange lines: the worker pool changed size" in page
    assert "sample cache" not in html.render(profile)
