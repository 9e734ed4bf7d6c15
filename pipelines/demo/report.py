"""The demo's report: what harmonize did to a simulated year, measured against truth.

:func:`write_report` reads the outputs of the pipeline stages (co-registered cube, pair index,
model package, harmonized Landsat) and the simulator's truth, and writes ``report/report.md``
and ``report/report.html`` with one section each:

- the harmonization table: each baseline and the UNet scored against truth on held-out blocks,
  its consistency with the 30 m input and improvement / omission / hallucination fractions
  (after opensr-test), and a before/after image comparison (Landsat input | harmonized |
  Sentinel-2 | truth);
- calibrated uncertainty: coverage of ±1σ / ±2σ against truth of the spreads the demo's model
  can give (MC-dropout when it has dropout; the snapshot ensemble of its kept epoch weights),
  recalibrated on validation windows when off by more than 5 points;
- the gap-filling tables: NDVI RMSE against truth for Sentinel-2 alone, + harmonized Landsat and
  + raw Landsat, per method; single observations' error; coverage;
- what Landsat adds: clear observations gained, same-day NDVI agreement;
- the figures: NDVI time series of fields against their true curves, NDVI maps, clear
  observations per month;
- the training curves and the timings.

Every number also goes to ``report/metrics.json`` for machines.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from harmonize.bandpass import LinearAdjustment
from harmonize.bands import REFLECTANCE_BANDS
from harmonize.indices import ndvi
from harmonize.plot import plot_clear_observations, plot_ndvi_maps, plot_ndvi_timeseries
from harmonize.timeseries import TimeSeriesConfig
from pipelines.core.stores import read_index, read_observations
from pipelines.demo.figures import comparison_figure, largest_fields
from pipelines.demo.markdown import markdown_table, markdown_to_html
from pipelines.demo.paths import demo_paths, open_cube, open_harmonized
from pipelines.evaluation.coregistration import USABLE_CLEAR, coregistration_summary, coregistration_table
from pipelines.evaluation.harmonization import (
    OPENSR_COLUMNS,
    baseline_windows,
    calibration_table,
    calibration_windows,
    harmonization_table,
)
from pipelines.evaluation.timeseries import (
    COMBINATIONS,
    FUSED,
    S2_PLAIN,
    S2_SHARP,
    clear_observation_gain,
    gapfill_table,
    ndvi_observations,
    observation_error_table,
    same_day_ndvi_agreement,
    subsample_pixels,
)
from pipelines.evaluation.truth import sensor_part, truth_on_grid

log = logging.getLogger(__name__)

__all__ = ["write_report", "prepare_report"]

#: A section's Markdown lines and the numbers it adds to ``metrics.json``.
Section = tuple[list[str], dict[str, Any]]

_FUSED = FUSED
#: The keys of ``metrics.json``'s flat ``summary`` (issue 13), in the report's order.
SUMMARY_KEYS: tuple[str, ...] = (
    "psnr_gain_db",
    "nir_psnr_gain_db",
    "coregistered_fraction",
    "shift_rmse_m",
    "ndvi_rmse_fused_all",
    "ndvi_rmse_s2_plain_all",
    "ndvi_rmse_s2_best_all",
    "fused_vs_s2_plain_all",
    "fused_vs_s2_best_all",
    "fused_vs_s2_interior",
    "clear_obs_gain",
)


@dataclass(frozen=True)
class _Inputs:
    """What the report reads: the world, the stages' products, training folder and timings."""

    world: Any
    truth: xr.Dataset
    cube: xr.Dataset
    harmonized: xr.Dataset
    pair_index: pd.DataFrame
    model_dir: Path | None
    timings: dict[str, Any] | None
    timeseries: Any  # the time-series stage's harmonize.timeseries.TimeSeriesConfig
    product: xr.DataArray | None  # the stage's stored NDVI observations (None: not from ``out``)
    landsat_phase: tuple[int, int]  # where the Landsat 30 m pixels start in the cube (row, col)


@dataclass(frozen=True)
class _Series:
    """The NDVI series the gap-filling, Landsat and figure sections share (computed once)."""

    s2: xr.Dataset
    landsat: xr.Dataset
    harmonized: xr.Dataset
    observations: dict[str, xr.DataArray]
    table: pd.DataFrame
    filled: dict[str, dict[str, xr.DataArray]]
    observation_error: pd.DataFrame


def _gather_inputs(
    out: Path,
    world: Any,
    *,
    cube: xr.Dataset | None,
    harmonized: xr.Dataset | None,
    pair_index: pd.DataFrame | None,
    model_dir: str | Path | None,
    timings: dict[str, Any] | None,
    timeseries: dict[str, Any] | None,
) -> _Inputs:
    """The arguments given, the rest read from the demo folder ``out``."""
    paths = demo_paths(out)
    if world is None:
        from harmonize.world import open_world

        world = open_world(paths["world"])
    if model_dir is None and paths["model_package"].is_dir():
        model_dir = paths["model_package"]
    if timings is None and paths["timings"].exists():
        timings = json.loads(paths["timings"].read_text())
    if timeseries is None and paths["demo"].exists():
        timeseries = json.loads(paths["demo"].read_text()).get("timeseries_settings")
    # the fused series as the stage stored it, when the products here are the ones it fused
    stored = paths["timeseries"] / "observations.zarr"
    product = read_observations(stored) if harmonized is None and cube is None and stored.exists() else None
    ts_cfg = TimeSeriesConfig.build(**(timeseries or {}))
    if product is not None and product.attrs.get("sharpen_s2_nir") != int(ts_cfg.sharpen_s2_nir):
        product = None  # made before its settings were recorded, or with others: recompute
    cube = open_cube(out) if cube is None else cube
    return _Inputs(
        world=world,
        truth=world.truth,
        cube=cube,
        harmonized=open_harmonized(out) if harmonized is None else harmonized,
        pair_index=read_index(paths["pairs"]) if pair_index is None else pair_index,
        model_dir=None if model_dir is None else Path(model_dir),
        timings=timings,
        timeseries=ts_cfg,
        product=product,
        landsat_phase=_landsat_phase(paths["cube"], cube),
    )


def _landsat_phase(cube_dir: Path, cube: xr.Dataset) -> tuple[int, int]:
    """Where the 30 m grid Landsat was stored on starts in the cube (``(0, 0)`` without one)."""
    from harmonize.lowfreq import grid_phase
    from pipelines.core.native import stored_landsat_grids

    grids = stored_landsat_grids(cube_dir)
    return grid_phase(cube.odc.geobox, next(iter(grids.values()))) if grids else (0, 0)


def _introduction(inputs: _Inputs) -> list[str]:
    """The title and what was simulated and run."""
    cfg, cube = inputs.world.config, inputs.cube
    return [
        "# harmonize demo report",
        "",
        f"A simulated {cfg.size_km:g} km × {cfg.size_km:g} km area, {cfg.start} to {cfg.end}: "
        f"{int((cube['sensor'] == 'sentinel-2').sum())} Sentinel-2 and "
        f"{int((cube['sensor'] == 'landsat').sum())} Landsat time steps, searched through a local "
        "STAC API, loaded, co-registered, paired, used to train a UNet, harmonized and fused. "
        "Every figure below is measured against the simulator's noise-free, cloud-free truth.",
        "",
    ]


def _model_name(model_dir: Path | None) -> str:
    """``UNet (PRESET)`` from the package's ``mlm.json``, or ``UNet``."""
    preset = None
    if model_dir is not None and Path(model_dir, "mlm.json").exists():
        doc = json.loads(Path(model_dir, "mlm.json").read_text())
        preset = doc.get("properties", doc).get("harmonize:preset")
    return f"UNet ({preset})" if preset else "UNet"


def _harmonization_section(
    inputs: _Inputs,
    rep: Path,
    max_windows: int,
    fitted: LinearAdjustment | None = None,
    baselines: dict[str, Any] | None = None,
) -> Section:
    """Every method against truth on the held-out test blocks, and the before/after figure."""
    log.info("report: scoring harmonization on held-out blocks")
    model_name = _model_name(inputs.model_dir)
    table, details = harmonization_table(
        inputs.cube,
        inputs.pair_index,
        inputs.truth,
        {model_name: inputs.harmonized},
        fitted=fitted,
        max_windows=max_windows,
        opensr=True,
        landsat_phase=inputs.landsat_phase,
        baselines=baselines,
    )
    main_cols = ["PSNR", "SSIM", "SAM (deg)", "NRMSE", "NDVI r"]
    per_band = table[[f"PSNR {b}" for b in REFLECTANCE_BANDS]].rename(columns=lambda c: c[5:])
    base = table.loc[[i for i in table.index if "fitted linear" in i][0], "PSNR"]
    gain = table.loc[model_name, "PSNR"] - base
    linear = [i for i in table.index if "fitted linear" in i][0]
    nir_gain = table.loc[model_name, "PSNR nir"] - table.loc[linear, "PSNR nir"]
    md = [
        "## Harmonization against truth (held-out test blocks)",
        "",
        f"{details['windows']} test windows ({details['pixels']:,} clear pixels), spatially separate "
        "from every training window. PSNR in dB on reflectance (data range 1).",
        "",
        markdown_table(table[main_cols], index_name="method"),
        "",
        "PSNR per band (dB):",
        "",
        markdown_table(per_band, index_name="method"),
        "",
        f"The model's PSNR gain over resampling + fitted linear bandpass: **{gain:+.2f} dB** "
        f"(nir: **{nir_gain:+.2f} dB**).",
        "",
        *_opensr_lines(table, model_name, details),
    ]
    figure = rep / "comparison.png"
    if comparison_figure(inputs.cube, inputs.harmonized, inputs.truth, inputs.pair_index, figure):
        md += ["![before/after](comparison.png)", ""]
    metrics = {
        "table": table.to_dict(orient="index"),
        **details,
        "psnr_gain_over_linear_db": float(gain),
        "nir_psnr_gain_over_linear_db": float(nir_gain),
    }
    return md, {"harmonization": metrics}


def _opensr_lines(table: pd.DataFrame, model_name: str, details: dict[str, Any]) -> list[str]:
    """The consistency and improvement / omission / hallucination table, after opensr-test."""
    cols = [c for c in OPENSR_COLUMNS if c in table.columns]
    if not cols:
        return []
    row = table.loc[model_name]
    phase = details.get("landsat_phase", [0, 0])
    return [
        "What PSNR hides (after the opensr-test protocol). *Consistency* with the input, computable "
        "on real scenes with no reference: the 30 m means (over the Landsat pixels, which start at "
        f"row {phase[0]}, column {phase[1]} of the cube) of each output against the HLS-adjusted "
        "Landsat input: mean absolute error, percent bias, spectral angle, and the residual shift "
        "(nir, sub-pixel registration). *Correctness* against truth, per 10 m pixel: whether the "
        "output moved from the input toward the truth (improvement), stayed like the input "
        "(omission) or moved away from both (hallucination), as fractions of the pixels where "
        "input, output and truth differ by more than 0.005; unresolved: the rest.",
        "",
        markdown_table(table[cols], index_name="method", floatfmt="{:.4g}"),
        "",
        f"The model: {row['improvement']:.1%} of pixels improved, {row['omission']:.1%} left as the "
        f"input, {row['hallucination']:.1%} hallucinated; 30 m consistency {row['30 m MAE']:.4f} "
        f"reflectance ({row['30 m pbias %']:+.2f} % bias), residual shift {row['shift (m)']:.1f} m.",
        "",
    ]


def _dropout_rate(model: Any) -> float:
    """The largest dropout probability among ``model``'s dropout layers (0 without any)."""
    import torch

    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    return float(max(rates, default=0.0))


def _snapshot_members(model_dir: Path, model: Any) -> tuple[list[Any], list[str]]:
    """Copies of the packaged model with each distinct set of weights the training folder kept
    (its epoch checkpoints and best weights), and their names."""
    import copy
    import hashlib

    from safetensors.torch import load_file

    run = model_dir if (model_dir / "checkpoints").is_dir() else model_dir.parent
    files = sorted(run.glob("checkpoints/epoch-*/model.safetensors")) + sorted(run.glob("best.safetensors"))
    members, names, seen = [], [], set()
    for f in files:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        m = copy.deepcopy(model)
        m.load_state_dict(load_file(str(f)))
        members.append(m.eval())
        names.append(f.parent.name if f.name == "model.safetensors" else f.stem)
    return members, names


def _uncertainty_methods(model_dir: Path | None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The spreads the demo's model can give, and what it cannot, in words."""
    from harmonize.model import load_model_package

    if model_dir is None or not (model_dir / "mlm.json").exists():
        return {}, ["no model package: nothing to calibrate."]
    model, _ = load_model_package(model_dir)
    methods: dict[str, dict[str, Any]] = {}
    notes = []
    rate = _dropout_rate(model)
    if rate > 0:
        methods[f"MC-dropout (p={rate:g}, 8 passes)"] = {"model": str(model_dir), "uncertainty": "mc_dropout",
                                                        "mc_passes": 8}
    else:
        notes.append("MC-dropout: the demo's model has no dropout (its preset's dropout is 0), so repeated "
                     "passes are identical; no MC-dropout spread to calibrate.")
    members, names = _snapshot_members(model_dir, model)
    if len(members) >= 2:
        methods[f"snapshot ensemble ({', '.join(names)})"] = {"model": members, "uncertainty": "ensemble"}
    else:
        notes.append("Ensemble: the training folder keeps fewer than two distinct sets of weights.")
    return methods, notes


def _calibration_section(inputs: _Inputs, max_windows: int, windows: dict[str, Any] | None = None) -> Section:
    """Coverage of ±1σ / ±2σ against truth on the test blocks, before and after recalibration."""
    log.info("report: calibrating the model's uncertainty")
    methods, notes = _uncertainty_methods(inputs.model_dir)
    md = ["## Calibrated uncertainty (held-out test blocks)", ""]
    md += [f"- {n}" for n in notes] + ([""] if notes else [])
    if not methods:
        return md, {"calibration": {"methods": {}, "notes": notes}}
    # the windows with a 16-pixel mirror halo, 16 validation windows: a few seconds on 2 CPUs
    table, details = calibration_table(inputs.cube, inputs.pair_index, inputs.truth, methods,
                                       max_windows=max_windows, val_windows=CALIBRATION_VAL_WINDOWS,
                                       halo=16, inputs=windows)
    shown = table.copy()
    for c in [c for c in shown.columns if c.startswith("±")]:
        shown[c] = shown[c].map("{:.1%}".format)
    md += [
        f"Fraction of the truth within ±1σ and ±2σ of the mean ({details['windows']} test windows, "
        f"{details['pixels']:,} clear pixels, all bands; nominal 68.3 % and 95.4 %). Where either is off "
        "by more than 5 points, a σ scale per band and interval is fitted on "
        f"{details['val_windows']} validation windows (never the test ones; split-conformal: the "
        "quantile of |error| / σ at the nominal coverage, since one scale cannot fix both intervals "
        "of heavy-tailed errors) and the test coverage measured again. The snapshot ensemble's "
        "members are the weights the training run kept "
        "(its last epochs and best epoch): near copies of one model, so its spread is a lower bound "
        "on the model's uncertainty.",
        "",
        markdown_table(shown, index_name="uncertainty", floatfmt="{:.4g}"),
        "",
    ]
    return md, {"calibration": {**details, "table": table.to_dict(orient="index"), "notes": notes}}


def _guarded(section: Any, *args: Any) -> Section:
    """``section(*args)``, or a line saying why it is left out: the rest of the report stands."""
    try:
        return section(*args)
    except Exception as exc:  # an added section must not cost the whole report
        log.warning("report: %s left out (%s: %s)", section.__name__, type(exc).__name__, exc)
        return [f"*({section.__name__.strip('_').replace('_', ' ')} left out: {type(exc).__name__}: {exc})*",
                ""], {}


def _registered(landsat: xr.Dataset, cube: xr.Dataset) -> xr.Dataset:
    """``landsat`` without the dates ingest flagged as not co-registered (the product leaves
    them out: :func:`pipelines.stages.timeseries.drop_unregistered`)."""
    if "shift_flagged" not in cube.coords:
        return landsat
    flagged = np.asarray(cube["shift_flagged"].values, bool)
    bad = pd.DatetimeIndex(cube["time"].values[flagged & (np.asarray(cube["sensor"].values) == "landsat")])
    keep = ~pd.DatetimeIndex(landsat["time"].values).isin(bad)
    return landsat.isel(time=np.flatnonzero(keep))


def _score_series(inputs: _Inputs, pixel_step: int) -> _Series:
    """NDVI observations of each sensor combination, gap-filled and scored against truth."""
    log.info("report: gap-filling NDVI against truth")
    s2 = sensor_part(inputs.cube, "sentinel-2")
    landsat = _registered(sensor_part(inputs.cube, "landsat"), inputs.cube)
    harm = _registered(inputs.harmonized, inputs.cube)
    if "clear" not in harm and "clear" in landsat:
        harm = harm.assign(clear=landsat["clear"].sel(time=harm["time"]))
    observations = ndvi_observations(
        s2, landsat, harm, pixel_step=pixel_step, config=inputs.timeseries, product=inputs.product
    )
    table, filled = gapfill_table(observations, inputs.truth)
    return _Series(
        s2=s2,
        landsat=landsat,
        harmonized=harm,
        observations=observations,
        table=table,
        filled=filled,
        observation_error=observation_error_table(observations, inputs.truth),
    )


def _by_method(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """``column`` of the gap-filling table as method x combination, combinations in report order."""
    order = [c for c in COMBINATIONS if c in set(table["inputs"])]
    return table.pivot(index="method", columns="inputs", values=column)[order]


def _fused_over_s2_alone(by_method: pd.DataFrame) -> float:
    """Best method's RMSE with harmonized Landsat over the best with plain Sentinel-2 alone."""
    best = by_method.min(axis=0)
    return float(best.get(_FUSED, np.nan) / best.get(S2_PLAIN, np.nan))


def _product_figures(series: _Series, method: str) -> dict[str, float]:
    """The product (fused, the stage's gap-fill ``method``) against the Sentinel-2-only series."""
    rmse = _by_method(series.table, "NDVI RMSE")
    inner = _by_method(series.table, "NDVI RMSE interior")
    s2_cols = [c for c in (S2_PLAIN, S2_SHARP) if c in rmse.columns]
    fused = float(rmse.loc[method, _FUSED]) if method in rmse.index else float(rmse[_FUSED].min())
    fused_in = float(inner.loc[method, _FUSED]) if method in inner.index else float(inner[_FUSED].min())
    plain, best = float(rmse[S2_PLAIN].min()), float(rmse[s2_cols].min().min())
    return {
        "ndvi_rmse_fused_all": fused,
        "ndvi_rmse_s2_plain_all": plain,
        "ndvi_rmse_s2_best_all": best,
        "fused_vs_s2_plain_all": fused / plain,
        "fused_vs_s2_best_all": fused / best,
        "fused_vs_s2_interior": fused_in / float(inner[S2_PLAIN].min()),
        "fused_vs_s2_best_interior": fused_in / float(inner[s2_cols].min().min()),
    }


def _gapfill_numbers(series: _Series, method: str) -> dict[str, Any]:
    """The gap-filling section's figures for ``metrics.json``."""
    rmse = _by_method(series.table, "NDVI RMSE")
    same_method = {}
    for m in ("whittaker", "linear"):
        if m in rmse.index and {S2_PLAIN, _FUSED} <= set(rmse.columns):
            same_method[m] = float(rmse.loc[m, _FUSED] / rmse.loc[m, S2_PLAIN])
    lmbdas = {
        # one lambda, or one per group of pixels (edges, interiors: a (y, x) coordinate)
        combo: [float(v) for v in np.unique(series.filled["whittaker"][combo]["gap_fill_lmbda"].values)]
        for combo in rmse.columns
        if "whittaker" in series.filled and combo in series.filled["whittaker"]
    }
    lmbdas = {k: v[0] if len(v) == 1 else v for k, v in lmbdas.items()}
    return {
        "gapfill": series.table.to_dict(orient="records"),
        "gapfill_best_ratio": _fused_over_s2_alone(rmse),
        "gapfill_best_ratio_interior": _fused_over_s2_alone(_by_method(series.table, "NDVI RMSE interior")),
        "gapfill_same_method_ratio": same_method,
        "gapfill_product": {"method": method, **_product_figures(series, method)},
        "whittaker_lmbda": lmbdas,
        "observation_error": series.observation_error.to_dict(orient="index"),
    }


def _gapfill_section(series: _Series, pixel_step: int, method: str) -> Section:
    """Gap-filled NDVI against truth: everywhere, on parcel interiors, single observations, coverage."""
    numbers = _gapfill_numbers(series, method)
    product = numbers["gapfill_product"]
    ratio_in = numbers["gapfill_best_ratio_interior"]
    lmbdas = numbers["whittaker_lmbda"]
    obs_err = series.observation_error
    chosen = ", ".join(
        f"{k}: λ={'/'.join(f'{x:g}' for x in np.atleast_1d(v))}" for k, v in lmbdas.items() if v is not None
    )
    md = [
        "## Gap-filled NDVI against truth",
        "",
        f"NDVI RMSE of each gap-filling method on a regular 5-day axis (every {pixel_step}th pixel in "
        "x and y; all inputs scored on the same pixel-dates):",
        "",
        markdown_table(_by_method(series.table, "NDVI RMSE"), index_name="method"),
        "",
        f"The product (Sentinel-2 + harmonized Landsat, {method}, as the time-series stage fills it) "
        f"against Sentinel-2 alone at its best method: **{product['fused_vs_s2_plain_all']:.2f}×** the "
        f"RMSE of plain Sentinel-2 (its 20 m nir as delivered), **{product['fused_vs_s2_best_all']:.2f}×** "
        "the best Sentinel-2-only series harmonize can make (nir sharpened or not, best method).",
        "",
        "Landsat observations are weighted by how far their 30 m view can be trusted "
        "(`harmonize.timeseries.observation_weights`: heterogeneity of the 10 m scene within a "
        "Landsat pixel, after each pixel's Landsat offset from Sentinel-2 is corrected), and "
        "Whittaker's smoothing is chosen per "
        "input by generalized cross-validation"
        + (f" ({chosen})." if any(v is not None for v in lmbdas.values()) else "."),
        "",
        "The same on parcel interiors only (no field or land-cover edge within 30 m; no water, roads or "
        "buildings), where NDVI error is not dominated by mixing 10 m red with 20-30 m NIR at edges:",
        "",
        markdown_table(_by_method(series.table, "NDVI RMSE interior"), index_name="method"),
        "",
        f"On interiors the product is **{product['fused_vs_s2_interior']:.2f}×** the RMSE of plain "
        f"Sentinel-2 alone ({product['fused_vs_s2_best_interior']:.2f}× the best Sentinel-2-only series; "
        f"best method on both: {ratio_in:.2f}×).",
        "",
        "Single clear observations against truth on their own day (NDVI RMSE). This is the floor "
        "under every filled series: filling in time bridges clouds and averages noise, but a pixel "
        "a sensor sees wrongly on every date (Sentinel-2's 20 m nir across a field edge or a shore) "
        "stays wrong, so over all pixels the fused series cannot fall much below Sentinel-2's own "
        "error:",
        "",
        markdown_table(
            obs_err.assign(**{"pixel-dates": obs_err["pixel-dates"].map("{:,}".format)}),
            index_name="observations",
            floatfmt="{:.4f}",
        ),
        "",
        "Share of the true pixel-dates each combination could fill (gaps longer than max_gap stay NaN):",
        "",
        markdown_table(_by_method(series.table, "coverage"), index_name="method", floatfmt="{:.1%}"),
        "",
    ]
    return md, numbers


def _landsat_section(series: _Series, gain_obs: dict[str, Any] | None = None) -> Section:
    """What Landsat adds: clear observations per year (``gain_obs``: computed beforehand),
    same-day NDVI agreement."""
    gain_obs = clear_observation_gain(series.s2, series.landsat) if gain_obs is None else gain_obs
    agree = same_day_ndvi_agreement(series.s2, series.landsat, series.harmonized)
    md = [
        "## What Landsat adds",
        "",
        f"- Clear observations per pixel per year: Sentinel-2 alone {gain_obs['s2_only']:.1f}, "
        f"fused {gain_obs['fused']:.1f} (**{gain_obs['gain_percent']:+.0f} %**; co-registered Landsat "
        "scenes only, as the product uses them).",
        f"- Same-day NDVI Pearson r, Landsat vs Sentinel-2 ({agree['pairs']} same-day pairs, "
        f"{agree['pixels']:,} pixels clear in both): before harmonization {agree['r_before']:.3f}, "
        f"after {agree['r_after']:.3f} ({agree.get('gain_percent_abs', float('nan')):+.1f} % absolute; "
        f"at most {100 * (1 - agree['r_before']):+.1f} % was left to gain).",
        "",
    ]
    return md, {"clear_observations": gain_obs, "same_day_ndvi": agree}


def _coregistration_section(inputs: _Inputs, table: pd.DataFrame | None = None) -> Section:
    """Every Landsat scene's applied shift against the one the simulator injected (``table``:
    :func:`~pipelines.evaluation.coregistration.coregistration_table`, made beforehand)."""
    if table is None:
        table = coregistration_table(inputs.cube, inputs.world.scene, inputs.truth)
    summary = coregistration_summary(table)
    usable = table["clear_land"] >= USABLE_CLEAR
    shown = table.assign(usable=usable).reset_index()
    shown["time"] = shown["time"].dt.strftime("%Y-%m-%d")
    cols = ["time", "item_id", "clear_land", "usable", "flagged", "dx", "dy", "true_dx", "true_dy", "error_m"]
    md = [
        "## Co-registration against the injected shifts",
        "",
        f"{int(summary['scenes'])} Landsat scenes, {int(summary['usable'])} usable (at least "
        f"{USABLE_CLEAR:.0%} of the land clear): **{int(summary['coregistered'])} co-registered "
        f"({summary['coregistered_fraction']:.0%})**; applied shift against the simulator's manifest "
        f"over the usable scenes: **{summary['shift_rmse_m']:.2f} m RMSE** (a flagged scene counts with "
        "its whole injected shift). Flagged scenes are left out of the fused series.",
        "",
        "<details><summary>Every scene (metres)</summary>",
        "",
        markdown_table(shown[cols].set_index("time"), index_name="time", floatfmt="{:.2f}"),
        "",
        "</details>",
        "",
    ]
    return md, {"coregistration": {**summary, "scenes_table": table.reset_index().to_dict(orient="records")}}


def _summary(metrics: dict[str, Any]) -> dict[str, float]:
    """The flat ``summary`` of ``metrics.json``: exactly :data:`SUMMARY_KEYS`, floats."""
    harm, co = metrics["harmonization"], metrics["coregistration"]
    product = metrics["gapfill_product"]
    gain = metrics["clear_observations"]
    values = {
        "psnr_gain_db": harm["psnr_gain_over_linear_db"],
        "nir_psnr_gain_db": harm["nir_psnr_gain_over_linear_db"],
        "coregistered_fraction": co["coregistered_fraction"],
        "shift_rmse_m": co["shift_rmse_m"],
        **{k: product[k] for k in SUMMARY_KEYS if k in product},
        "clear_obs_gain": gain["gain_percent"] / 100.0,
    }
    return {k: float(values[k]) for k in SUMMARY_KEYS}


def _summary_lines(summary: dict[str, float]) -> list[str]:
    """The summary as the report's first table (the same numbers as ``metrics.json``)."""
    labels = {
        "psnr_gain_db": "PSNR gain over resampling + fitted linear, held-out blocks (dB)",
        "nir_psnr_gain_db": "nir PSNR gain over resampling + fitted linear (dB)",
        "coregistered_fraction": "usable Landsat scenes co-registered",
        "shift_rmse_m": "applied-shift RMSE over usable scenes against the manifest (m)",
        "ndvi_rmse_fused_all": "gap-filled NDVI RMSE, fused product, all pixels",
        "ndvi_rmse_s2_plain_all": "gap-filled NDVI RMSE, plain Sentinel-2 alone (best method)",
        "ndvi_rmse_s2_best_all": "gap-filled NDVI RMSE, best Sentinel-2-only series",
        "fused_vs_s2_plain_all": "fused / plain Sentinel-2 alone, all pixels",
        "fused_vs_s2_best_all": "fused / best Sentinel-2 alone, all pixels",
        "fused_vs_s2_interior": "fused / plain Sentinel-2 alone, parcel interiors",
        "clear_obs_gain": "clear observations Landsat adds (fraction of Sentinel-2's)",
    }
    rows = pd.DataFrame(
        {"value": [summary[k] for k in SUMMARY_KEYS], "what": [labels[k] for k in SUMMARY_KEYS]},
        index=pd.Index(list(SUMMARY_KEYS), name="summary"),
    )
    return ["## Summary", "", markdown_table(rows, index_name="key", floatfmt="{:.4g}"), ""]


def _figures_section(series: _Series, truth: xr.Dataset, rep: Path, pixel_step: int) -> list[str]:
    """Field NDVI curves against truth, NDVI maps and clear observations per month, from the
    series already computed for the tables."""
    s2_sub = subsample_pixels(series.s2, pixel_step)
    obs = series.observations[_FUSED]
    filled = series.filled["whittaker"][_FUSED]
    truth_ndvi = ndvi(truth_on_grid(truth, s2_sub)).compute()
    fields = largest_fields(truth, s2_sub)
    md: list[str] = []
    if fields:
        plot_ndvi_timeseries(
            fields,
            obs,
            filled,
            truth_ndvi,
            path=rep / "ndvi_timeseries.png",
            title="Field-mean NDVI: observations by sensor, Whittaker fill, truth",
        )
        md += ["## NDVI time series of fields", "", "![NDVI time series](ndvi_timeseries.png)", ""]
    times = filled["time"].values
    dates = [times[int(i)] for i in np.linspace(len(times) * 0.15, len(times) * 0.85, 4).astype(int)]
    plot_ndvi_maps(filled, dates, path=rep / "ndvi_maps.png")
    # the fused observations are in memory already: a clear observation is a finite NDVI
    plot_clear_observations(obs.notnull().rename("clear"), path=rep / "clear_observations.png")
    return md + [
        "## NDVI maps (gap-filled, fused)",
        "",
        "![NDVI maps](ndvi_maps.png)",
        "",
        "## Clear observations per month",
        "",
        "![clear observations](clear_observations.png)",
        "",
    ]


def _training_section(model_dir: Path | None, rep: Path) -> list[str]:
    """The training history and the curves the training stage drew, copied beside the report."""
    if model_dir is None:
        return []
    # The package sits inside the training folder, beside the curves and the history.
    if not (model_dir / "history.csv").exists() and (model_dir.parent / "history.csv").exists():
        model_dir = model_dir.parent
    pics = [p for p in ("loss_curve.png", "results.png", "lr_find.png") if (model_dir / p).exists()]
    if not pics and not (model_dir / "history.csv").exists():
        return []
    md = ["## Training", ""]
    if (model_dir / "history.csv").exists():
        hist = pd.read_csv(model_dir / "history.csv")
        md += [markdown_table(hist.set_index(hist.columns[0]), index_name=hist.columns[0]), ""]
    for p in pics:
        (rep / p).write_bytes((model_dir / p).read_bytes())
        md += [f"![{p}]({p})", ""]
    return md


def _timings_section(timings: dict[str, Any] | None) -> Section:
    """Seconds per stage."""
    if not timings:
        return [], {}
    tt = pd.DataFrame({"seconds": timings}).rename_axis("stage")
    md = ["## Timings", "", markdown_table(tt, floatfmt="{:.1f}", index_name="stage"), ""]
    return md, {"timings_s": timings}


def _linked_sections(out: Path) -> list[str]:
    """Sections other modules write for the report (the interactive map ...), each a Markdown
    string; one that fails is logged and left out, the rest of the report stands."""
    from pipelines.demo.classification import classification_section
    from pipelines.demo.lst import lst_section
    from pipelines.demo.webmap import map_section

    lines: list[str] = []
    sections = (
        ("crop-type map", classification_section),
        ("land surface temperature", lst_section),
        ("interactive map", map_section),
    )
    for name, section in sections:
        try:
            lines += [section(out), ""]
        except Exception as exc:  # an optional section must not cost the whole report
            log.warning("report: %s section left out (%s: %s)", name, type(exc).__name__, exc)
    return lines


def _json_default(o: Any) -> Any:
    """numpy scalars as Python numbers, anything else as its string."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def _write_pages(rep: Path, md: list[str], metrics: dict[str, Any]) -> Path:
    """``metrics.json``, ``report.md`` and ``report.html`` into ``rep``; the HTML page's path."""
    (rep / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    (rep / "report.md").write_text("\n".join(md))
    html_path = rep / "report.html"
    html_path.write_text(markdown_to_html("\n".join(md)))
    return html_path


#: Validation windows the calibration section recalibrates on.
CALIBRATION_VAL_WINDOWS = 16


def prepare_report(out: str | Path, world: Any, fitted: LinearAdjustment, *, max_windows: int = 64
                   ) -> dict[str, Any]:
    """The report's parts that need no model, for ``write_report(prepared=...)``: the
    baselines' and the calibration's windows (with their truth), the co-registration table and
    the clear observations Landsat adds. The demo computes them in its side process while
    training leaves a core idle (~7 CPU s on the demo world); the report is the same.

    Parameters
    ----------
    out
        The demo folder (cube and pair index written).
    world
        The simulated :class:`harmonize.world.World`.
    fitted
        The fitted linear bandpass baseline
        (:func:`pipelines.evaluation.harmonization.fit_on_training_blocks`).
    max_windows
        As in :func:`write_report`.
    """
    paths = demo_paths(out)
    cube, index, truth = open_cube(out), read_index(paths["pairs"]), world.truth
    landsat = _registered(sensor_part(cube, "landsat"), cube)
    return {
        "cube": paths["cube"].absolute(),
        "max_windows": max_windows,
        "baselines": baseline_windows(cube, index, truth, fitted, max_windows=max_windows),
        "calibration": calibration_windows(
            cube, index, truth, max_windows=max_windows, val_windows=CALIBRATION_VAL_WINDOWS
        ),
        "coregistration": coregistration_table(cube, world.scene, truth),
        "clear_observations": clear_observation_gain(sensor_part(cube, "sentinel-2"), landsat),
    }


def write_report(
    out: str | Path,
    world: Any = None,
    *,
    cube: xr.Dataset | None = None,
    harmonized: xr.Dataset | None = None,
    pair_index: pd.DataFrame | None = None,
    model_dir: str | Path | None = None,
    timings: dict[str, float] | None = None,
    timeseries: dict[str, Any] | None = None,
    pixel_step: int = 6,
    max_windows: int = 64,
    before_linked: Callable[[], Any] | None = None,
    fitted: LinearAdjustment | None = None,
    prepared: dict[str, Any] | None = None,
) -> Path:
    """Write the demo report into ``OUT/report``.

    Parameters
    ----------
    out
        The demo's output directory. Missing arguments are found there
        (:func:`pipelines.demo.paths.demo_paths`).
    world
        The simulated :class:`harmonize.world.World` (its truth is the reference).
    cube, harmonized, pair_index, model_dir
        The co-registered cube, the harmonized Landsat cube, the pair index and the model's
        training output folder.
    timings
        Seconds per stage, shown in the report.
    timeseries
        The time-series stage's settings (:class:`harmonize.timeseries.TimeSeriesConfig` fields),
        so the fused series is scored as the product makes it; default ``OUT/demo.json``'s.
    pixel_step
        Spatial subsampling of the per-pixel time-series evaluation (every 6th pixel in y and
        x: 7,225 pixels of the 5.12 km world, the fused/plain ratio within 0.02 of every 4th's
        at two thirds of the CPU).
    max_windows
        Cap on held-out windows scored in the harmonization table.
    before_linked
        Called before the sections other stages write (crop map, LST, interactive map) are
        read: the demo runs the classify stage beside the scoring and waits for it here.
    fitted
        The fitted linear bandpass baseline
        (:func:`pipelines.evaluation.harmonization.fit_on_training_blocks`), when it was fitted
        beforehand (the demo fits it beside training); by default fitted here.
    prepared
        The parts :func:`prepare_report` made beforehand from this folder (used only when the
        cube and pair index are read from ``out`` too, and for the same ``max_windows``).

    Returns
    -------
    pathlib.Path
        ``OUT/report/report.html`` (``report.md`` beside it).
    """
    t0 = time.perf_counter()
    out = Path(out)
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    inputs = _gather_inputs(
        out,
        world,
        cube=cube,
        harmonized=harmonized,
        pair_index=pair_index,
        model_dir=model_dir,
        timings=timings,
        timeseries=timeseries,
    )
    pre = prepared or {}
    if cube is not None or pair_index is not None or pre.get("max_windows") != max_windows or (
        pre.get("cube") != demo_paths(out)["cube"].absolute()
    ):
        pre = {}  # made from other inputs
    sections = [
        _harmonization_section(inputs, rep, max_windows, fitted, pre.get("baselines")),
        _guarded(_calibration_section, inputs, max_windows, pre.get("calibration")),
        _coregistration_section(inputs, pre.get("coregistration")),
    ]
    series = _score_series(inputs, pixel_step)
    sections += [
        _gapfill_section(series, pixel_step, inputs.timeseries.method),
        _landsat_section(series, pre.get("clear_observations")),
        (_figures_section(series, inputs.truth, rep, pixel_step), {}),
        (_training_section(inputs.model_dir, rep), {}),
        _timings_section(inputs.timings),
    ]
    body: list[str] = []
    metrics: dict[str, Any] = {}
    for lines, numbers in sections:
        body += lines
        metrics.update(numbers)
    metrics["summary"] = _summary(metrics)
    if before_linked is not None:
        before_linked()
    md = _introduction(inputs) + _summary_lines(metrics["summary"]) + body + _linked_sections(out)
    metrics["report_seconds"] = time.perf_counter() - t0
    html_path = _write_pages(rep, md, metrics)
    log.info("report written to %s (%.1f s)", html_path, metrics["report_seconds"])
    return html_path
