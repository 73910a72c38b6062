"""Collapsed stacks: parse py-spy's raw output, rank functions, write speedscope files.

Pure functions on text and plain data, apart from the py-spy probe that runs the recorders
(probes/pyspy.py), so that they can be tested on literal text and reused by a reader of a
saved profile. The raw format is described in NOTE [ py-spy recorder settings ].
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Frame",
    "Stacks",
    "parse_collapsed",
    "parse_frame",
    "rank_functions",
    "speedscope_document",
]

_SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"

Stacks = dict[tuple["Frame", ...], int]


@dataclass(frozen=True, slots=True)
class Frame:
    """One stack frame as py-spy names it.

    Attributes:
        function: The function's name (``<module>`` for module-level code).
        file: Its source file, "" when py-spy gave none.
        line: Its line (the function's first line under ``--function``), None if not given.
    """

    function: str
    file: str = ""
    line: int | None = None

    def to_dict(self) -> dict:
        """Plain-data form (JSON-ready)."""
        return {"function": self.function, "file": self.file, "line": self.line}

    @classmethod
    def from_dict(cls, data: dict) -> Frame:
        """Inverse of :meth:`to_dict`; ``file`` and ``line`` are optional."""
        return cls(data["function"], data.get("file", ""), data.get("line"))


def parse_frame(text: str) -> Frame:
    """Parse one collapsed-stack frame, ``function (file:line)``.

    Args:
        text: The frame as py-spy wrote it.

    Returns:
        The frame; ``file`` is "" and ``line`` None where the text has no location.

    Example:
        >>> parse_frame("load (/data/ds.py:12)")
        Frame(function='load', file='/data/ds.py', line=12)
        >>> parse_frame("<native>")
        Frame(function='<native>', file='', line=None)
    """
    text = text.strip()
    # The function name comes first and never holds " (", while a path may, so split at
    # the first " (" rather than the last.
    open_at = text.find(" (")
    if open_at > 0 and text.endswith(")"):
        name, location = text[:open_at], text[open_at + 2 : -1]
        file, sep, line = location.rpartition(":")
        if sep and line.isdigit():
            return Frame(name, file, int(line))
        return Frame(name, location, None)
    return Frame(text)


def parse_collapsed(text: str) -> Stacks:
    """Parse py-spy's raw output (collapsed stacks) into stack -> sample count.

    Args:
        text: Lines of ``root;...;leaf COUNT``; blank and malformed lines are skipped.

    Returns:
        Each distinct stack (root first) with its count; repeated stacks are summed.

    Example:
        >>> stacks = parse_collapsed("<module> (a.py:1);f (a.py:3) 5\\n")
        >>> stacks[(Frame("<module>", "a.py", 1), Frame("f", "a.py", 3))]
        5
    """
    stacks: Stacks = {}
    for raw in text.splitlines():
        # The count follows the last space; paths may hold spaces, counts never do.
        stack_text, sep, count_text = raw.strip().rpartition(" ")
        if not sep or not count_text.isdigit() or not stack_text:
            continue
        stack = tuple(parse_frame(f) for f in stack_text.split(";") if f.strip())
        if stack:
            stacks[stack] = stacks.get(stack, 0) + int(count_text)
    return stacks


def _rows(counts: Counter[Frame], samples: int, limit: int) -> list[dict]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].function, kv[0].file))
    return [
        {**frame.to_dict(), "samples": n, "share": n / samples if samples else 0.0}
        for frame, n in ranked[:limit]
    ]


def rank_functions(stacks: Stacks, limit: int = 20) -> dict[str, Any]:
    """Top functions by self time (the leaf frame) and total time (anywhere on the stack).

    Args:
        stacks: Stack -> sample count, as :func:`parse_collapsed` returns.
        limit: How many functions to keep in each list.

    Returns:
        ``{"samples": n, "self": rows, "total": rows}``; each row has ``function``,
        ``file``, ``line``, ``samples`` and ``share`` (a fraction of ``n``). A recursive
        function counts once per sample in ``total``.

    Example:
        >>> ranked = rank_functions({(Frame("main"), Frame("f")): 3, (Frame("main"),): 1})
        >>> ranked["self"][0]["function"], ranked["self"][0]["share"]
        ('f', 0.75)
        >>> ranked["total"][0]["function"], ranked["total"][0]["share"]
        ('main', 1.0)
    """
    self_counts: Counter[Frame] = Counter()
    total_counts: Counter[Frame] = Counter()
    samples = 0
    for stack, n in stacks.items():
        samples += n
        self_counts[stack[-1]] += n
        for frame in set(stack):
            total_counts[frame] += n
    return {
        "samples": samples,
        "self": _rows(self_counts, samples, limit),
        "total": _rows(total_counts, samples, limit),
    }


def speedscope_document(profiles: list[tuple[str, Stacks]], name: str = "loadtune") -> dict:
    """A speedscope file ("sampled" profiles, sample counts as weights).

    Args:
        profiles: (profile name, stacks) for each process, in display order.
        name: The document's name.

    Returns:
        The JSON-ready document, frames shared across profiles.

    Example:
        >>> doc = speedscope_document([("main", {(Frame("f", "a.py", 1),): 2})])
        >>> doc["profiles"][0]["samples"], doc["profiles"][0]["weights"]
        ([[0]], [2])
    """
    index: dict[Frame, int] = {}
    frames: list[dict] = []
    out: list[dict] = []
    for profile_name, stacks in profiles:
        samples: list[list[int]] = []
        weights: list[int] = []
        for stack, n in stacks.items():
            ids = []
            for frame in stack:
                if frame not in index:
                    index[frame] = len(frames)
                    entry: dict[str, Any] = {"name": frame.function}
                    if frame.file:
                        entry["file"] = frame.file
                    if frame.line is not None:
                        entry["line"] = frame.line
                    frames.append(entry)
                ids.append(index[frame])
            samples.append(ids)
            weights.append(n)
        out.append(
            {
                "type": "sampled",
                "name": profile_name,
                "unit": "none",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        )
    return {
        "$schema": _SPEEDSCOPE_SCHEMA,
        "shared": {"frames": frames},
        "profiles": out,
        "name": name,
        "activeProfileIndex": 0,
        "exporter": "loadtune probes.pyspy",
    }
