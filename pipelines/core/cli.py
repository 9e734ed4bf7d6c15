"""The command line every job shares (click): ``python -m pipelines.stages.<stage> CONFIG.yaml``.

:func:`stage_main` turns a stage's config class and function into a click command::

    python -m pipelines.stages.ingest pipelines/configs/ingest.yaml [KEY=VALUE ...]
        [--dry-run] [--scheduler ADDR] [-v]

The YAML's ``stage:`` key must name that stage; ``KEY=VALUE`` overrides (dotted keys reach into
nested settings, values are parsed as YAML) are applied before validation, and the stage's
report is printed as JSON. A bad input (a :class:`~harmonize.errors.HarmonizeError`) prints one
line and exits with status 2.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from harmonize.cli import ReportingGroup, reporting
from harmonize.cli import setup_logging as library_logging
from pipelines.core.config import apply_overrides, read_mapping, validate

__all__ = [
    "setup_logging",
    "ReportingGroup",
    "reporting",
    "stage_main",
    "config_argument",
    "stage_options",
    "print_report",
    "progress_bars",
    "wants_progress",
]

StageFunction = Callable[..., dict[str, Any]]


def setup_logging(verbose: int = 0) -> None:
    """harmonize's and the jobs' progress at INFO (see :func:`harmonize.cli.setup_logging`)."""
    library_logging(verbose, loggers=("harmonize", "pipelines"))


class CommitBar(logging.Handler):
    """A tqdm bar of the units a stage commits (its ``committed <name>`` log lines), for a
    terminal; those lines then go to the bar instead of the log."""

    def __init__(self, stream: Any) -> None:
        super().__init__(logging.INFO)
        from tqdm import tqdm

        self.bar = tqdm(desc="committed", unit=" store", file=stream, dynamic_ncols=True)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("committed "):
            self.bar.update(1)
            self.bar.set_postfix_str(message.split()[1].rsplit("/", 1)[-1], refresh=True)

    def close(self) -> None:
        self.bar.close()
        super().close()


def _not_a_commit(record: logging.LogRecord) -> bool:
    return not (record.name.startswith("pipelines.stages") and record.getMessage().startswith("committed "))


@contextlib.contextmanager
def progress_bars(enabled: bool, stream: Any = None) -> Iterator[None]:
    """While a stage runs: on a terminal (``enabled``), a bar of committed units replaces their
    log lines; otherwise the log lines stay (what a scheduled job's log needs)."""
    if not enabled:
        yield
        return
    stream = stream or sys.stderr
    bar = CommitBar(stream)
    stages = logging.getLogger("pipelines.stages")
    stages.addHandler(bar)
    handlers = logging.getLogger().handlers
    for h in handlers:
        h.addFilter(_not_a_commit)
    try:
        yield
    finally:
        stages.removeHandler(bar)
        for h in handlers:
            h.removeFilter(_not_a_commit)
        bar.close()


def wants_progress(data: dict[str, Any], overrides: Sequence[str], stream: Any = None) -> bool:
    """Progress bars unless the config or an override sets ``progress``: on when ``stream``
    (standard error) is a terminal."""
    if "progress" in data or any(o.split("=", 1)[0].strip() == "progress" for o in overrides):
        return bool(apply_overrides(data, list(overrides)).get("progress"))
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def config_argument(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``CONFIG`` (an existing YAML file) and ``KEY=VALUE`` override arguments."""
    fn = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")(fn)
    return click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))(fn)


def stage_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--scheduler``, ``--dry-run`` and ``-v``: what every stage run takes."""
    fn = click.option("-v", "--verbose", count=True, help="More logging (-v debug, -vv libraries too).")(fn)
    fn = click.option("--dry-run", is_flag=True, help="Report what would be processed; write nothing.")(fn)
    return click.option(
        "--scheduler",
        default=None,
        help="'local' (a LocalCluster sized to the machine), 'threads', 'synchronous', 'processes' "
        "or tcp://host:port; default the config's.",
    )(fn)


def print_report(report: dict[str, Any]) -> None:
    """A stage's report as indented JSON on standard output."""
    click.echo(json.dumps(report, indent=2, default=str))


def stage_main(config_cls: type[BaseModel], function: StageFunction) -> click.Command:
    """A click command that runs ``function`` on a ``config_cls`` read from YAML.

    Parameters
    ----------
    config_cls
        The stage's config class; its ``stage`` field's default is the stage name the YAML must
        carry.
    function
        ``function(config, *, dry_run, scheduler) -> report``.
    """
    stage = config_cls.model_fields["stage"].default

    @click.command(name=stage, help=f"Run the {stage} stage from its YAML CONFIG.")
    @config_argument
    @stage_options
    @reporting
    def main(
        config: Path, overrides: tuple[str, ...], scheduler: str | None, dry_run: bool, verbose: int
    ) -> None:
        setup_logging(verbose)
        data = read_mapping(config)
        if data.get("stage", stage) != stage:
            raise click.UsageError(f"{config} is a {data.get('stage')!r} config, not {stage!r}")
        tty = wants_progress(data, overrides)
        if "progress" in config_cls.model_fields and "progress" not in data:
            data = {**data, "progress": tty}  # dask's bars too, on a terminal
        cfg = validate(config_cls, {"stage": stage, **data}, overrides)
        with progress_bars(tty):
            report = function(cfg, dry_run=dry_run, scheduler=scheduler)
        print_report(report)

    return main
