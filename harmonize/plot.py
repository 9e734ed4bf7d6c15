"""Figures of the fused, gap-filled time series (matplotlib, safe under the Agg backend).

Every function builds its own :class:`matplotlib.figure.Figure` (no pyplot state, so they work in
threads and headless jobs), returns it, and writes it when ``path`` is given.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from harmonize.errors import TimeSeriesError
from harmonize.timeseries import labels

__all__ = ["plot_ndvi_timeseries", "plot_ndvi_maps", "plot_clear_observations"]

log = logging.getLogger(__name__)

# A point is map coordinates (x, y) in the cube's CRS; a field is a boolean (y, x) mask.
Location = tuple[float, float] | xr.DataArray
SENSOR_STYLE = {
    "sentinel-2": {"marker": "o", "color": "tab:blue", "label": "Sentinel-2"},
    "landsat": {"marker": "^", "color": "tab:orange", "label": "Landsat (harmonized)"},
}


def _save(fig: Figure, path: str | PathLike[str] | None) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
        log.info("wrote %s", path)
    return fig


def _locations(points_or_fields: Any) -> dict[str, Location]:
    if isinstance(points_or_fields, Mapping):
        return {str(k): v for k, v in points_or_fields.items()}
    if isinstance(points_or_fields, xr.DataArray):
        return {"field": points_or_fields}
    out: dict[str, Location] = {}
    for i, p in enumerate(points_or_fields):
        out[f"point {i + 1}" if not isinstance(p, xr.DataArray) else f"field {i + 1}"] = p
    return out


def _extract(da: xr.DataArray, loc: Location) -> xr.DataArray:
    """Series at a point (nearest pixel) or the mean over a field mask."""
    if isinstance(loc, xr.DataArray):
        return da.where(loc.astype(bool)).mean(("y", "x"), skipna=True)
    x, y = loc
    return da.sel(x=x, y=y, method="nearest")


def plot_ndvi_timeseries(
    points_or_fields: Mapping[str, Location] | Sequence[Location] | xr.DataArray,
    observations: xr.DataArray,
    filled: xr.DataArray | None = None,
    truth: xr.DataArray | None = None,
    *,
    path: str | PathLike[str] | None = None,
    ncols: int = 2,
    title: str | None = None,
) -> Figure:
    """NDVI over time at points or fields: observations by sensor, gap-filled curve, truth.

    Parameters
    ----------
    points_or_fields
        ``{name: (x, y)}`` map coordinates (nearest pixel) or ``{name: mask}`` boolean ``(y, x)``
        field masks (field mean), or a list of either (named ``point 1`` …).
    observations
        Clear-sky NDVI ``(time, y, x)`` with a ``sensor`` time coordinate (``"sentinel-2"``,
        ``"landsat"``), e.g. ``ndvi_series(fuse(...))``. Sentinel-2 is drawn as circles,
        harmonized Landsat as triangles.
    filled
        Gap-filled NDVI (line), optional.
    truth
        True NDVI (dashed black), optional.
    path
        Where to write the figure (format from the suffix).
    ncols
        Panels per row.
    title
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    locs = _locations(points_or_fields)
    if not locs:
        raise TimeSeriesError("Give at least one point or field to plot.")
    n = len(locs)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(5.5 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    sensors = (
        labels(observations["sensor"].values)
        if "sensor" in observations.coords
        else np.array(["sentinel-2"] * observations.sizes["time"])
    )
    for ax, (name, loc) in zip(axes, locs.items(), strict=False):  # spare axes are hidden below
        obs = np.asarray(_extract(observations, loc).values, dtype=float)
        times = observations["time"].values
        for sensor in dict.fromkeys(sensors):
            style = SENSOR_STYLE.get(sensor, {"marker": "s", "color": "tab:gray", "label": sensor})
            sel = (sensors == sensor) & np.isfinite(obs)
            ax.scatter(
                times[sel],
                obs[sel],
                s=18,
                zorder=3,
                marker=style["marker"],
                color=style["color"],
                label=style["label"],
            )
        if truth is not None:
            tr = _extract(truth, loc)
            ax.plot(tr["time"].values, tr.values, "k--", lw=1.2, label="truth", zorder=2)
        if filled is not None:
            fl = _extract(filled, loc)
            method = filled.attrs.get("gap_fill_method", "gap-filled")
            ax.plot(
                fl["time"].values,
                fl.values,
                "-",
                color="tab:green",
                lw=1.6,
                label=f"filled ({method})",
                zorder=2,
            )
        ax.set_title(name)
        ax.set_ylabel("NDVI")
        ax.set_ylim(-0.2, 1.0)
        ax.grid(alpha=0.3)
        for label in ax.get_xticklabels():
            label.set_rotation(30)
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].legend(loc="lower center", fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_ndvi_maps(
    ndvi: xr.DataArray,
    dates: Sequence[Any],
    *,
    path: str | PathLike[str] | None = None,
    ncols: int = 4,
    vmin: float = -0.2,
    vmax: float = 1.0,
) -> Figure:
    """NDVI maps at chosen dates (nearest time step of ``ndvi``).

    Parameters
    ----------
    ndvi
        NDVI ``(time, y, x)``.
    dates
        Dates to show (anything pandas reads); each picks the nearest step.
    path
        Where to write the figure.
    ncols
        Maps per row.
    vmin, vmax
        Colour range.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not len(dates):
        raise TimeSeriesError("Give at least one date to map.")
    sel = ndvi.sel(time=[pd.Timestamp(d) for d in dates], method="nearest")
    values = np.asarray(sel.values, dtype=float)
    n = len(dates)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(3.2 * ncols + 0.8, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    x, y = ndvi["x"].values, ndvi["y"].values
    extent = (x.min(), x.max(), y.min(), y.max())
    im = None
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.set_visible(False)
            continue
        im = ax.imshow(
            values[i],
            cmap="RdYlGn",
            vmin=vmin,
            vmax=vmax,
            extent=extent,
            origin="upper" if y[0] > y[-1] else "lower",
            interpolation="nearest",
        )
        ax.set_title(str(pd.Timestamp(sel["time"].values[i]).date()))
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="NDVI")
    return _save(fig, path)


def plot_clear_observations(
    cube: xr.Dataset | xr.DataArray, *, path: str | PathLike[str] | None = None
) -> Figure:
    """Clear observations per pixel and month, by sensor (grouped bar chart).

    Parameters
    ----------
    cube
        A cube with a boolean ``clear`` variable (or a boolean DataArray) ``(time, y, x)`` and a
        ``sensor`` time coordinate, e.g. the output of :func:`harmonize.timeseries.fuse`.
    path
        Where to write the figure.

    Returns
    -------
    matplotlib.figure.Figure
        Bar height = mean over pixels of the number of clear observations in the month.
    """
    clear = cube["clear"] if isinstance(cube, xr.Dataset) else cube
    frac = np.asarray(clear.astype(np.float32).mean(("y", "x")).values, dtype=float)
    sensors = labels(clear["sensor"].values) if "sensor" in clear.coords else np.array(["all"] * frac.size)
    month = pd.DatetimeIndex(clear["time"].values).to_period("M")
    table = pd.DataFrame({"month": month, "sensor": sensors, "clear": frac}).pivot_table(
        index="month", columns="sensor", values="clear", aggfunc="sum", fill_value=0.0
    )
    known = [s for s in SENSOR_STYLE if s in table.columns]
    table = table[known + [c for c in table.columns if c not in known]]
    fig = Figure(figsize=(max(6.0, 0.45 * len(table) + 2), 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, table.shape[1])
    pos = np.arange(len(table))
    for i, sensor in enumerate(table.columns):
        style = SENSOR_STYLE.get(sensor, {"color": "tab:gray", "label": sensor})
        ax.bar(
            pos + (i - (table.shape[1] - 1) / 2) * width,
            table[sensor].values,
            width,
            color=style["color"],
            label=style["label"],
        )
    ax.set_xticks(pos, [str(m) for m in table.index], rotation=45, ha="right")
    ax.set_ylabel("clear observations per pixel")
    ax.set_title("Clear observations per month")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
