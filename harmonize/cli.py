"""The library's commands: ``harmonize world``, ``search``, ``train``, ``model`` and ``timeseries``.

The installed ``harmonize`` console script (:mod:`pipelines.cli`) adds the jobs' ``run``,
``demo`` and ``infer`` to this group; the library itself knows nothing of the jobs. Subsystems
are imported inside each command so ``harmonize --help`` stays instant.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from harmonize.errors import HarmonizeError

log = logging.getLogger("harmonize")


def setup_logging(verbose: int = 0, *, loggers: Sequence[str] = ("harmonize",)) -> None:
    """``loggers``' progress at INFO (DEBUG with ``-v``); libraries stay at WARNING unless
    ``-vv`` (some, like rustac's writer, log whole item collections at INFO)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from harmonize.redact import install_log_redaction

    install_log_redaction(*logging.getLogger().handlers)  # credentials never reach the log
    for name in loggers:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose >= 1 else logging.INFO)


def reporting(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a click callback so a :class:`HarmonizeError` becomes ``error: …`` and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HarmonizeError as exc:
            from harmonize.redact import redact_text

            click.echo(f"error: {redact_text(str(exc))}", err=True)
            raise SystemExit(2) from None
        except Exception as exc:  # settings validated by pydantic or read as YAML
            named = _named(exc, [*args, *kwargs.values()])
            if named is None:
                raise
            click.echo(f"error: {named}", err=True)
            raise SystemExit(2) from None

    return wrapper


def _named(exc: Exception, arguments: Sequence[Any] = ()) -> HarmonizeError | None:
    """The ConfigError of a pydantic or YAML error escaping a command (None for others); the
    YAML file is named from the command's arguments (a path, or a group context's words)."""
    import pydantic
    import yaml

    from harmonize.overrides import config_error, yaml_error

    if isinstance(exc, pydantic.ValidationError):
        return config_error(exc, f"{exc.title} settings", "Fix these options, config keys or overrides.")
    if isinstance(exc, yaml.YAMLError):
        import sys

        words = [*sys.argv[1:]]
        for a in arguments:
            if isinstance(a, click.Context):
                words += [*getattr(a, "_protected_args", []), *a.args]
            elif isinstance(a, (str, Path)):
                words.append(str(a))
            elif isinstance(a, list):
                words += [str(w) for w in a]
        files = [w for w in words if w.endswith((".yaml", ".yml")) and Path(w).is_file()]
        return yaml_error(exc, files[0] if files else "the config file")
    return None


class ReportingGroup(click.Group):
    """A click group whose commands report harmonize's named errors as one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        # the words before click consumes them: a YAML error names the file it came from
        words = [*getattr(ctx, "_protected_args", []), *ctx.args]
        return reporting(lambda c, _words: super(ReportingGroup, self).invoke(c))(ctx, words)


@click.group(cls=ReportingGroup)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="harmonize")
def main(verbose: int) -> None:
    """harmonize: Landsat-8/9 and Sentinel-2 into one analysis-ready time series."""
    setup_logging(verbose)


# ---------------------------------------------------------------- world
@main.group(cls=ReportingGroup)
def world() -> None:
    """The embedded simulated archive: create it, serve it."""


@world.command("create")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size-km", type=float, default=None, help="Side of the square area (default 5.12).")
@click.option("--start", default=None, help="First date, YYYY-MM-DD.")
@click.option("--end", default=None, help="Last date, YYYY-MM-DD.")
@click.option("--seed", type=int, default=None, help="Random seed (same seed, same archive).")
@click.option("--tiny", is_flag=True, help="A 1.28 km, six-week world (seconds to build), as the tests use.")
@click.option(
    "--preset", default=None, help="A named world (default demo); `harmonize world presets` lists them."
)
@click.option("--overwrite", is_flag=True, help="Replace a different world already in DIRECTORY.")
def world_create(
    directory: Path,
    size_km: float | None,
    start: str | None,
    end: str | None,
    seed: int | None,
    tiny: bool,
    preset: str | None,
    overwrite: bool,
) -> None:
    """Simulate a Landsat-8/9 + Sentinel-2 archive into DIRECTORY."""
    from harmonize.world import create_world
    from harmonize.world.presets import preset_config

    given = {"size_km": size_km, "start": start, "end": end, "seed": seed}
    overrides = {k: v for k, v in given.items() if v is not None}
    config = preset_config(preset, tiny=tiny, **overrides)
    w = create_world(directory, config, overwrite=overwrite)
    click.echo(f"world written to {w.root} ({len(w.manifest['scenes'])} scenes)")


@world.command("presets")
def world_presets() -> None:
    """List the named worlds `world create --preset` and `demo --world-preset` take."""
    from harmonize.world.presets import PRESETS

    for p in PRESETS.values():
        click.echo(f"{p.name}: {p.summary}")


@world.command("serve")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to bind.")
@click.option("--port", type=int, default=None, help="Port (default: a free one).")
def world_serve(directory: Path, host: str, port: int | None) -> None:
    """Serve the world in DIRECTORY as a STAC API on loopback until Ctrl-C."""
    from harmonize.world.server import serve_forever

    raise SystemExit(
        serve_forever(
            directory, host=host, port=port,
            on_ready=lambda s: click.echo(f"STAC API at {s.url}  (Ctrl-C to stop)"),
        )
    )


# ---------------------------------------------------------------- search
@main.command("search")
@click.argument("source")
@click.option(
    "--provider", default=None, help="Provider profile (earth-search, planetary-computer, usgs, local)."
)
@click.option("--collection", "collections", multiple=True, help="Collection id (repeatable).")
@click.option("--bbox", default=None, help="west,south,east,north in degrees.")
@click.option("--datetime", "datetime_", default=None, help="A date or range, e.g. 2023-01-01/2023-06-30.")
@click.option("--max-cloud", type=float, default=None, help="Maximum eo:cloud_cover in percent.")
@click.option("--max-items", type=int, default=None, help="Stop after this many items.")
@click.option("--include-pan", is_flag=True, help="Also search the provider's Level-1 (pan) collection.")
@click.option("--require", is_flag=True, help="Fail when nothing is found.")
@click.option("--json", "as_json", is_flag=True, help="Print the items as an ItemCollection.")
@click.option("--timeout", type=float, default=30, show_default=True,
              help="Seconds each request (each socket read) may wait.")
@click.option("--total-timeout", type=float, default=300, show_default=True,
              help="Seconds the whole search may take; a stalled or dripping server fails after it.")
def search_cmd(
    source, provider, collections, bbox, datetime_, max_cloud, max_items, include_pan, require, as_json,
    timeout, total_timeout,
) -> None:
    """Search SOURCE (a STAC API URL or a stac-geoparquet file) and list what was found."""
    from harmonize.catalog import parse_bbox, search

    bbox_t = parse_bbox(bbox) if bbox else None
    items = search(
        source,
        timeout=timeout,
        total_timeout=total_timeout,
        provider=provider,
        collections=list(collections) or None,
        bbox=bbox_t,
        datetime=datetime_,
        max_cloud=max_cloud,
        max_items=max_items,
        include_pan=include_pan,
        require=require,
    )
    if as_json:
        click.echo(json.dumps({"type": "FeatureCollection", "features": [i.to_dict() for i in items]}))
        return
    for it in items:
        cloud = it.properties.get("eo:cloud_cover", float("nan"))
        click.echo(f"{it.collection_id:16s} {it.id:48s} {it.datetime:%Y-%m-%d} cloud {cloud:5.1f}%")
    click.echo(f"{len(items)} items")


# ---------------------------------------------------------------- train
@main.command("train")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Output folder."
)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field (repeatable)."
)
@click.option("--no-resume", is_flag=True, help="Start afresh instead of resuming the latest checkpoint.")
def train_cmd(config: Path, out: Path | None, overrides: tuple[str, ...], no_resume: bool) -> None:
    """Train a harmonization UNet from a YAML CONFIG (see harmonize.train.TrainConfig)."""
    from harmonize.train import train_from_config

    result = train_from_config(config, list(overrides), out_dir=out, resume=None if no_resume else "auto")
    if result.package_path is None:  # another process than rank 0 of a torchrun job
        return
    click.echo(
        f"model package: {result.package_path} "
        f"(best epoch {result.best_epoch}, val loss {result.best_val_loss:.5f})"
    )


# ---------------------------------------------------------------- model
@main.group(cls=ReportingGroup)
def model() -> None:
    """Model packages: import published checkpoints."""


@model.command("import")
@click.argument("src")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", default=None,
              help="Deep-Harmonization preset (UNet-5depth-upsample …); default: read from the keys.")
@click.option("--lowfreq/--no-lowfreq", default=False, show_default=True,
              help="Apply the low-frequency constraint (30 m means kept from the input).")
@click.option("--pre-interpolation", type=click.Choice(["bicubic", "none"]), default="bicubic",
              show_default=True, help="Redo the paper's bicubic x3 of the 30 m bands in the package.")
def model_import_cmd(src: str, out: Path, preset: str | None, lowfreq: bool, pre_interpolation: str) -> None:
    """Turn a Deep-Harmonization snapshot SRC (folder, weights file or hub id) into package OUT."""
    from harmonize.model_import import import_model

    doc = import_model(src, out, preset=preset, lowfreq_constraint=lowfreq,
                       pre_interpolation=pre_interpolation)
    click.echo(f"model package: {doc.parent}")


# ---------------------------------------------------------------- timeseries


def _lmbda(value: str) -> float | str:
    """``--lmbda``: a positive number or ``gcv``."""
    if str(value).lower() == "gcv":
        return "gcv"
    try:
        out = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a number nor 'gcv'") from None
    if out <= 0:
        raise click.BadParameter("must be positive")
    return out


@main.command("timeseries")
@click.argument("s2_zarr", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--landsat", "landsat_zarr", type=click.Path(exists=True, path_type=Path), default=None,
              help="Harmonized Landsat cube (Zarr) on the Sentinel-2 grid; omit for Sentinel-2 only.")
@click.option("--config", "config_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML file of TimeSeriesConfig settings; flags override it.")
@click.option("--method", type=click.Choice(["linear", "whittaker", "harmonic", "rbf"]), default=None)
@click.option("--freq", default=None, help="Output step, e.g. 5D (default).")
@click.option("--max-gap", default=None, help="Longest bridged gap, e.g. 45D (default).")
@click.option("--start", default=None, help="First output date (default: first observation).")
@click.option("--end", default=None, help="Last output date (default: last observation).")
@click.option("--lmbda", type=_lmbda, default=None,
              help="Whittaker smoothing on a daily grid, a number or 'gcv' (chosen by generalized "
                   "cross-validation; the default).")
@click.option("--weights/--no-weights", default=None,
              help="Weight Landsat by how far its 30 m view can be trusted (default on).")
@click.option("--weight-window", type=int, default=None, help="Heterogeneity window in pixels (default 3).")
@click.option("--weight-scale", type=float, default=None,
              help="NDVI heterogeneity at half weight (default 0.02).")
@click.option("--sharpen-s2-nir/--no-sharpen-s2-nir", default=None,
              help="Sharpen Sentinel-2's 20 m nir to 10 m before NDVI (default on).")
@click.option("--disagreement-scale", type=float, default=None,
              help="Landsat-vs-Sentinel-2 NDVI disagreement at half weight; 0 turns it off (default 0.03).")
@click.option("--n-harmonics", type=int, default=None, help="Harmonic modes (default 3).")
@click.option("--same-day", type=click.Choice(["keep", "mean", "prefer-s2"]), default=None)
@click.option("--phenology/--no-phenology", default=False, help="Also write SOS/POS/EOS maps (one season).")
@click.option("--plots", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write clear-observation and NDVI map figures into this folder.")
def timeseries_cmd(s2_zarr, out, landsat_zarr, config_path, phenology, plots, **flags) -> None:
    """Fuse S2 (+ harmonized Landsat), gap-fill NDVI onto a regular axis, write OUT (Zarr)."""
    import xarray as xr
    from dask.diagnostics import ProgressBar

    from harmonize.io import write_zarr
    from harmonize.timeseries import TimeSeriesConfig, fuse, ndvi_timeseries

    flags = {k: v for k, v in flags.items() if v is not None}
    cfg = TimeSeriesConfig.from_yaml(config_path, **flags) if config_path else TimeSeriesConfig.build(**flags)
    s2 = xr.open_zarr(s2_zarr, chunks={})
    landsat = xr.open_zarr(landsat_zarr, chunks={}) if landsat_zarr else None
    obs, filled = ndvi_timeseries(s2, landsat, config=cfg)
    ds = filled.reset_coords("n_obs").rename({"n_obs": "ndvi_n_obs"})
    if phenology:
        from harmonize.phenology import phenology as season

        ds = ds.merge(season(filled.drop_vars("n_obs")), compat="override")
    with ProgressBar():
        write_zarr(ds, out, mode="w")
    click.echo(f"wrote {out} ({filled.sizes['time']} steps, method {cfg.method})")
    if plots:
        from harmonize.plot import plot_clear_observations, plot_ndvi_maps

        plots.mkdir(parents=True, exist_ok=True)
        cube = fuse(s2, landsat, same_day=cfg.same_day) if landsat is not None else s2
        plot_clear_observations(cube, path=plots / "clear_observations.png")
        filled_now = xr.open_zarr(out)["ndvi"]
        dates = filled_now["time"].values[:: max(1, filled_now.sizes["time"] // 4)][:4]
        plot_ndvi_maps(filled_now, list(dates), path=plots / "ndvi_maps.png")
        click.echo(f"figures in {plots}")


if __name__ == "__main__":  # pragma: no cover
    main()
