"""Renderers: one module per output, each a function of a saved result and nothing else.

``terminal.render(result)`` gives a rich renderable and ``terminal.render_text`` its plain
text; ``html.render(result)`` one self-contained HTML page. :func:`write` picks the renderer
by the file's suffix and writes atomically. Renderers read ``loadtune.results`` only; what
they say is in ``views`` and ``tuneviews`` (rows and sentences) and ``plotdata`` and
``tunedata`` (the numbers of figures). A result is a ProfileResult, a TuneResult, or a
``compare.Comparison`` of two profiles; each renderer dispatches on ``result.kind``, so a
new kind of result is one entry per renderer.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtune.errors import UsageError

__all__ = ["FORMATS", "KINDS", "write"]

#: The kinds of result every renderer draws (``result.kind``).
KINDS = ("profile", "compare", "tune")


def _html(result: Any) -> str:
    from . import html

    return html.render(result)


def _text(result: Any) -> str:
    from . import terminal

    return terminal.render_text(result)


#: Suffix -> renderer returning the file's text.
FORMATS: dict[str, Callable[[Any], str]] = {".html": _html, ".htm": _html, ".txt": _text}


def write(result: Any, path: str | os.PathLike) -> Path:
    """Render ``result`` in the format its suffix names and write it atomically.

    The text goes to a temporary file in the same folder, which is then renamed over
    ``path``: a reader sees the old file or the new one, never a part, and a failed render
    leaves ``path`` untouched.

    Args:
        result: A ProfileResult, a TuneResult, or a ``reports.compare.Comparison``.
        path: Where to write: ``.html`` (or ``.htm``) for the HTML page, ``.txt`` for the
            terminal summary as plain text (80 columns).

    Returns:
        The path written.

    Raises:
        UsageError: the suffix names no format.
        OSError: the file could not be written (the folder is missing, say).

    Example:
        >>> from loadtune.results import load
        >>> write(load("tests/data/profile_v1.json"), "/tmp/report.html")  # doctest: +SKIP
        PosixPath('/tmp/report.html')
    """
    p = Path(path)
    render = FORMATS.get(p.suffix.lower())
    if render is None:
        known = ", ".join(FORMATS)
        raise UsageError(f"cannot tell the report format of {str(p)!r}: use a suffix of {known}")
    text = render(result)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p
