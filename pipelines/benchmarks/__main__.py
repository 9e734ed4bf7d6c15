"""Benchmarks of harmonize, printing one JSON document per run.

Usage::

    python -m pipelines.benchmarks world [--out DIR]
    python -m pipelines.benchmarks load
    ...

Each subcommand lives in ``pipelines/benchmarks/<name>.py`` as a ``run(argv) -> dict`` function;
this module dispatches to it and prints the result as JSON, with the machine it ran on.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from typing import Any

SUBCOMMANDS = ("world", "load", "pairs", "infer", "timeseries")


def machine() -> dict[str, Any]:
    """A short description of the machine a figure was measured on."""
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # pragma: no cover - torch missing or broken
        gpu = None
    return {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": gpu,
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        print(f"usage: python -m pipelines.benchmarkss {{{','.join(SUBCOMMANDS)}}} [options]", file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    try:
        module = importlib.import_module(f"pipelines.benchmarks.{name}")
    except ModuleNotFoundError as exc:
        print(f"benchmark {name!r} is not available: {exc}", file=sys.stderr)
        return 2
    result = {"benchmark": name, "machine": machine(), **module.run(rest)}
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
