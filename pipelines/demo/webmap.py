"""The interactive before/after map of a demo folder (``harmonize view OUT``).

For a few Landsat dates (the clearest, by default four) the map carries the Landsat input as
ingested, its harmonized 10 m version, the nearest Sentinel-2 acquisition, the truth (on a
simulated world) and the gap-filled NDVI of that day; static overlays are the crop-type map of
the classify stage (when it ran) and the truth's legend classes. Everything is embedded in one
HTML file (:mod:`harmonize.webmap`): it opens from disk with no network.

    python -m pipelines.demo.webmap OUT          # writes OUT/report/map.html
    harmonize view OUT                           # writes it if missing, prints it, opens it
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import webbrowser
from pathlib import Path
from typing import Any

import click
import numpy as np
import xarray as xr

from harmonize.errors import HarmonizeError
from harmonize.webmap import MapDate, class_image, ndvi_image, rgb_image, write_map
from pipelines.demo.paths import demo_paths, open_cube, open_harmonized, open_timeseries
from pipelines.evaluation.landclasses import class_colors, class_names, labels_from_truth
from pipelines.evaluation.truth import calendar_day, sensor_part

log = logging.getLogger(__name__)

__all__ = ["map_path", "write_demo_map", "map_section", "view_command"]

RGB = ("red", "green", "blue")
#: The classify stage's outputs inside a demo folder.
CLASSIFY_DIR = "classify"


def map_path(out: str | Path) -> Path:
    """Where the demo's interactive map lives: ``OUT/report/map.html``."""
    return demo_paths(out)["report"] / "map.html"


def _bounds(ds: xr.Dataset) -> tuple[float, float, float, float]:
    """(south, west, north, east) in degrees of the cube's pixel edges."""
    from pyproj import CRS, Transformer

    crs = ds.rio.crs if ds.rio.crs is not None else CRS.from_wkt(ds["spatial_ref"].attrs["crs_wkt"])
    x, y = ds["x"].values, ds["y"].values
    hx, hy = abs(x[1] - x[0]) / 2, abs(y[1] - y[0]) / 2
    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    xs = [x.min() - hx, x.max() + hx, x.min() - hx, x.max() + hx]
    ys = [y.min() - hy, y.min() - hy, y.max() + hy, y.max() + hy]
    lon, lat = tr.transform(xs, ys)
    return (float(min(lat)), float(min(lon)), float(max(lat)), float(max(lon)))


def _rgb(ds: xr.Dataset, t: Any, mask_clear: bool = False) -> np.ndarray:
    step = ds.sel(time=t)
    arr = np.stack([step[b].values for b in RGB]).astype(np.float32)
    if mask_clear and "clear" in step:
        arr[:, ~step["clear"].values.astype(bool)] = np.nan
    return arr


def _clearest(hz: xr.Dataset, n: int) -> list[Any]:
    """The ``n`` harmonized dates with the most clear pixels, in time order."""
    clear = hz["clear"].mean(("y", "x")).values if "clear" in hz else np.ones(hz.sizes["time"])
    best = np.sort(np.argsort(-clear, kind="stable")[:n])
    return [hz["time"].values[i] for i in best]


def _nearest_s2(s2: xr.Dataset, t: Any, max_days: float = 8.0) -> Any | None:
    """The clearest Sentinel-2 time within ``max_days`` of ``t`` (None when there is none)."""
    if s2.sizes.get("time", 0) == 0:
        return None
    dt = np.abs((s2["time"].values - np.datetime64(t)) / np.timedelta64(1, "D"))
    near = np.flatnonzero(dt <= max_days)
    if near.size == 0:
        return None
    clear = s2["clear"].isel(time=near).mean(("y", "x")).values
    score = clear - 0.02 * dt[near]  # prefer clear, then close
    return s2["time"].values[near[int(np.argmax(score))]]


def _date_layers(
    cube: xr.Dataset, hz: xr.Dataset, s2: xr.Dataset, ts: xr.Dataset | None, truth: xr.Dataset | None, t: Any
) -> MapDate:
    label = str(np.datetime_as_string(t, unit="D"))
    layers = {"Landsat input": rgb_image(_rgb(cube, t)), "Harmonized": rgb_image(_rgb(hz, t))}
    ts2 = _nearest_s2(s2, t)
    if ts2 is not None:
        layers[f"Sentinel-2 ({np.datetime_as_string(ts2, unit='D')})"] = rgb_image(_rgb(s2, ts2))
    if truth is not None:
        day = calendar_day(t)
        tt = truth.sel(time=day, method="nearest")
        tt = tt.reindex(y=cube["y"].values, x=cube["x"].values, method="nearest", tolerance=1.0)
        layers["Truth"] = rgb_image(np.stack([tt[b].values for b in RGB]))
    if ts is not None and "ndvi" in ts:
        layers["NDVI (gap-filled)"] = ndvi_image(
            ts["ndvi"].sel(time=calendar_day(t), method="nearest").values
        )
    return MapDate(label=label, layers=layers)


def _crop_overlay(out: Path, like: xr.Dataset) -> tuple[np.ndarray, dict[str, str]] | None:
    """The classify stage's class COG as an image, and its legend (from its STAC item)."""
    root = out / CLASSIFY_DIR
    cog, item = root / "classes.tif", root / "classes.json"
    if not cog.exists():
        return None
    import rioxarray

    da = rioxarray.open_rasterio(cog).squeeze("band", drop=True)
    da = da.reindex(y=like["y"].values, x=like["x"].values, method="nearest", tolerance=1.0, fill_value=0)
    colors, names = class_colors(), class_names()
    if item.exists():
        classes = json.loads(item.read_text())["assets"]["classes"]["classification:classes"]
        colors = {c["value"]: "#" + c["color_hint"] for c in classes if "color_hint" in c}
        names = {c["value"]: c.get("name", str(c["value"])) for c in classes}
    legend = {names[k]: v for k, v in colors.items()}
    return class_image(da.values, colors), legend


def write_demo_map(out: str | Path, *, n_dates: int = 4, path: str | Path | None = None) -> Path:
    """Write the demo folder's interactive map; return its path (see the module docstring).

    Parameters
    ----------
    out
        A finished demo folder (cube, harmonized, timeseries; truth when it is simulated).
    n_dates
        How many Landsat dates the date selector offers (the clearest).
    path
        Where to write (default :func:`map_path`).
    """
    root = Path(out)
    paths = demo_paths(root)
    if not paths["harmonized"].exists():
        raise HarmonizeError(f"{root} holds no harmonized products; run `harmonize demo {root}` first")
    t0 = time.perf_counter()
    cube, hz = open_cube(root), open_harmonized(root)
    s2 = sensor_part(cube, "sentinel-2")
    ts = open_timeseries(root) if (paths["timeseries"] / "ndvi.zarr").exists() else None
    truth = None
    if paths["truth"].exists():
        from harmonize.pairs.reference import open_reference_store

        truth = open_reference_store(paths["truth"])
    dates = [_date_layers(cube, hz, s2, ts, truth, t) for t in _clearest(hz, n_dates)]
    overlays: dict[str, np.ndarray] = {}
    legends: dict[str, dict[str, str]] = {}
    crop = _crop_overlay(root, cube)
    if crop is not None:
        overlays["Crop type (classified)"], legends["Crop type"] = crop
    if truth is not None:
        overlays["Crop type (truth)"] = class_image(labels_from_truth(truth, cube).values, class_colors())
        legends.setdefault("Crop type", {class_names()[k]: v for k, v in class_colors().items()})
    result = write_map(
        path or map_path(root),
        dates,
        _bounds(cube),
        overlays=overlays,
        legends=legends,
        title="harmonize: Landsat, harmonized, Sentinel-2",
        left="Landsat input",
        right="Harmonized",
    )
    log.info("interactive map: %s (%.1f s)", result, time.perf_counter() - t0)
    return result


def map_section(out: str | Path) -> str:
    """Report hook: write the map and return a markdown paragraph linking it (``map.html`` sits
    beside ``report.html``)."""
    path = write_demo_map(out)
    size = path.stat().st_size / 1e6
    return (
        "## Interactive map\n\n"
        f"[Open the interactive map]({path.name}) ({size:.1f} MB, works offline): Landsat input, "
        "harmonized, Sentinel-2, truth and gap-filled NDVI for the clearest Landsat dates, a swipe "
        "between any two layers, the crop-type map and its truth as overlays.\n"
    )


def _has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


@click.command(name="view")
@click.argument("out", type=click.Path(exists=True, path_type=Path))
@click.option("--dates", "n_dates", type=int, default=4, show_default=True, help="Landsat dates to offer.")
@click.option("--rebuild", is_flag=True, help="Write the map again even when it exists.")
@click.option(
    "--open/--no-open", "open_", default=None, help="Open a browser (default: when there is a display)."
)
def view_command(out: Path, n_dates: int, rebuild: bool, open_: bool | None) -> None:
    """Open the interactive map of a demo folder OUT (or an HTML map file), writing it if needed."""
    from harmonize.cli import reporting

    @reporting
    def run() -> None:
        path = out if out.is_file() else map_path(out)
        if out.is_dir() and (rebuild or not path.exists()):
            path = write_demo_map(out, n_dates=n_dates)
        if not path.exists():
            raise HarmonizeError(f"no interactive map at {path}")
        click.echo(str(path.resolve()))
        if open_ or (open_ is None and _has_display()):
            webbrowser.open(path.resolve().as_uri())

    run()


if __name__ == "__main__":  # pragma: no cover
    view_command()
