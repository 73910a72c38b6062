"""Every probe honours NOTE [ Probe contract ]: start, sample with a fake clock, stop.

One test over all probes: the result names the probe, is plain JSON data that survives a
round trip, says why when it is unavailable, and a pid that vanishes never makes sample()
raise.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loadtune.profiling import DEFAULT_PROBES, make_probes
from probes.base import Probe, ProbeResult, Watch
from probes.events import BatchEvent, EventLog


def _events(n: int, t0: float) -> EventLog:
    log = EventLog()
    for b in range(n):
        t = t0 + 0.1 * b
        log.append(
            BatchEvent(
                epoch=0,
                batch=b,
                worker_id=b % 2,
                pid=1,
                dispatch=t,
                fetch_start=t,
                fetch_end=t + 0.05,
                collate_end=t + 0.06,
                sent=t + 0.07,
                ready=t + 0.08,
                taken=t + 0.09,
                wait=0.02,
                nbytes=100,
                samples=4,
                pack=0.01,
                unpack=0.01,
            )
        )
    return log


@pytest.mark.parametrize("name", DEFAULT_PROBES)
def test_probe_contract(name: str) -> None:
    (probe,) = make_probes([name])
    assert isinstance(probe, Probe) and probe.name == name
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    pids = [child.pid]
    t0 = 1000.0
    watch = Watch(worker_pids=lambda: list(pids), events=_events(20, t0), options={})
    probe.start(watch)
    for k in range(5):
        probe.sample(t0 + 0.5 * k)
        if k == 2:  # the worker goes away between samples, as a crashed one does
            child.kill()
            child.wait()
            pids.clear()
    result = probe.stop()
    assert isinstance(result, ProbeResult) and result.name == name
    data = json.loads(json.dumps(result.to_dict()))
    assert ProbeResult.from_dict(data).to_dict() == data
    if not result.available:
        assert result.reason, f"{name} is unavailable without saying why"
        assert not result.summary, f"{name} reports numbers it did not measure"
