"""The HTML page of a tuning study: the verdict, how the search went, the A/B tests, the config.

What is said comes from reports.tuneviews, the figures' numbers from reports.tunedata; the
optimisation history and the parameter importances are Optuna's own figures, drawn from a
study rebuilt in memory from the saved trials (``tunedata.study``), so the page is a
function of the saved JSON alone. ``reports.html.render`` calls :func:`render` for a
result of kind ``"tune"``.
"""

from __future__ import annotations

from typing import Any

from loadtune.results import TuneResult

from . import plots, tunedata, tuneviews, views
from .markup import (
    as_pair,
    data_table,
    document,
    esc,
    figure,
    grid,
    kv_table,
    not_measured,
    para,
    section,
)

__all__ = ["TUNE_SECTIONS", "render"]

#: (anchor, heading) of every section of a tune page, in order.
TUNE_SECTIONS = (
    ("summary", "Summary"),
    ("history", "Optimisation history"),
    ("importance", "Parameter importance"),
    ("grid", "Throughput by num_workers and prefetch_factor"),
    ("ab", "A/B rounds"),
    ("trials", "Trials"),
    ("config", "Tuned config"),
    ("system", "System"),
)


def render(result: TuneResult) -> str:
    """The tune page: every section of TUNE_SECTIONS, in order.

    Args:
        result: The study.

    Returns:
        The complete document.
    """
    # One rebuilt study serves both of Optuna's figures; none is needed without trials.
    study = tunedata.study(result) if result.trials else None
    sections = {
        "summary": lambda: _summary(result),
        "history": lambda: _history(result, study),
        "importance": lambda: _importance(result, study),
        "grid": lambda: _grid_section(result),
        "ab": lambda: _ab(result),
        "trials": lambda: _trials(result),
        "config": lambda: _config(result),
        "system": lambda: _system(result),
    }
    body = "".join(
        section(anchor, title, *as_pair(sections[anchor]())) for anchor, title in TUNE_SECTIONS
    )
    sub = f"{result.backend} DataLoader · {len(result.trials)} trials" + (
        f" · finished {result.created}" if result.created else ""
    )
    heading = f"<h1>Autotune of <code>{esc(result.target)}</code></h1>"
    return document(f"loadtune autotune: {result.target}", heading, sub, TUNE_SECTIONS, body)


def _summary(result: TuneResult) -> str:
    cards = "".join(
        f'<div class="card {esc(card.level)}"><div class="label">{esc(card.label)}</div>'
        f'<div class="value">{esc(card.value)}</div>'
        f'<div class="note">{esc(card.note)}</div></div>'
        for card in tuneviews.tune_cards(result)
    )
    level = "ok" if result.verdict == "apply" else ""
    out = (
        f'<p class="verdict"><span class="pill {level}">{esc(result.verdict)}</span> '
        f"{esc(result.reason)}</p>"
        f'<div class="cards">{cards}</div>'
    )
    if result.verdict == "apply":
        todo = (
            f"use {tuneviews.changed_text(result.tuned, result.incumbent)} "
            "(the snippet is under Tuned config)"
        )
    else:
        todo = "keep your current settings"
    return out + f'<div class="todo"><strong>Do this:</strong> {esc(todo)}</div>'


def _history(result: TuneResult, study: Any) -> str | tuple[str, str]:
    if not any(t.state == "complete" for t in result.trials):
        return not_measured("no trial completed, so there is no throughput to plot", "No history.")
    return (
        figure(
            plots.optuna_history(study),
            "Dots: each complete trial's samples/s, by trial number; line: the best so far. "
            "Pruned, failed and infeasible trials have no point (see Trials).",
        ),
        "How the search found faster settings, trial by trial (Optuna's figure).",
    )


def _importance(result: TuneResult, study: Any) -> str | tuple[str, str]:
    reason = tunedata.importance_reason(result)
    if reason is not None:
        return not_measured(f"Parameter importance is not computed: {reason}.", "No figure.")
    import optuna.importance

    if not hasattr(optuna.importance, "PedAnovaImportanceEvaluator"):
        return not_measured(
            "Parameter importance needs Optuna 3.6 or later (PED-ANOVA, which needs no "
            f"scikit-learn); this is Optuna {optuna.__version__}.",
            "No figure.",
        )
    svg, notes = plots.optuna_importances(study, optuna.importance.PedAnovaImportanceEvaluator())
    done = sum(t.state == "complete" for t in result.trials)
    caption = (
        f"PED-ANOVA over {done} complete trials: how much each setting's values differ "
        "between the fastest trials and the rest (shares sum to 1). With few trials it is "
        "a hint, not a measurement."
    )
    extra = "".join(para(f"Optuna: {note}", "small") for note in notes)
    return figure(svg, caption) + extra, "Which settings mattered for throughput."


def _grid_section(result: TuneResult) -> str | tuple[str, str]:
    data = tunedata.throughput_grid(result)
    if data is None:
        return not_measured("the study holds no trials", "Nothing to draw.")
    others = (
        f" Other settings varied too ({', '.join(data.others)}): a cell shows the best of them."
        if data.others
        else ""
    )
    return (
        figure(
            plots.throughput_grid(data),
            "Each measured pair's best complete samples/s; cells that never completed name "
            "their state; blank: not measured. Orange box: the tuned config; dashed: the "
            "current one. prefetch_factor 'none' is num_workers=0." + others,
        ),
        "Where throughput is, over the two settings that move it most.",
    )


def _ab(result: TuneResult) -> str | tuple[str, str]:
    data = tunedata.ab_rounds(result)
    if data is None:
        return not_measured(
            "no finalist could be compared with the current settings: " + result.reason,
            "No A/B test.",
        )
    table = data_table(
        ("candidate", "rounds", "speedup", "95% interval", "result"),
        tuneviews.finalist_rows(result),
        numeric=(1, 2, 3),
    )
    rounds = []
    finalists = result.finalists or ((result.ab,) if result.ab is not None else ())
    for ab in finalists:
        rounds.append(
            f"<h4>{esc(tuneviews.changed_text(ab.candidate, ab.incumbent))}</h4>"
            + data_table(
                ("round", "current", "candidate", "candidate / current"),
                tuneviews.round_rows(ab),
                numeric=(0, 1, 2, 3),
            )
            + para(f"{ab.reason.rstrip('.')}. Interval: {ab.method}.", "small")
        )
    return (
        figure(
            plots.ab_rounds(data),
            "Dots: each round's candidate/current samples/s; bar: the 95% interval of the "
            "speedup; diamond: the median. "
            + (
                "A candidate wins only when its whole interval lies right of the dashed line."
                if data.threshold is not None
                else "With a target rate, a candidate wins when its own 95% interval of "
                "samples/s lies above the rate (see each round's reason below)."
            ),
        )
        + table
        + "<h3>Rounds (samples/s)</h3>"
        + grid(*rounds),
        "Each finalist timed against the current settings in interleaved rounds (A B B A, "
        "B A A B, ...), so a drift in the machine's speed falls on both alike.",
    )


def _trials(result: TuneResult) -> str | tuple[str, str]:
    rows = tuneviews.trial_rows(result)
    if not rows:
        return not_measured("the study holds no trials", "No trials.")
    names = tuneviews.varying_settings(result)
    heads = ("#", *names, "state", "samples/s", "peak memory", "time", "source", "why")
    numeric = set(range(len(names) + 1)) | {len(names) + 2, len(names) + 3, len(names) + 4}
    head = "".join(
        f"<th{' class=num' if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(heads)
    )
    body = ""
    for r in rows:
        cells = (str(r.number), *r.settings, r.state, r.samples_per_s, r.memory, r.duration)
        tds = "".join(
            f"<td{' class=num' if i in numeric else ''}>{esc(c)}</td>" for i, c in enumerate(cells)
        )
        body += (
            f'<tr class="{esc(r.role)}">{tds}<td>{esc(r.source)}</td>'
            f'<td class="why">{esc(r.reason)}</td></tr>'
        )
    table = f'<table class="t trials"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return (
        table,
        "Every config the search measured, in trial order. Green: the tuned config; amber: "
        "the current one. Memory is what the loader added (all its processes, PSS).",
    )


def _config(result: TuneResult) -> str | tuple[str, str]:
    code = f'<pre class="snippet"><code>{esc(tuneviews.snippet(result))}</code></pre>'
    settings = kv_table((k, str(v)) for k, v in result.tuned.to_dict().items())
    return (
        grid(
            code
            + para(
                "Or keep everything else your loader has: loader = loadtune.apply(path, "
                "loader), with the path of the tuned config autotune wrote (--out, "
                "tuned.json by default).",
                "small",
            ),
            "<h3>Settings</h3>"
            + settings
            + "<h3>Searched</h3>"
            + kv_table(tuneviews.space_rows(result)),
        ),
        "The tuned settings as Python (select the text to copy it)."
        if result.verdict == "apply"
        else "Your current settings, which the study keeps.",
    )


def _system(result: TuneResult) -> str:
    return grid(
        "<h3>Machine</h3>" + kv_table(views.system_rows(result)),
        "<h3>This study</h3>" + kv_table(tuneviews.tune_run_rows(result)),
    )
