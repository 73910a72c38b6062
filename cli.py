"""The ``loadtune`` command line: argument parsing and wiring only.

Bad input prints one line naming the problem and exits 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="loadtune",
        description="Find out why a PyTorch input pipeline is slow, and make it faster.",
    )
    parser.add_argument("--version", action="version", version=f"loadtune {loadtune.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("sysinfo", help="print cores, memory, /dev/shm, NUMA nodes, torch and CUDA")
    p.set_defaults(func=_sysinfo)
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
