"""Fixtures for the report tests: the saved profile and study, changed copies, hostile ones."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from loadtune.results import ProfileResult, TuneResult, load

DATA = Path(__file__).resolve().parents[1] / "data"
PROFILE = DATA / "profile_v1.json"
TUNE = DATA / "tune_v1.json"


@pytest.fixture(scope="session")
def profile() -> ProfileResult:
    """The fixture profile: a real run of a small pipeline, saved once (tests/data)."""
    return load(PROFILE)


@pytest.fixture(scope="session")
def profile_html(profile: ProfileResult) -> str:
    """The fixture profile's HTML page, drawn once for the tests that only read it."""
    from reports import html

    return html.render(profile)


def profile_data() -> dict[str, Any]:
    """The fixture's JSON, a fresh copy to change."""
    return json.loads(PROFILE.read_text())


def faster_copy(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as if the change had made it 1.6x faster with a fifth of the wait."""
    out = copy.deepcopy(data)
    m = out["measurement"]
    for key in ("samples_per_s", "samples_per_s_min", "samples_per_s_max", "batches_per_s"):
        m[key] *= 1.6
    m["stall_fraction"] = 0.12
    out["config"]["num_workers"] = 4
    summary = out["probes"]["stages"]["summary"]
    for key in [k for k in summary if k.startswith("wait_")]:
        summary[key] /= 5
    return out


@pytest.fixture
def faster() -> ProfileResult:
    """The fixture profile, changed by :func:`faster_copy`."""
    return ProfileResult.from_dict(faster_copy(profile_data()))


EVIL_TARGET = "<script>alert(1)</script>"
EVIL_FUNCTION = "<b>x</b>"
EVIL_FILE = '/tmp/"quoted"/<i>mod</i>.py'
EVIL_REASON = "ValueError: <img src=x onerror=alert(2)> & more"
EVIL_ROLE = "worker-<u>9</u>"


def evil_data() -> dict[str, Any]:
    """The fixture's JSON with markup in every place the user or the machine controls."""
    data = profile_data()
    data["target"] = EVIL_TARGET
    data["step"] = "<em>step</em>"
    data["machine"]["cpu_model"] = "<marquee>cpu</marquee>"
    data["artifacts"]["trace"] = "<a href='https://example.com'>trace</a>.json"
    data["diagnosis"]["explanation"] = "slow because <blink>reasons</blink>"
    data["diagnosis"]["recommendations"][0] = "try <code onclick=x>this</code>"
    top = data["probes"]["pyspy"]["detail"]["top"]["all"]
    top["self"][0]["function"] = EVIL_FUNCTION
    top["self"][0]["file"] = EVIL_FILE
    data["probes"]["gpu"]["reason"] = EVIL_REASON
    cpu = data["probes"]["cpu"]
    for s in cpu["series"]:
        if s["name"] == "worker-1_cpu_pct":
            s["name"] = f"{EVIL_ROLE}_cpu_pct"
    cpu["detail"]["processes"][2]["role"] = EVIL_ROLE
    return data


@pytest.fixture
def evil() -> ProfileResult:
    """A profile whose strings are all markup (see :func:`evil_data`)."""
    return ProfileResult.from_dict(evil_data())


@pytest.fixture(scope="session")
def tune() -> TuneResult:
    """The fixture study: a real autotune run on a small dataset (tests/data/tune_v1.py)."""
    return load(TUNE)


@pytest.fixture(scope="session")
def tune_html(tune: TuneResult) -> str:
    """The fixture study's HTML page, drawn once for the tests that only read it."""
    from reports import html

    return html.render(tune)


def tune_data() -> dict[str, Any]:
    """The study fixture's JSON, a fresh copy to change."""
    return json.loads(TUNE.read_text())


EVIL_TRIAL_REASON = "OSError: <script>alert('trial')</script> & <img src=x onerror=alert(3)>"


def evil_tune_data() -> dict[str, Any]:
    """The study fixture's JSON with markup in every string the user or the machine controls."""
    data = tune_data()
    data["target"] = EVIL_TARGET
    data["reason"] = "apply <b onmouseover=x>this</b>"
    data["step"] = "<em>step</em>"
    data["study_name"] = "<i>study</i>"
    data["stopped"] = "<marquee>stopped</marquee>"
    data["machine"]["cpu_model"] = "<blink>cpu</blink>"
    failed = next(t for t in data["trials"] if t["state"] == "failed")
    failed["reason"] = EVIL_TRIAL_REASON
    failed["source"] = "<u>sampler</u>"
    data["ab"]["reason"] = "<iframe src=x></iframe>"
    data["finalists"][0]["method"] = "<code onclick=x>t</code>"
    return data
