"""``python -m pipelines.benchmarks NAME [OPTIONS]``: run one benchmark, print one JSON document.

Usage::

    python -m pipelines.benchmarks world [--out DIR]
    python -m pipelines.benchmarks load
    python -m pipelines.benchmarks scale [--sizes 5.12,10.24,20.48,40.96]
    python -m pipelines.benchmarks NAME --help
    ...

Each benchmark lives in ``pipelines/benchmarks/<name>.py`` as a click ``command`` (and a plain
function for Python callers); this group finds it by name, importing only that module, so a
benchmark whose extra dependency is missing leaves the others runnable.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["BENCHMARKS", "main"]

BENCHMARKS: tuple[str, ...] = ("world", "load", "pairs", "infer", "timeseries", "store", "scale")


class _BenchmarkGroup(click.Group):
    """The benchmarks by name, each imported only when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(BENCHMARKS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in BENCHMARKS:
            return None
        try:
            module = importlib.import_module(f"pipelines.benchmarks.{cmd_name}")
        except ModuleNotFoundError as exc:
            ctx.fail(f"benchmark {cmd_name!r} is not available: {exc}")
        return module.command


@click.group(cls=_BenchmarkGroup)
def main() -> None:
    """Benchmarks of harmonize, each printing one JSON document with the machine it ran on."""


if __name__ == "__main__":
    main()
