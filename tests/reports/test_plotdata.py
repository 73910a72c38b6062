"""reports.plotdata: the numbers every figure draws, checked against the saved probes."""

from __future__ import annotations

import dataclasses

import pytest

from loadtune.results import ProfileResult
from probes.base import ProbeResult
from reports import plotdata
from reports.compare import Comparison


def _series(result: ProfileResult, probe: str, name: str) -> tuple[tuple, tuple]:
    s = next(s for s in result.probes[probe].series if s.name == name)
    return s.t, s.values


def test_timeline_is_the_waits_and_the_busy_intervals(profile: ProfileResult) -> None:
    data = plotdata.timeline(profile)
    stages = profile.probes["stages"]
    t, waits = _series(profile, "stages", "wait")
    assert data.window_s == stages.summary["window_s"]
    assert data.wait_t == t and data.wait_ms == tuple(w * 1e3 for w in waits)
    labels = [track.label for track in data.tracks]
    assert labels == ["waiting for data", "worker 0", "worker 1"]
    assert data.tracks[0].kind == "wait"
    # each wait spans [taken - wait, taken], clipped at the window's start
    expected = sorted((max(0.0, ti - w), min(w, ti)) for ti, w in zip(t, waits, strict=True))
    assert list(data.tracks[0].spans) == expected
    for track, key in zip(data.tracks[1:], ("0", "1"), strict=True):
        intervals = stages.detail["busy_intervals"][key]
        assert track.kind == "busy"
        assert list(track.spans) == [(s, e - s) for s, e in intervals]


def test_timeline_without_stages_is_none(profile: ProfileResult) -> None:
    gone = dataclasses.replace(
        profile, probes={**profile.probes, "stages": ProbeResult.unavailable("stages", "no")}
    )
    assert plotdata.timeline(gone) is None and plotdata.stage_bars(gone) is None


def test_stage_bars_are_the_means_with_p95_marks(profile: ProfileResult) -> None:
    data = plotdata.stage_bars(profile)
    s = profile.probes["stages"].summary
    order = ("wait", "queue", "fetch", "collate", "pack", "transport", "unpack")
    assert data.labels == order and data.unit == "ms" and data.highlight == "wait"
    (bars,) = data.series
    assert bars.values == tuple(s[f"{n}_mean_s"] * 1e3 for n in order)
    assert bars.marks == tuple(s[f"{n}_p95_s"] * 1e3 for n in order)


def test_worker_cpu_lines_per_role(profile: ProfileResult) -> None:
    data = plotdata.worker_cpu(profile)
    assert [line.label for line in data.lines] == ["main", "worker-0", "worker-1"]
    assert [line.dashed for line in data.lines] == [True, False, False]
    for line in data.lines:
        t, values = _series(profile, "cpu", f"{line.label}_cpu_pct")
        assert (line.x, line.y) == (t, values)
    machine = plotdata.machine_cpu(profile)
    assert (
        machine.ymax == 100 and machine.lines[0].y == _series(profile, "cpu", "system_cpu_pct")[1]
    )
    load = plotdata.load_average(profile)
    cores = profile.probes["cpu"].summary["cores"]
    assert load.lines[1].y == (cores, cores) and load.lines[1].dashed


def test_memory_in_mebibytes(profile: ProfileResult) -> None:
    data = plotdata.memory(profile)
    assert data.ylabel == "MiB"  # the total PSS peaks at ~209 MiB
    labels = [line.label for line in data.lines]
    assert labels == ["main USS", "worker-0 USS", "worker-1 USS", "total PSS", "/dev/shm used"]
    t, values = _series(profile, "memory", "worker-0_uss_bytes")
    assert data.lines[1].x == t and data.lines[1].y == tuple(v / 2**20 for v in values)


def test_memory_falls_back_to_rss_when_uss_was_read_only_a_few_times(
    profile: ProfileResult,
) -> None:
    probe = profile.probes["memory"]
    sparse = tuple(
        dataclasses.replace(s, t=s.t[:4], values=s.values[:4])
        if s.name.endswith("_uss_bytes")
        else s
        for s in probe.series
    )
    result = dataclasses.replace(
        profile,
        probes={**profile.probes, "memory": dataclasses.replace(probe, series=sparse)},
    )
    data = plotdata.memory(result)
    labels = [line.label for line in data.lines]
    assert labels == ["main RSS", "worker-0 RSS", "worker-1 RSS", "total PSS", "/dev/shm used"]
    t, values = _series(profile, "memory", "worker-0_rss_bytes")
    assert data.lines[1].x == t and data.lines[1].y == tuple(v / 2**20 for v in values)


def test_io_rates_and_iowait(profile: ProfileResult) -> None:
    rates = plotdata.io_rates(profile)
    assert [line.label for line in rates.lines] == ["main", "worker-0", "worker-1"]
    _, values = _series(profile, "io", "main_read_bytes_per_s")
    assert rates.ylabel == "KiB/s" and rates.lines[0].y == tuple(v / 2**10 for v in values)
    assert plotdata.iowait(profile).lines[0].y == _series(profile, "io", "iowait_pct")[1]


def test_prediction_marks_the_measured_point(profile: ProfileResult) -> None:
    curve = plotdata.prediction(profile)
    points = profile.diagnosis.prediction
    assert curve.workers == tuple(range(1, 9))
    assert curve.samples_per_s == tuple(p.samples_per_s for p in points)
    assert curve.bounds == tuple(p.bound for p in points)
    assert curve.measured_workers == 2 == profile.config.num_workers
    assert curve.measured_samples_per_s == profile.measurement.samples_per_s
    assert plotdata.prediction(dataclasses.replace(profile, diagnosis=None)) is None


def test_thin_keeps_spikes_with_max() -> None:
    x = [float(i) for i in range(1000)]
    y = [0.0] * 1000
    y[517] = 9.0
    tx, ty = plotdata.thin(x, y, limit=100, reduce=max)
    assert len(tx) == 100 and max(ty) == 9.0 and tx[-1] == 999.0
    assert plotdata.thin(x[:10], y[:10], limit=100) == (tuple(x[:10]), tuple(y[:10]))
    _, mean = plotdata.thin(x, [1.0, 3.0] * 500, limit=100)
    assert mean == (2.0,) * 100


def test_coalesce_closes_short_gaps() -> None:
    spans = [(3.0, 1.0), (0.0, 1.0), (1.25, 1.0)]  # binary fractions: exact sums
    assert plotdata.coalesce(spans, 0.5) == ((0.0, 2.25), (3.0, 1.0))
    assert plotdata.coalesce(spans, 0.125) == ((0.0, 1.0), (1.25, 1.0), (3.0, 1.0))


@pytest.mark.parametrize(
    "peak, unit", [(10, "B"), (4096, "KiB"), (300 * 2**20, "MiB"), (3 * 2**30, "GiB")]
)
def test_byte_scale(peak: float, unit: str) -> None:
    assert plotdata.byte_scale(peak)[1] == unit


def test_compare_stages_puts_a_beside_b(profile: ProfileResult, faster: ProfileResult) -> None:
    bars = plotdata.compare_stages(Comparison(profile, faster))
    assert [s.label for s in bars.series] == ["A", "B"]
    i = bars.labels.index("wait")
    a, b = bars.series[0].values[i], bars.series[1].values[i]
    assert b == pytest.approx(a / 5)


def test_timeline_marks_pool_changes_inside_the_window(profile: ProfileResult) -> None:
    stages = profile.probes["stages"]
    window = stages.summary["window_s"]
    history = [
        {"time_s": -0.5, "from": 1, "to": 2, "reason": "warm-up"},
        {"time_s": 1.25, "from": 2, "to": 3, "reason": "waits"},
        {"time_s": window + 1, "from": 3, "to": 2, "reason": "after the window"},
    ]
    stages = dataclasses.replace(stages, detail={**stages.detail, "worker_history": history})
    data = plotdata.timeline(dataclasses.replace(profile, probes={"stages": stages}))
    assert data.changes == ((1.25, "2→3"),)
    assert plotdata.timeline(profile).changes == ()
