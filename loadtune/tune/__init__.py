"""autotune(): an Optuna study of LoaderConfigs, each timed by measure.py, and the verdict.

The only part of loadtune that imports optuna (``reports.tunedata`` does too, to draw
Optuna's figures from a saved study), and only inside functions (``import loadtune`` stays
fast). Its modules, by concern:

* ``space``: the search space (:class:`Dim`, :func:`parse_space`, :func:`build_space`,
  :func:`grid`, :func:`parse_memory`);
* ``study``: the Optuna storage and study, resuming and sharing it
  (NOTE [ Trials in storage ]);
* ``trial``: measuring one config (NOTE [ Loader memory ]);
* ``search``: seeding the study and the ask/tell loop, and when it stops;
* ``ab``: the A/B test of all the finalists against the incumbent in the same rounds;
* ``decide``: the finalists and the decision (NOTE [ Search and decision ]);
* ``output``: the tuned config file and the snippet (:func:`write_tuned`, :func:`snippet`);
* ``run``: :func:`autotune`, which runs them in that order.
"""

from __future__ import annotations

from .output import snippet, write_tuned
from .run import autotune
from .space import Dim, build_space, grid, parse_memory, parse_space

__all__ = [
    "Dim",
    "autotune",
    "build_space",
    "grid",
    "parse_memory",
    "parse_space",
    "snippet",
    "write_tuned",
]
