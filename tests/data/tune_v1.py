"""Makes tests/data/tune_v1.json: a small real autotune run, for the report tests.

Run by hand when the fixture must change (``.venv/bin/python tests/data/tune_v1.py``). The
run is real, so every run differs: read the new tune_v1.json, write its terminal summary to
tune_v1.txt (``reports.write(load(json_path), "tests/data/tune_v1.txt")``) and check it,
and update the facts the tests in tests/reports read off the file by hand.

The dataset sleeps 2 ms per sample, so more workers are faster, and it is built to give
every kind of trial: with 5 workers it raises (failed trials), with 4 each worker holds
48 MiB of its own (over the 128 MiB memory limit: infeasible), and slow configs are pruned.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

PIPELINE = '''
import time

import numpy as np
import torch

from loadtune import DataLoader


class Sleepy(torch.utils.data.Dataset):
    """2 ms of waiting per sample; fails with 5 workers, holds 48 MiB each with 4."""

    def __init__(self) -> None:
        self.held = None

    def __len__(self) -> int:
        return 100_000

    def __getitem__(self, i: int) -> torch.Tensor:
        info = torch.utils.data.get_worker_info()
        workers = info.num_workers if info is not None else 0
        if workers == 5:
            raise OSError(f"too many open files: cannot share the handle among {workers} workers")
        if workers == 4 and self.held is None:
            self.held = np.ones(48 << 20, dtype=np.uint8)  # touched: the worker's own pages
        time.sleep(0.002)
        return torch.zeros(8)


loader = DataLoader(Sleepy(), batch_size=4, num_workers=1)
'''


def main() -> int:
    """Run the study in a temporary folder and copy its tune.json here."""
    sys.path.insert(0, str(ROOT))
    from loadtune import autotune

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pipeline.py").write_text(textwrap.dedent(PIPELINE))
        os.chdir(tmp)
        result = autotune(
            "pipeline.py:loader",
            space="num_workers=0..5,prefetch_factor=1..4,persistent_workers=false",
            trials=14,
            memory_limit="128MiB",
            storage=None,
            seed=1,
            batches=24,
            warmup=3,
            step_ms=2,
            rounds=4,
            finalists=2,
            out=Path(tmp) / "tuned.json",
        )
        shutil.copy(Path(tmp) / "tune.json", HERE / "tune_v1.json")
    states = [t.state for t in result.trials]
    print({s: states.count(s) for s in dict.fromkeys(states)}, result.verdict, result.reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
