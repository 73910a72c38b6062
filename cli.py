"""The ``loadtune`` command line: argument parsing and wiring only.

Bad input prints one line naming the problem and exits 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import loadtune
from loadtune.errors import UsageError


def _gib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**30:.1f} GiB"


def _sysinfo(args: argparse.Namespace) -> int:
    from loadtune import system

    info = system.collect()
    rows = [
        ("cpu", info.cpu_model),
        (
            "cores",
            f"{info.logical_cores} logical, {info.physical_cores or '?'} physical, "
            f"{info.usable_cores} usable by this process",
        ),
        ("memory", f"{_gib(info.memory_total)} total, {_gib(info.memory_available)} available"),
        ("/dev/shm", f"{_gib(info.shm_total)} total, {_gib(info.shm_free)} free"),
        (
            "numa nodes",
            f"{len(info.numa_nodes)}: "
            + "; ".join(
                f"node {n.id} cpus {system.format_cpulist(n.cpus)}" for n in info.numa_nodes
            )
            if info.numa_nodes
            else "not reported by this system",
        ),
        ("python", info.python),
        ("torch", info.torch),
        (
            "cuda",
            "available: " + ", ".join(info.cuda_devices)
            if info.cuda_available
            else f"not available: {info.cuda_reason}",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def _add_loader_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "loader (a Dataset target is wrapped with these; others are overridden)"
    )
    g.add_argument("--batch-size", type=_positive_int, help="samples per batch")
    g.add_argument("--num-workers", type=_positive_int, help="worker processes")
    g.add_argument("--prefetch-factor", type=_positive_int, help="batches in flight per worker")
    g.add_argument("--shuffle", action="store_true", help="shuffle a Dataset target")
    g.add_argument(
        "--backend",
        choices=("auto", "loadtune", "torch"),
        default="auto",
        help="whose DataLoader runs: the target's own (auto), or rebuilt as loadtune's or torch's",
    )


def _profile(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from loadtune.profiling import DEFAULT_PROBES, profile
    from loadtune.targets import load_object, resolve
    from reports import terminal

    step = load_object(args.step) if args.step else None
    if step is not None and not callable(step):
        raise UsageError(f"--step {args.step!r} is a {type(step).__name__}, not a callable")
    probes = (
        [p.strip() for p in args.probes.split(",") if p.strip()] if args.probes else DEFAULT_PROBES
    )
    # resolve first, so that a bad TARGET is one line before anything else is printed
    factory = resolve(
        args.target,
        backend=args.backend,
        shuffle=args.shuffle,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        prefetch_factor=args.prefetch_factor,
    )
    err = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("starting the loader", total=args.batches)

        def progress(phase: str, done: int) -> None:
            if phase == "window":
                bar.update(task, description="measuring", completed=done)
            elif phase == "start":
                bar.update(task, description="warming up")

        result = profile(
            factory,
            batches=args.batches,
            seconds=args.seconds,
            warmup=args.warmup,
            step_ms=args.step_ms,
            step=step,
            probes=probes,
            interval=args.interval,
            out_dir=args.out,
            backend=args.backend,
            shuffle=args.shuffle,
            progress=progress,
        )
    if not args.no_terminal:
        Console().print(terminal.render(result))
    report = _write_report(result, Path(args.out) / "report.html")
    print(
        f"wrote {args.out}/profile.json"
        + (f", {args.out}/trace.json" if "trace" in result.artifacts else "")
        + f", {report}"
    )
    return 0


def _write_report(result: object, path: Path) -> Path:
    """reports.write, with a file that cannot be written reported as bad input (one line)."""
    import reports

    try:
        return reports.write(result, path)
    except OSError as exc:
        raise UsageError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc


def _html_path(text: str | None) -> Path | None:
    if text is None:
        return None
    path = Path(text)
    if path.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--html {text!r}: the file name should end in .html")
    return path


def _load_drawable(path: str) -> object:
    """A saved result that the reports can draw (ResultFormatError for a bad file)."""
    import reports
    from loadtune.results import load

    result = load(path)
    if getattr(result, "kind", None) not in reports.KINDS:
        raise UsageError(f"{path}: no report for a {result.kind!r} result yet")
    return result


def _report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from reports import terminal

    html = _html_path(args.html)
    if args.no_terminal and html is None:
        raise UsageError("nothing to do: --no-terminal without --html FILE")
    result = _load_drawable(args.result)
    if not args.no_terminal:
        Console().print(terminal.render(result))
    if html is not None:
        print(f"wrote {_write_report(result, html)}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from rich.console import Console

    from loadtune.results import ProfileResult
    from reports import terminal
    from reports.compare import Comparison

    html = _html_path(args.html)
    before, after = _load_drawable(args.before), _load_drawable(args.after)
    for path, result in ((args.before, before), (args.after, after)):
        if not isinstance(result, ProfileResult):
            raise UsageError(f"{path}: compare takes two profiles, not a {result.kind!r} result")
    comparison = Comparison(before, after, before_path=args.before, after_path=args.after)
    Console().print(terminal.render(comparison))
    if html is not None:
        print(f"wrote {_write_report(comparison, html)}")
    return 0


def _autotune(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from loadtune.config import apply_snippet
    from loadtune.config import read as read_config
    from loadtune.targets import load_object, resolve
    from loadtune.tune import autotune, parse_memory, parse_space
    from reports import terminal

    out = Path(args.out)
    if out.suffix not in (".json", ".toml"):
        raise UsageError(f"--out {args.out!r}: the file name should end in .json or .toml")
    if not out.parent.is_dir():
        raise UsageError(f"--out {args.out!r}: no such folder {str(out.parent)!r}")
    space = args.space
    if space and space.startswith("@"):
        try:
            space = Path(space[1:]).read_text()
        except OSError as exc:
            raise UsageError(f"--space {args.space!r}: cannot read it: {exc.strerror}") from exc
    parse_space(space)  # bad input first, before anything runs
    limit = parse_memory(args.memory_limit)
    step = load_object(args.step) if args.step else None
    if step is not None and not callable(step):
        raise UsageError(f"--step {args.step!r} is a {type(step).__name__}, not a callable")
    factory = resolve(
        args.target,
        backend=args.backend,
        shuffle=args.shuffle,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        prefetch_factor=args.prefetch_factor,
    )
    if args.config:
        factory = replace(factory, baseline=read_config(args.config)[0])
    sizes = None
    if args.batch_sizes:
        try:
            sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--batch-sizes {args.batch_sizes!r}: expected 64,128,...") from None
    storage = None if args.storage.lower() in ("none", "memory") else args.storage
    err = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        total = args.trials or (None if args.time_budget else 20)
        task = bar.add_task("starting", total=total, best="")

        def progress(trial: object, config: object, rate: float | None, best: float | None) -> None:
            bar.update(
                task,
                advance=1,
                best=f"best {best:,.0f} samples/s" if best else "",
            )

        result = autotune(
            factory,
            backend=args.backend,
            max_workers=args.max_workers,
            batch_sizes=sizes,
            space=space,
            trials=args.trials,
            time_budget=args.time_budget,
            target_rate=args.target_rate,
            memory_limit=limit,
            min_gain=args.min_gain,
            storage=storage,
            study_name=args.study,
            resume=args.resume,
            seed=args.seed,
            batches=args.batches,
            warmup=args.warmup,
            step_ms=args.step_ms,
            step=step,
            progress=progress,
            finalists=args.finalists,
            patience=args.patience or None,
            rounds=args.rounds,
            out=out,
            on_phase=lambda text: bar.update(task, description=text),
        )
    # The summary says the verdict, the A/B test, every trial and the snippet. The page is
    # tune.html, not report.html: a profile written to the same folder keeps its report.
    Console().print(terminal.render(result))
    report = _write_report(result, out.parent / "tune.html")
    print(f"wrote {out}, {out.parent / 'tune.json'}, {report}")
    print(apply_snippet(str(out)), end="")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error said in one line (the usage is behind ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = _Parser(
        prog="loadtune",
        description="Find out why a PyTorch input pipeline is slow, and make it faster.",
    )
    parser.add_argument("--version", action="version", version=f"loadtune {loadtune.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("sysinfo", help="print cores, memory, /dev/shm, NUMA nodes, torch and CUDA")
    p.set_defaults(func=_sysinfo)

    p = sub.add_parser(
        "profile",
        help="measure a loader: throughput, stall, where the time goes, the bottleneck",
        description="Run TARGET's loader under the probes and name what holds it back.",
    )
    p.add_argument(
        "target",
        metavar="TARGET",
        help="path/to/file.py:name or package.module:name: a DataLoader, a Dataset, or a "
        "callable returning one",
    )
    p.add_argument("--batches", type=_positive_int, default=200, help="batches to measure")
    p.add_argument("--seconds", type=_positive_float, help="measure for this long instead")
    p.add_argument("--warmup", type=_positive_int, default=5, help="batches before measuring")
    p.add_argument("--step-ms", type=_positive_float, help="simulated training step per batch")
    p.add_argument("--step", metavar="MODULE:FN", help="a function called on every batch")
    p.add_argument("--probes", help="comma-separated probes (default: all)")
    p.add_argument("--interval", type=_positive_float, default=0.1, help="seconds between samples")
    p.add_argument(
        "--out",
        default="loadtune-out",
        help="folder for profile.json, trace.json and report.html",
    )
    p.add_argument("--no-terminal", action="store_true", help="do not print the summary")
    _add_loader_options(p)
    p.set_defaults(func=_profile)

    p = sub.add_parser(
        "report",
        help="draw a saved result again: the terminal summary and/or the HTML report",
        description="Draw RESULT.json (written by loadtune profile or autotune) again.",
    )
    p.add_argument(
        "result", metavar="RESULT.json", help="a saved result: profile.json or tune.json"
    )
    p.add_argument("--html", metavar="FILE", help="write the HTML report to FILE (.html)")
    p.add_argument("--no-terminal", action="store_true", help="do not print the summary")
    p.set_defaults(func=_report)

    p = sub.add_parser(
        "compare",
        help="compare two profiles: throughput, stall and each stage, with ratios B/A",
        description="Compare profile A (before) with profile B (after).",
    )
    p.add_argument("before", metavar="A.json", help="the profile before the change")
    p.add_argument("after", metavar="B.json", help="the profile after the change")
    p.add_argument("--html", metavar="FILE", help="also write the comparison as HTML (.html)")
    p.set_defaults(func=_compare)

    p = sub.add_parser(
        "autotune",
        help="search loader settings with Optuna and A/B-test the best against the current ones",
        description="Search TARGET's loader settings, A/B-test the finalists against the "
        "current settings, and write the tuned config (apply it with loadtune.apply).",
    )
    p.add_argument(
        "target",
        metavar="TARGET",
        help="path/to/file.py:name or package.module:name: a DataLoader, a Dataset, or a "
        "callable returning one",
    )
    p.add_argument("--max-workers", type=_positive_int, help="most workers to try (2 x cores)")
    p.add_argument("--batch-sizes", metavar="64,128", help="batch sizes to try")
    p.add_argument(
        "--space",
        metavar="SPEC",
        help="fix or narrow settings: 'num_workers=0..8,prefetch_factor=2,batch_size=64|128', "
        "the same as JSON, or @file.json",
    )
    p.add_argument(
        "--trials",
        type=_positive_int,
        help="most trials in the study (default 20; it usually converges sooner)",
    )
    p.add_argument(
        "--patience",
        type=_positive_int,
        default=3,
        metavar="N",
        help="stop after N trials in a row bring no more than --min-gain (3; 0: never)",
    )
    p.add_argument("--time-budget", type=_positive_float, metavar="S", help="seconds in all")
    p.add_argument("--target-rate", type=_positive_float, metavar="R", help="samples/s wanted")
    p.add_argument("--memory-limit", metavar="BYTES", help="most memory a loader may add: 2GiB")
    p.add_argument(
        "--min-gain", type=float, default=0.05, help="least speedup worth a change (0.05: 5%%)"
    )
    p.add_argument(
        "--storage",
        default="sqlite:///loadtune.db",
        metavar="URL",
        help="Optuna storage: sqlite:///file.db, postgresql://..., or none",
    )
    p.add_argument("--study", metavar="NAME", help="join or continue this study")
    p.add_argument(
        "--resume", action="store_true", help="continue the latest study of this target and space"
    )
    p.add_argument("--out", default="tuned.json", help="tuned config (.json or .toml)")
    p.add_argument("--config", metavar="FILE", help="start from the settings in this config")
    p.add_argument("--batches", type=_positive_int, default=40, help="batches per timed window")
    p.add_argument("--warmup", type=_positive_int, default=5, help="batches before each window")
    p.add_argument("--step-ms", type=_positive_float, help="simulated training step per batch")
    p.add_argument("--step", metavar="MODULE:FN", help="a function called on every batch")
    p.add_argument(
        "--rounds", type=_positive_int, default=5, help="most interleaved A/B rounds (5)"
    )
    p.add_argument("--finalists", type=_positive_int, default=2, help="configs to A/B-test (2)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampler")
    _add_loader_options(p)
    p.set_defaults(func=_autotune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except UsageError as exc:
        if args.debug:
            raise
        print(f"loadtune: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
