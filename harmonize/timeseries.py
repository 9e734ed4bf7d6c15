"""Sensor fusion, NDVI series, monthly composites and accuracy against truth.

The fused cube is the input of :func:`harmonize.gapfill.gap_fill`: Sentinel-2 and harmonized
Landsat on one 10 m grid, one time axis sorted in time, NaN wherever an observation is not clear.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import dask
import numpy as np
import pandas as pd
import xarray as xr
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harmonize.bands import REFLECTANCE_BANDS
from harmonize.errors import CRSMismatchError
from harmonize.gapfill import TimeSeriesError, gap_fill

__all__ = [
    "fuse",
    "ndvi",
    "ndvi_series",
    "monthly_composite",
    "ndvi_rmse_against_truth",
    "check_same_grid",
    "gap_fill",
    "SameDay",
    "TimeSeriesConfig",
    "ndvi_timeseries",
    "labels",
]

log = logging.getLogger(__name__)

SameDay = Literal["keep", "mean", "prefer-s2"]
SAME_DAY_RULES: tuple[str, ...] = ("keep", "mean", "prefer-s2")
S2, LANDSAT = "sentinel-2", "landsat"


def labels(values: Any) -> np.ndarray:
    """String labels (``sensor``, ``platform``) as a fixed-width unicode array.

    Coordinates read back from Zarr come as numpy's variable-width ``StringDType``, which
    ``.astype(str)`` refuses; going through ``object`` works for every string dtype.
    """
    return np.asarray(values).astype(object).astype(str)


def ndvi(ds: xr.Dataset) -> xr.DataArray:
    """NDVI ``(nir - red) / (nir + red)`` of a cube (lazy, float32, named ``"ndvi"``).

    Uses :func:`harmonize.indices.ndvi`; if that module is absent, an equivalent local formula.
    """
    try:
        from harmonize.indices import ndvi as _indices_ndvi
    except ImportError:  # pragma: no cover - indices.py not installed yet
        r, n = ds["red"].astype("float32"), ds["nir"].astype("float32")
        total = (n + r).where(lambda s: s > 0)
        out = ((n - r) / total).astype("float32").rename("ndvi")
        return out
    return _indices_ndvi(ds)


def ndvi_series(cube: xr.Dataset) -> xr.DataArray:
    """NDVI of every clear observation of a cube (NaN where ``clear`` is False), time coords kept."""
    out = ndvi(cube)
    if "clear" in cube.data_vars:
        out = out.where(cube["clear"])
    return out.rename("ndvi")


# --------------------------------------------------------------------------------------------
# fusion


def _geobox(obj: xr.Dataset | xr.DataArray) -> Any:
    try:
        import odc.geo.xr  # noqa: F401  registers .odc

        return obj.odc.geobox
    except Exception:  # pragma: no cover - odc-geo missing or no spatial dims
        return None


def check_same_grid(
    a: xr.Dataset | xr.DataArray, b: xr.Dataset | xr.DataArray, *, names: tuple[str, str] = ("a", "b")
) -> None:
    """Raise :class:`CRSMismatchError` unless ``a`` and ``b`` share CRS and pixel grid.

    Parameters
    ----------
    a, b
        Cubes with ``(y, x)`` coordinates and a CRS (``spatial_ref`` coordinate).
    names
        What to call them in the error message.
    """
    ga, gb = _geobox(a), _geobox(b)
    for g, name in ((ga, names[0]), (gb, names[1])):
        if g is None or getattr(g, "crs", None) is None:
            raise CRSMismatchError(
                f"The {name} cube carries no CRS/grid; load it with harmonize.cube.load_cube or "
                "attach one with .odc.assign_crs(...)."
            )
    if ga.crs != gb.crs:
        raise CRSMismatchError(
            f"The {names[0]} cube is in {ga.crs} and the {names[1]} cube in {gb.crs}; reproject one "
            f"onto the other, e.g. {names[1]}.odc.reproject({names[0]}.odc.geobox)."
        )
    if ga != gb:
        raise CRSMismatchError(
            f"The {names[0]} and {names[1]} cubes are on different pixel grids "
            f"({ga.shape} at {ga.affine[0]} m vs {gb.shape} at {gb.affine[0]} m); resample one onto "
            f"the other's grid, e.g. {names[1]}.odc.reproject({names[0]}.odc.geobox)."
        )


def _prepare(cube: xr.Dataset, sensor: str, bands: list[str]) -> xr.Dataset:
    clear = cube["clear"].astype(bool) if "clear" in cube.data_vars else None
    out = {}
    finite = None
    for b in bands:
        var = cube[b].astype(np.float32)
        if clear is not None:
            var = var.where(clear)
        out[b] = var
        finite = var.notnull() if finite is None else finite | var.notnull()
    assert finite is not None
    ds = xr.Dataset(out)
    ds["clear"] = finite if clear is None else (clear & finite)
    n = ds.sizes["time"]
    ds = ds.assign_coords(
        sensor=("time", labels(cube["sensor"].values) if "sensor" in cube.coords else [sensor] * n),
        platform=("time", labels(cube["platform"].values) if "platform" in cube.coords else ["unknown"] * n),
    )
    keep = {"sensor", "platform", "time", "y", "x", "spatial_ref"}
    return ds.drop_vars([c for c in ds.coords if c not in keep])


def _combine_same_day(fused: xr.Dataset, rule: str, bands: list[str]) -> xr.Dataset:
    times = pd.DatetimeIndex(fused["time"].values)
    day = times.floor("D")
    sensors = labels(fused["sensor"].values)
    # Sentinel-2 first within a day, so "prefer-s2" takes the first clear value of the group.
    priority = np.where(sensors == S2, 0, 1)
    order = np.lexsort((priority, day.values))
    fused = fused.isel(time=order)
    day = day[order]
    sensors = sensors[order]
    groups = pd.Series(np.arange(len(day))).groupby(day.values).agg(list)
    steps = []
    new_time, new_sensor, new_platform = [], [], []
    platforms = labels(fused["platform"].values)
    ftimes = fused["time"].values
    for idx in groups:
        sel = fused.isel(time=idx).drop_vars(["sensor", "platform", "time"])
        new_time.append(ftimes[idx[0]])
        new_sensor.append("+".join(dict.fromkeys(sensors[idx])))
        new_platform.append("+".join(dict.fromkeys(platforms[idx])))
        if len(idx) == 1:
            steps.append(sel.isel(time=0))
            continue
        if rule == "mean":
            combined = sel[bands].mean("time", skipna=True)
        else:  # prefer-s2: first clear observation in priority order, per pixel
            combined = sel[bands].isel(time=0)
            for k in range(1, len(idx)):
                combined = combined.fillna(sel[bands].isel(time=k))
        combined["clear"] = sel["clear"].any("time")
        steps.append(combined)
    out = xr.concat(steps, dim="time", coords="minimal", compat="override", join="exact")
    out = out.assign_coords(
        time=("time", np.asarray(new_time)),
        sensor=("time", new_sensor),
        platform=("time", new_platform),
    )
    for b in bands:
        out[b] = out[b].where(out["clear"]).astype(np.float32)
    return out


def fuse(
    s2_cube: xr.Dataset, harmonized_landsat_cube: xr.Dataset, *, same_day: SameDay = "keep"
) -> xr.Dataset:
    """Merge Sentinel-2 and harmonized Landsat into one clear-masked cube on the 10 m grid.

    Parameters
    ----------
    s2_cube
        Sentinel-2 cube ``(time, y, x)`` with reflectance bands and a boolean ``clear``.
    harmonized_landsat_cube
        Harmonized Landsat cube on the same grid (the model's output), same bands and ``clear``.
    same_day
        What to do with observations of the same calendar day (UTC):

        ``"keep"`` (default)
            Keep each as its own time step (Landsat and Sentinel-2 pass minutes apart, so both
            carry their own acquisition time; exact ties put Sentinel-2 first).
        ``"mean"``
            One step per day: per pixel, the mean of that day's clear observations.
        ``"prefer-s2"``
            One step per day: per pixel, the Sentinel-2 value where it is clear, else Landsat.

        A combined step takes the time of its first (Sentinel-2) observation and a ``sensor``
        coordinate joining the sensors (``"sentinel-2+landsat"``).

    Returns
    -------
    xarray.Dataset
        The bands both cubes carry (canonical order), float32, NaN where not clear; ``clear``
        (clear and finite); ``time`` sorted; time coordinates ``sensor`` and ``platform``; the
        grid and CRS of the inputs. Lazy when the inputs are; ``"keep"`` adds no computation
        beyond the masking.

    Raises
    ------
    CRSMismatchError
        If the cubes lack a CRS or are not on the same grid.
    TimeSeriesError
        If ``same_day`` is unknown or the cubes share no reflectance band.
    """
    if same_day not in SAME_DAY_RULES:
        raise TimeSeriesError(f"Unknown same_day rule {same_day!r}; choose one of {SAME_DAY_RULES}.")
    check_same_grid(s2_cube, harmonized_landsat_cube, names=("Sentinel-2", "harmonized Landsat"))
    bands = [
        b for b in REFLECTANCE_BANDS if b in s2_cube.data_vars and b in harmonized_landsat_cube.data_vars
    ]
    if not bands:
        raise TimeSeriesError(
            "The Sentinel-2 and Landsat cubes share no reflectance band "
            f"(canonical bands: {list(REFLECTANCE_BANDS)}); load both with the same bands."
        )
    parts = [_prepare(s2_cube, S2, bands), _prepare(harmonized_landsat_cube, LANDSAT, bands)]
    fused = xr.concat(parts, dim="time", coords="minimal", compat="override", join="exact")
    # Stable sort: on an exact tie Sentinel-2 (concatenated first) stays first.
    order = np.argsort(fused["time"].values, kind="stable")
    fused = fused.isel(time=order)
    if same_day != "keep":
        fused = _combine_same_day(fused, same_day, bands)
    fused.attrs = {"fused_sensors": f"{S2},{LANDSAT}", "same_day": same_day}
    log.debug(
        "fused %d Sentinel-2 and %d Landsat steps into %d",
        s2_cube.sizes["time"],
        harmonized_landsat_cube.sizes["time"],
        fused.sizes["time"],
    )
    return fused


# --------------------------------------------------------------------------------------------
# composites and accuracy


def monthly_composite(cube: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
    """Per-pixel median of the clear observations of each calendar month.

    Parameters
    ----------
    cube
        A Dataset (bands masked by its ``clear`` variable when present) or a DataArray (NaN =
        missing), with a ``time`` dimension.

    Returns
    -------
    Same type, with ``time`` the first day of each month. A Dataset result also carries ``n_obs``
    ``(time, y, x)``, the clear observations that went into each median. Lazy.
    """
    if "time" not in cube.dims:
        raise TimeSeriesError("monthly_composite needs a 'time' dimension.")
    drop = [c for c, v in cube.coords.items() if "time" in v.dims and c != "time"]
    cube = cube.drop_vars(drop)
    if isinstance(cube, xr.DataArray):
        data = cube.chunk({"time": -1}) if cube.chunks is not None else cube
        return data.resample(time="1MS").median(skipna=True)
    clear = cube["clear"].astype(bool) if "clear" in cube.data_vars else None
    names = [k for k, v in cube.data_vars.items() if k != "clear" and "time" in v.dims]
    masked = xr.Dataset({k: cube[k].where(clear) if clear is not None else cube[k] for k in names})
    if masked.chunks:
        masked = masked.chunk({"time": -1})
    out = masked.resample(time="1MS").median(skipna=True)
    valid = masked[names[0]].notnull() if clear is None else clear
    out["n_obs"] = valid.resample(time="1MS").sum().astype(np.int16)
    return out


def ndvi_rmse_against_truth(filled: xr.DataArray, truth_ndvi: xr.DataArray) -> dict[str, float]:
    """Accuracy of a gap-filled NDVI series against the true NDVI.

    ``filled`` is interpolated linearly in time onto the truth's dates that lie inside its time
    span; both must be on the same ``(y, x)`` grid. Pixels/dates where either is NaN are left out.

    Parameters
    ----------
    filled
        Gap-filled NDVI ``(time, y, x)`` (e.g. :func:`gap_fill` output).
    truth_ndvi
        True NDVI ``(time, y, x)`` from the simulator (any dates).

    Returns
    -------
    dict
        ``rmse``, ``mae``, ``bias`` (filled - truth), ``n`` (pixel-dates compared) and
        ``coverage`` (fraction of the truth's pixel-dates inside the span that were filled).
    """
    if filled.sizes.get("y") != truth_ndvi.sizes.get("y") or filled.sizes.get("x") != truth_ndvi.sizes.get(
        "x"
    ):
        raise CRSMismatchError(
            f"The filled series {dict(filled.sizes)} and the truth {dict(truth_ndvi.sizes)} are on "
            "different grids; resample the truth onto the cube's grid first."
        )
    t0, t1 = filled["time"].values.min(), filled["time"].values.max()
    truth = truth_ndvi.sel(time=(truth_ndvi["time"] >= t0) & (truth_ndvi["time"] <= t1))
    if truth.sizes["time"] == 0:
        raise TimeSeriesError("The truth has no date inside the filled series' time span.")
    drop = [c for c, v in filled.coords.items() if "time" in v.dims and c != "time"]
    est = filled.drop_vars(drop).interp(time=truth["time"].values)
    est = est.assign_coords(y=truth["y"].values, x=truth["x"].values)
    diff = (est - truth).astype(np.float64)
    both = diff.notnull()
    sums = dask.compute(both.sum(), (diff**2).sum(), abs(diff).sum(), diff.sum(), truth.notnull().sum())
    n, sq, ab, sm, tot = (float(v) for v in sums)
    if n == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "bias": float("nan"), "n": 0, "coverage": 0.0}
    return {
        "rmse": float(np.sqrt(sq / n)),
        "mae": ab / n,
        "bias": sm / n,
        "n": int(n),
        "coverage": n / tot if tot else 0.0,
    }


# --------------------------------------------------------------------------------------------
# one call for the pipeline and the CLI


class TimeSeriesConfig(BaseModel):
    """Settings of the fuse -> NDVI -> gap-fill stage (one field per CLI flag).

    Attributes
    ----------
    method
        Gap-fill method: ``linear``, ``whittaker``, ``harmonic`` or ``rbf``.
    freq
        Output step (pandas frequency).
    max_gap
        Longest bridged span between clear observations (``"45D"`` or days).
    start, end
        Output axis bounds (ISO dates); default the observed span.
    lmbda, n_harmonics, period, sigmas, rbf_cutoff
        Method parameters, see :func:`harmonize.gapfill.gap_fill`.
    same_day
        Same-day rule of :func:`fuse`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["linear", "whittaker", "harmonic", "rbf"] = "whittaker"
    freq: str = "5D"
    max_gap: str | float = "45D"
    start: str | None = None
    end: str | None = None
    lmbda: float = Field(1000.0, gt=0)
    n_harmonics: int = Field(3, ge=1)
    period: float = Field(365.25, gt=0)
    sigmas: tuple[float, ...] = (8.0, 16.0, 32.0)
    rbf_cutoff: float = Field(0.95, gt=0, lt=1)
    same_day: Literal["keep", "mean", "prefer-s2"] = "keep"

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TimeSeriesConfig:
        """Read a YAML mapping of settings; keyword overrides (e.g. CLI flags, None = unset) win."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise TimeSeriesError(f"{path} must hold a YAML mapping of time-series settings.")
        return cls.build(**{**data, **overrides})

    @classmethod
    def build(cls, **fields: Any) -> TimeSeriesConfig:
        """Validate settings (None values are dropped), raising :class:`TimeSeriesError`."""
        try:
            return cls.model_validate({k: v for k, v in fields.items() if v is not None})
        except ValidationError as exc:
            raise TimeSeriesError(f"Invalid time-series settings: {exc}") from exc

    def gap_fill_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`harmonize.gapfill.gap_fill`."""
        return self.model_dump(exclude={"same_day"})


def ndvi_timeseries(
    s2_cube: xr.Dataset,
    landsat_cube: xr.Dataset | None = None,
    *,
    config: TimeSeriesConfig | None = None,
    **overrides: Any,
) -> tuple[xr.DataArray, xr.DataArray]:
    """Clear-sky NDVI observations and their gap-filled series, from one or both sensors.

    Parameters
    ----------
    s2_cube
        Sentinel-2 cube (bands ``red``, ``nir`` and ``clear``).
    landsat_cube
        Harmonized (or any other, e.g. bicubic) Landsat cube on the same grid; ``None`` for a
        Sentinel-2-only series.
    config
        Settings; ``overrides`` replace single fields (``method="rbf"``).

    Returns
    -------
    observations, filled : xarray.DataArray
        NDVI of every clear observation (``sensor`` coordinate) and the gap-filled NDVI on the
        regular axis (``n_obs`` coordinate). Both lazy.
    """
    cfg = config or TimeSeriesConfig()
    if overrides:
        cfg = TimeSeriesConfig.build(**{**cfg.model_dump(), **overrides})
    if landsat_cube is None:
        cube = _prepare(s2_cube, S2, [b for b in ("red", "nir") if b in s2_cube.data_vars])
    else:
        cube = fuse(s2_cube, landsat_cube, same_day=cfg.same_day)
    obs = ndvi_series(cube)
    filled = gap_fill(obs, **cfg.gap_fill_kwargs())
    return obs, filled.rename("ndvi")
