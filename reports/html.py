"""render(result) -> one self-contained HTML page: inline CSS, inline SVG, no script.

The page opens offline and from anywhere: nothing is fetched (no script, stylesheet, font
or image from elsewhere), the figures are SVG drawn by reports.plots, and everything that
came from the user or the machine (target, paths, exception text, function names, config
values) is escaped (reports.markup). Each kind of result has its page module
(``profile_page``, ``compare_page``, ``tune_page``); a new kind is a module and one entry
of ``_PAGES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import compare_page, profile_page, tune_page
from .compare_page import COMPARE_SECTIONS
from .profile_page import PROFILE_SECTIONS
from .tune_page import TUNE_SECTIONS

__all__ = ["COMPARE_SECTIONS", "PROFILE_SECTIONS", "TUNE_SECTIONS", "render"]


def render(result: Any) -> str:
    """The HTML page for a result (a ProfileResult, a TuneResult, or a Comparison of two).

    Args:
        result: Any object whose ``kind`` has a page here.

    Returns:
        The complete document, starting with ``<!DOCTYPE html>``.

    Raises:
        TypeError: there is no page for this kind of result.

    Example:
        >>> from loadtune.results import load
        >>> page = render(load("tests/data/profile_v1.json"))  # doctest: +SKIP
        >>> page.startswith("<!DOCTYPE html>")  # doctest: +SKIP
        True
    """
    kind = getattr(result, "kind", None)
    page = _PAGES.get(kind)
    if page is None:
        raise TypeError(f"no HTML report for a result of kind {kind!r}")
    return page(result)


_PAGES: dict[str, Callable[[Any], str]] = {
    "profile": profile_page.render,
    "compare": compare_page.render,
    "tune": tune_page.render,
}
