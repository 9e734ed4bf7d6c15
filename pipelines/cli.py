"""The ``harmonize`` console script: the library's commands plus the jobs' ``run``, ``demo`` and
``infer``.

The library's command group (:mod:`harmonize.cli`: ``world``, ``search``, ``train``,
``timeseries``) knows nothing of the jobs; this module adds the commands that run them, so the
library stays blind to :mod:`pipelines` while users get one ``harmonize`` command.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from harmonize.cli import main
from pipelines.core.cli import config_argument, print_report, setup_logging, stage_options
from pipelines.demo.run import main as demo_command

__all__ = ["main"]


@main.command("run")
@config_argument
@stage_options
def run_cmd(config: Path, overrides: tuple[str, ...], scheduler: str | None, dry_run: bool, verbose: int) -> None:
    """Run the job that CONFIG (YAML with a 'stage:' key) describes; KEY=VALUE overrides."""
    from pipelines.run import run

    setup_logging(verbose)
    print_report(run(config, scheduler=scheduler, dry_run=dry_run, overrides=list(overrides)))


@main.command("infer")
@click.argument("model", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--source", required=True, help="STAC API URL or stac-geoparquet file.")
@click.option("--bbox", required=True, help="west,south,east,north in degrees.")
@click.option("--datetime", "datetime_", default=None, help="A date or range.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--provider", default=None)
@click.option("--max-cloud", type=float, default=None)
@click.option("--device", default=None, help="cpu, cuda (default: cuda when present).")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--uncertainty", type=click.Choice(["mc_dropout", "ensemble"]), default=None)
@click.option("--format", "formats", multiple=True, type=click.Choice(["zarr", "cog"]), default=("zarr", "cog"))
def infer_cmd(model, source, bbox, datetime_, out, provider, max_cloud, device, batch_size, uncertainty, formats) -> None:  # noqa: ANN001
    """Harmonize every Landsat scene found in SOURCE with MODEL package(s); write Zarr/COGs + STAC items."""
    from pipelines.stages.infer_search import infer_job

    setup_logging(0)
    report = infer_job(
        [str(m) for m in model] if len(model) > 1 else str(model[0]),
        source,
        tuple(float(v) for v in bbox.split(",")),
        datetime_,
        out,
        provider=provider,
        max_cloud=max_cloud,
        device=device,
        batch_size=batch_size,
        uncertainty=uncertainty,
        formats=formats,
        progress=True,
    )
    click.echo(json.dumps(report, indent=2, default=str))


main.add_command(demo_command)

if __name__ == "__main__":  # pragma: no cover
    main()
