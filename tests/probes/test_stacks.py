"""Tests for probes.stacks: the collapsed-stack parser, ranking and speedscope output."""

from __future__ import annotations

from probes.stacks import (
    Frame,
    parse_collapsed,
    parse_frame,
    rank_functions,
    speedscope_document,
)

RAW = """\
<module> (/srv/train.py:1);main (/srv/train.py:10);load (/srv/my data/ds.py:4) 7
<module> (/srv/train.py:1);main (/srv/train.py:10) 2
<module> (/srv/train.py:1);main (/srv/train.py:10);fib (f.py:3);fib (f.py:3) 4
<module> (/srv/train.py:1);main (/srv/train.py:10);<native> 1
<module> (/srv/train.py:1);main (/srv/train.py:10);load (/srv/my data/ds.py:4) 3
<module> (nolineno.py);run (nolineno.py) 5

not a stack line
truncated;line (x.py:1) twelve
"""

MODULE = Frame("<module>", "/srv/train.py", 1)
MAIN = Frame("main", "/srv/train.py", 10)
LOAD = Frame("load", "/srv/my data/ds.py", 4)
FIB = Frame("fib", "f.py", 3)


def test_parse_frame_forms() -> None:
    assert parse_frame("load (/srv/my data/ds.py:4)") == LOAD
    assert parse_frame("<module> (nolineno.py)") == Frame("<module>", "nolineno.py", None)
    assert parse_frame("<native>") == Frame("<native>", "", None)
    assert parse_frame("f (C:\\code\\a.py:7)") == Frame("f", "C:\\code\\a.py", 7)
    assert Frame.from_dict(LOAD.to_dict()) == LOAD


def test_parse_collapsed_literal() -> None:
    stacks = parse_collapsed(RAW)
    assert stacks == {
        (MODULE, MAIN, LOAD): 10,  # two lines of the same stack are summed
        (MODULE, MAIN): 2,
        (MODULE, MAIN, FIB, FIB): 4,
        (MODULE, MAIN, Frame("<native>")): 1,
        (Frame("<module>", "nolineno.py"), Frame("run", "nolineno.py")): 5,
    }


def test_rank_functions_self_and_total() -> None:
    ranked = rank_functions(parse_collapsed(RAW), limit=3)
    assert ranked["samples"] == 22
    assert [(r["function"], r["samples"]) for r in ranked["self"]] == [
        ("load", 10),
        ("run", 5),
        ("fib", 4),
    ]
    assert ranked["self"][0] == {
        "function": "load",
        "file": "/srv/my data/ds.py",
        "line": 4,
        "samples": 10,
        "share": 10 / 22,
    }
    # Inclusive: main is on 17 of 22 stacks; recursive fib counts once per sample.
    assert [(r["function"], r["file"], r["samples"]) for r in ranked["total"]] == [
        ("<module>", "/srv/train.py", 17),
        ("main", "/srv/train.py", 17),
        ("load", "/srv/my data/ds.py", 10),
    ]
    assert rank_functions({})["self"] == []


def test_speedscope_document_literal() -> None:
    doc = speedscope_document(
        [("main (pid 1)", {(MODULE, MAIN): 2}), ("worker-0 (pid 2)", {(MODULE, Frame("x")): 3})]
    )
    assert doc["shared"]["frames"] == [
        {"name": "<module>", "file": "/srv/train.py", "line": 1},
        {"name": "main", "file": "/srv/train.py", "line": 10},
        {"name": "x"},
    ]
    assert doc["profiles"] == [
        {
            "type": "sampled",
            "name": "main (pid 1)",
            "unit": "none",
            "startValue": 0,
            "endValue": 2,
            "samples": [[0, 1]],
            "weights": [2],
        },
        {
            "type": "sampled",
            "name": "worker-0 (pid 2)",
            "unit": "none",
            "startValue": 0,
            "endValue": 3,
            "samples": [[0, 2]],
            "weights": [3],
        },
    ]
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
