"""The ``harmonize`` console script: the library's commands plus the jobs' ``run``, ``demo`` and
``infer``.

The library's command group (:mod:`harmonize.cli`: ``world``, ``search``, ``train``,
``timeseries``) knows nothing of the jobs; this module adds the commands that run them, so the
library stays blind to :mod:`pipelines` while users get one ``harmonize`` command.
"""

from __future__ import annotations

from pathlib import Path

import click

from harmonize.cli import main
from pipelines.core.cli import config_argument, print_report, reporting, setup_logging, stage_options
from pipelines.demo.run import main as demo_command
from pipelines.demo.webmap import view_command

__all__ = ["main"]


@main.command("run")
@config_argument
@stage_options
def run_cmd(
    config: Path, overrides: tuple[str, ...], scheduler: str | None, dry_run: bool, verbose: int
) -> None:
    """Run the job that CONFIG (YAML with a 'stage:' key) describes; KEY=VALUE overrides."""
    from pipelines.run import run

    setup_logging(verbose)
    print_report(run(config, scheduler=scheduler, dry_run=dry_run, overrides=list(overrides)))


@main.command("infer")
@click.argument("model", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--source", "catalog", required=True, help="STAC API URL or stac-geoparquet file.")
@click.option("--bbox", required=True, help="west,south,east,north in degrees.")
@click.option("--datetime", "datetime_", default=None, help="A date or range.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--provider", default=None)
@click.option("--max-cloud", type=float, default=None)
@click.option("--device", default=None, help="cpu, cuda (default: cuda when present).")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--uncertainty", type=click.Choice(["mc_dropout", "ensemble"]), default=None)
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(["zarr", "cog"]),
    default=("zarr", "cog"),
    show_default=True,
    help="'cog' adds a COG and STAC item per date; the per-date Zarr stores are always written.",
)
@click.option("--scheduler", default="threads", show_default=True, help="Where dask runs (as harmonize run).")
@click.option("--dry-run", is_flag=True, help="Report which dates are new; write nothing.")
@click.option("-v", "--verbose", count=True, help="More logging (-v debug, -vv libraries too).")
@reporting
def infer_cmd(
    model: tuple[Path, ...],
    catalog: str,
    bbox: str,
    datetime_: str | None,
    out: Path,
    provider: str | None,
    max_cloud: float | None,
    device: str | None,
    batch_size: int,
    uncertainty: str | None,
    formats: tuple[str, ...],
    scheduler: str,
    dry_run: bool,
    verbose: int,
) -> None:
    """Harmonize every Landsat scene found in SOURCE with MODEL package(s): one Zarr store per
    date under OUT/dates, and with --format cog a COG + STAC item each (the infer stage with
    source: search; a rerun does only new dates)."""
    from harmonize.catalog import parse_bbox
    from pipelines.core.config import validate
    from pipelines.stages.infer import InferStageConfig, infer_stage

    setup_logging(verbose)
    fields = {
        "source": "search",
        "catalog": catalog,
        "bbox": list(parse_bbox(bbox)),
        "datetime": datetime_,
        "provider": provider,
        "max_cloud": max_cloud,
        "model": [str(m) for m in model] if len(model) > 1 else str(model[0]),
        "device": device,
        "batch_size": batch_size,
        "uncertainty": uncertainty,
        "cogs": "cog" in formats,
        "out": out,
        "scheduler": scheduler,
        "progress": True,
    }
    config = validate(InferStageConfig, fields)
    print_report(infer_stage(config, dry_run=dry_run))


@main.command("classify")
@click.argument("cube", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--labels", required=True, type=click.Path(exists=True, path_type=Path),
              help="Reference store with land cover and field crops (a simulated world's truth.zarr).")
@click.option("--harmonized", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The infer stage's output (needed by the 'fused' variant).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--variant", "variants", multiple=True, type=click.Choice(["fused", "s2", "fused_raw"]),
              help="Feature sets to train and compare (default: all three; s2 alone without --harmonized).")
@click.option("--freq", default="MS", show_default=True, help="Composite period (pandas frequency).")
@click.option("--block-size", type=int, default=128, show_default=True, help="Held-out block side (pixels).")
@click.option("--dry-run", is_flag=True, help="Report which units would be made; write nothing.")
@click.option("-v", "--verbose", count=True, help="More logging.")
@reporting
def classify_cmd(cube: Path, labels: Path, harmonized: Path | None, out: Path, variants: tuple[str, ...],
                 freq: str, block_size: int, dry_run: bool, verbose: int) -> None:
    """Train a small UNet crop-type classifier on CUBE's time series (the classify stage): a class
    COG + STAC item, probabilities and held-out scores under OUT."""
    from pipelines.core.config import validate
    from pipelines.stages.classify import ClassifyStageConfig, classify_stage

    setup_logging(verbose)
    everything = ["fused", "s2", "fused_raw"] if harmonized is not None else ["s2", "fused_raw"]
    chosen = list(variants) or everything
    fields = {"cube": cube, "labels": labels, "harmonized": harmonized, "out": out, "variants": chosen,
              "map_variant": chosen[0], "freq": freq, "block_size": block_size}
    print_report(classify_stage(validate(ClassifyStageConfig, fields), dry_run=dry_run))


main.add_command(demo_command)
main.add_command(view_command)

if __name__ == "__main__":  # pragma: no cover
    main()
