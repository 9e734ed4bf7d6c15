"""Score UNet presets against bicubic baselines on a finished demo's held-out test blocks.

The demo trains ``tiny`` for a minute; this job trains any preset longer on the same pairs
(the demo's index, sharpened targets and all), harmonizes the demo's Landsat dates with it,
and scores it against the simulator's truth beside resampling baselines, on the demo's test
windows::

    python -m pipelines.experiments.compare_demo demo-out --preset base --epochs 80 --out runs/base
    python -m pipelines.experiments.compare_demo demo-out --preset tiny --epochs 80 --out runs/tiny

The demo's cube is loaded with bilinear resampling; the bicubic baselines reload the test
dates' Landsat scenes (with the same co-registration shifts) with cubic resampling, so
"bicubic + fitted linear" is the issue's baseline. The table goes to ``OUT/table.csv`` and
``OUT/table.md``. ``pipelines.experiments.compare_models`` is the torch-only variant for GPU machines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd
import pystac
import xarray as xr

from pipelines.core.cli import reporting, setup_logging

log = logging.getLogger("pipelines.experiments.compare_demo")  # not __main__ under `python -m`

__all__ = ["train_on_demo", "bicubic_baselines", "compare_on_demo", "main"]

BAND_COLUMNS = ["PSNR"] + [f"PSNR {b}" for b in ("blue", "green", "red", "nir", "swir16", "swir22")]
MAIN_COLUMNS = BAND_COLUMNS + ["SSIM", "SAM (deg)", "NRMSE", "NDVI r"]


def train_on_demo(
    demo_out: str | Path,
    out: str | Path,
    *,
    preset: str = "base",
    epochs: int = 80,
    batches_per_epoch: int = 25,
    batch_size: int = 8,
    lr: float = 2e-3,
    max_seconds: float | None = None,
) -> Path:
    """Train ``preset`` on the demo's pairs (all training windows); returns the model package."""
    from pipelines.demo.paths import demo_paths
    from pipelines.stages.train import TrainStageConfig, train_stage

    paths = demo_paths(demo_out)
    report = train_stage(
        TrainStageConfig(
            cube=paths["cube"],
            pairs=paths["pairs"],
            out=Path(out) / "model",
            train={
                "model": preset,
                "epochs": epochs,
                "batch_size": batch_size,
                "max_batches_per_epoch": batches_per_epoch,
                "lr": lr,
                "patience": None,
                "normalization_samples": 64,
                "eval_samples": 32,
            },
            max_seconds=max_seconds,
            truth=paths["truth"],
        )
    )
    return Path(report["model"])


def bicubic_baselines(
    cube: xr.Dataset, index: pd.DataFrame, fitted: Any, items: Iterable[pystac.Item]
) -> dict[str, xr.Dataset]:
    """The test dates' Landsat loaded again with cubic resampling (same shifts), raw and adjusted.

    ``items`` are the archive's items (the demo world's, Level-1 included): the test dates'
    Level-2 scenes are taken by the cube's ``item_id`` coordinate, with their pan companions,
    and loaded on the cube's grid with the shifts its ``shift_x``/``shift_y`` coordinates record.
    """
    from harmonize.bandpass import hls_adjust
    from harmonize.bands import REFLECTANCE_BANDS
    from harmonize.cube import load_cube
    from harmonize.items import parse_items
    from pipelines.evaluation.harmonization import test_windows
    from pipelines.evaluation.truth import sensor_part

    landsat = sensor_part(cube, "landsat")
    times = sorted(set(pd.to_datetime(test_windows(index)["landsat_time"]).values))
    sel = landsat.sel(time=times)
    shifts = {
        i: (float(dx), float(dy))
        for v, dx, dy in zip(sel["item_id"].values, sel["shift_x"].values, sel["shift_y"].values, strict=True)
        for i in str(v).split(",")
    }
    scenes = [s for s in parse_items(items) if s.id in shifts]
    cubic = load_cube(scenes, REFLECTANCE_BANDS, geobox=cube.odc.geobox, resampling="cubic", shifts=shifts)
    cubic = cubic.sel(time=sel["time"].values, method="nearest", tolerance=np.timedelta64(1, "s"))
    cubic = cubic.assign_coords(time=sel["time"].values)
    return {
        "Landsat bicubic": cubic,
        "bicubic + HLS bandpass": hls_adjust(cubic, to="sentinel-2"),
        "bicubic + fitted linear bandpass": fitted.apply(cubic),
    }


def compare_on_demo(demo_out: str | Path, models: dict[str, str | Path], out: str | Path) -> pd.DataFrame:
    """Harmonize the demo's Landsat dates with each model and score everything against truth.

    Parameters
    ----------
    demo_out
        A finished demo folder.
    models
        Name -> model package; each harmonizes the demo's cube into ``OUT/harmonized-NAME``.
    out
        Where the harmonized cubes and ``table.csv`` / ``table.md`` go.

    Returns
    -------
    pandas.DataFrame
        One row per method (the baselines, the bicubic rows, ``UNet (NAME)``), the PSNR columns
        then SSIM, SAM, NRMSE and NDVI r.
    """
    from harmonize.bandpass import fit_linear_adjustment
    from harmonize.world import open_world
    from pipelines.core.stores import open_harmonized, read_index
    from pipelines.demo.markdown import markdown_table
    from pipelines.demo.paths import demo_paths, open_cube
    from pipelines.evaluation.harmonization import harmonization_table, index_patch_size, train_block_mask
    from pipelines.stages.infer import InferStageConfig, infer_stage

    paths = demo_paths(demo_out)
    out = Path(out)
    cube = open_cube(demo_out)
    index = read_index(paths["pairs"])
    shape = (cube.sizes["y"], cube.sizes["x"])
    train = xr.DataArray(train_block_mask(index, shape, index_patch_size(index, default=64)), dims=("y", "x"))
    fitted = fit_linear_adjustment(cube.assign(clear=cube["clear"] & train), max_days=0)
    from harmonize.catalog import search

    items = search(paths["world"], include_pan=True)
    predictions: dict[str, xr.Dataset] = bicubic_baselines(cube, index, fitted, items)
    for name, package in models.items():
        target = out / f"harmonized-{name}"
        infer_stage(InferStageConfig(cube=paths["cube"], model=str(package), out=target, scheduler="threads"))
        predictions[f"UNet ({name})"] = open_harmonized(target)
    truth = open_world(paths["world"]).truth
    table, _ = harmonization_table(cube, index, truth, predictions, fitted=fitted)
    table = table[MAIN_COLUMNS]
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table.csv")
    (out / "table.md").write_text(markdown_table(table, index_name="method") + "\n")
    return table


@click.command(name="compare-demo")
@click.argument("demo_out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--preset", default="base", show_default=True, help="UNet preset to train (tiny, base, paper-5depth)."
)
@click.option("--epochs", type=int, default=80, show_default=True, help="Epochs of --batches steps.")
@click.option("--batches", type=int, default=25, show_default=True, help="Steps per epoch.")
@click.option("--max-seconds", type=float, default=None, help="Stop training after this long.")
@click.option("--with-demo-model", is_flag=True, help="Also score the demo's own model.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default DEMO_OUT/compare-PRESET).",
)
@click.option("-v", "--verbose", count=True, help="More logging.")
@reporting
def main(
    demo_out: Path,
    preset: str,
    epochs: int,
    batches: int,
    max_seconds: float | None,
    with_demo_model: bool,
    out: Path | None,
    verbose: int,
) -> None:
    """Train PRESET longer on a finished demo's pairs (DEMO_OUT) and score it beside bicubic baselines."""
    from pipelines.demo.paths import demo_paths

    setup_logging(verbose)
    out = out or demo_out / f"compare-{preset}"
    t0 = time.perf_counter()
    package = train_on_demo(
        demo_out, out, preset=preset, epochs=epochs, batches_per_epoch=batches, max_seconds=max_seconds
    )
    log.info("trained %s in %.0f s", preset, time.perf_counter() - t0)
    models: dict[str, str | Path] = {preset: package}
    if with_demo_model:
        models["demo"] = demo_paths(demo_out)["model_package"]
    table = compare_on_demo(demo_out, models, out)
    click.echo(table.round(3).to_string())
    fitted = table.loc["bicubic + fitted linear bandpass", "PSNR"]
    for name in models:
        gain = table.loc[f"UNet ({name})", "PSNR"] - fitted
        click.echo(f"UNet ({name}) over bicubic + fitted linear: {gain:+.2f} dB")


if __name__ == "__main__":
    main()
