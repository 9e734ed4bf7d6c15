"""Spectral bandpass adjustment between OLI (Landsat) and MSI (Sentinel-2).

Two linear baselines, both per band ``y = slope * x + offset``:

* :func:`hls_adjust` applies the published HLS v2.0 coefficients
  (:func:`harmonize.bands.bandpass_coefficients`), per time step according to the ``platform``
  coordinate: Sentinel-2 scenes made OLI-like, or Landsat scenes made MSI-like;
* :func:`fit_linear_adjustment` fits the coefficients from the data itself, on pixels clear in
  both scenes of same-day (or near-day) Landsat/Sentinel-2 pairs; :func:`apply_linear_adjustment`
  applies them. This is the baseline a learned model must beat.

Both keep the cube lazy: the coefficients become small per-time arrays that broadcast.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from harmonize.bands import REFLECTANCE_BANDS, bandpass_coefficients
from harmonize.errors import HarmonizeError, UnknownBandError

__all__ = [
    "LinearAdjustment",
    "hls_adjust",
    "fit_linear_adjustment",
    "apply_linear_adjustment",
]

log = logging.getLogger(__name__)

LANDSAT, S2 = "landsat", "sentinel-2"
Target = Literal["landsat", "sentinel-2"]


def _bands_in(ds: xr.Dataset, bands: Sequence[str] | None) -> list[str]:
    if bands is None:
        return [b for b in REFLECTANCE_BANDS if b in ds.data_vars]
    missing = [b for b in bands if b not in ds.data_vars]
    if missing:
        raise UnknownBandError(f"The cube lacks band(s) {missing}; it has {sorted(map(str, ds.data_vars))}.")
    return list(bands)


def _sensors(ds: xr.Dataset) -> np.ndarray:
    if "sensor" not in ds.coords:
        raise HarmonizeError(
            "The cube has no 'sensor' coordinate on time; load it with harmonize.cube.load_cube "
            "or assign one (values 'landsat' / 'sentinel-2')."
        )
    return np.asarray(ds["sensor"].values).astype(str).reshape(-1)


def _apply_per_time(
    ds: xr.Dataset, slopes: dict[str, np.ndarray], offsets: dict[str, np.ndarray], tag: str
) -> xr.Dataset:
    out = ds.copy()
    for band, slope in slopes.items():
        var = ds[band]
        s = xr.DataArray(slope.astype("float32"), dims=("time",), coords={"time": ds["time"]})
        o = xr.DataArray(offsets[band].astype("float32"), dims=("time",), coords={"time": ds["time"]})
        adjusted = (var * s + o).astype(var.dtype)
        adjusted.attrs = dict(var.attrs)
        out[band] = adjusted
    out.attrs = dict(ds.attrs)
    out.attrs["harmonize_bandpass"] = tag
    return out


def hls_adjust(
    ds: xr.Dataset,
    to: Target = "landsat",
    *,
    bands: Sequence[str] | None = None,
    platform: str = "sentinel-2a",
) -> xr.Dataset:
    """Apply the HLS v2.0 bandpass adjustment per time step.

    Parameters
    ----------
    ds
        A cube with ``sensor`` (and for Sentinel-2, ``platform``) coordinates on ``time``.
    to
        ``"landsat"``: Sentinel-2 scenes are made OLI-like with their own platform's
        coefficients, Landsat scenes are untouched (the HLS convention).
        ``"sentinel-2"``: Landsat scenes are made MSI-like (the inverse adjustment of
        ``platform``), Sentinel-2 scenes are untouched.
    bands
        Bands to adjust (default: every reflectance band present; ``pan`` is never adjusted).
    platform
        The Sentinel-2 platform whose response Landsat is mapped onto when ``to="sentinel-2"``;
        also the platform assumed for Sentinel-2 scenes of a cube without a ``platform``
        coordinate.

    Returns
    -------
    xarray.Dataset
        The adjusted cube (lazy if the input is), ``attrs["harmonize_bandpass"]`` recording it.

    Raises
    ------
    HarmonizeError
        If ``to`` is not a sensor or the cube lacks a ``sensor`` coordinate.
    UnknownBandError
        If a requested band is missing, or a platform has no coefficients.
    """
    if to not in (LANDSAT, S2):
        raise HarmonizeError(f"to={to!r}: adjust towards 'landsat' or 'sentinel-2'.")
    bands = [b for b in _bands_in(ds, bands) if b in REFLECTANCE_BANDS]
    sensors = _sensors(ds)
    n = sensors.size
    platforms = (
        np.asarray(ds["platform"].values).astype(str).reshape(-1)
        if "platform" in ds.coords
        else np.full(n, platform)
    )
    slopes = {b: np.ones(n) for b in bands}
    offsets = {b: np.zeros(n) for b in bands}
    for i in range(n):
        if to == LANDSAT and sensors[i] == S2:
            coeffs = bandpass_coefficients(platforms[i])
            for b in bands:
                slopes[b][i], offsets[b][i] = coeffs[b].slope, coeffs[b].offset
        elif to == S2 and sensors[i] == LANDSAT:
            coeffs = bandpass_coefficients(platform)
            for b in bands:  # inverse of msi -> oli: msi = (oli - offset) / slope
                slopes[b][i] = 1.0 / coeffs[b].slope
                offsets[b][i] = -coeffs[b].offset / coeffs[b].slope
    return _apply_per_time(ds, slopes, offsets, f"hls:{to}")


@dataclass(frozen=True)
class LinearAdjustment:
    """Per-band linear adjustment ``target = slope * source + offset``, fitted from data.

    Attributes
    ----------
    slope, offset
        Band name -> coefficient.
    source, target
        Sensors the adjustment maps from and to (``"landsat"`` -> ``"sentinel-2"`` by default).
    n_pixels
        Band name -> number of pixel pairs the fit used.
    r2
        Band name -> coefficient of determination of the fit.
    """

    slope: Mapping[str, float]
    offset: Mapping[str, float]
    source: str = LANDSAT
    target: str = S2
    n_pixels: Mapping[str, int] = field(default_factory=dict)
    r2: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.slope) != set(self.offset):
            raise HarmonizeError("slope and offset must cover the same bands.")
        if self.source == self.target:
            raise HarmonizeError("source and target sensors must differ.")

    @property
    def bands(self) -> tuple[str, ...]:
        """Bands the adjustment covers."""
        return tuple(self.slope)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (floats and strings only)."""
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in asdict(self).items()}

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON, optionally writing it to ``path``."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinearAdjustment:
        """Inverse of :meth:`to_dict`."""
        return cls(
            slope={k: float(v) for k, v in d["slope"].items()},
            offset={k: float(v) for k, v in d["offset"].items()},
            source=str(d.get("source", LANDSAT)),
            target=str(d.get("target", S2)),
            n_pixels={k: int(v) for k, v in d.get("n_pixels", {}).items()},
            r2={k: float(v) for k, v in d.get("r2", {}).items()},
        )

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> LinearAdjustment:
        """Read from a JSON string or a path to a JSON file."""
        p = Path(text_or_path) if not str(text_or_path).lstrip().startswith("{") else None
        text = p.read_text() if p is not None else str(text_or_path)
        return cls.from_dict(json.loads(text))

    def inverse(self) -> LinearAdjustment:
        """The adjustment from ``target`` back to ``source``."""
        return LinearAdjustment(
            slope={b: 1.0 / s for b, s in self.slope.items()},
            offset={b: -self.offset[b] / self.slope[b] for b in self.slope},
            source=self.target,
            target=self.source,
            n_pixels=dict(self.n_pixels),
            r2=dict(self.r2),
        )

    def apply(self, ds: xr.Dataset, *, all_times: bool = False) -> xr.Dataset:
        """Apply to ``ds``; see :func:`apply_linear_adjustment`."""
        return apply_linear_adjustment(ds, self, all_times=all_times)


def apply_linear_adjustment(
    ds: xr.Dataset, adjustment: LinearAdjustment, *, all_times: bool = False
) -> xr.Dataset:
    """Apply a fitted :class:`LinearAdjustment` to the ``source``-sensor scenes of a cube.

    Parameters
    ----------
    ds
        A cube. With a ``sensor`` coordinate only the ``adjustment.source`` scenes change; a cube
        without one (or ``all_times=True``) is adjusted everywhere.
    adjustment
        The coefficients.
    all_times
        Adjust every time step regardless of sensor.

    Returns
    -------
    xarray.Dataset
        The adjusted cube, lazy if the input is.
    """
    bands = [b for b in adjustment.bands if b in ds.data_vars]
    if not bands:
        raise UnknownBandError(f"The cube has none of the adjustment's bands {list(adjustment.bands)}.")
    if "time" not in ds.dims:
        ds_t = ds.expand_dims("time")
        return apply_linear_adjustment(ds_t, adjustment, all_times=True).isel(time=0)
    n = ds.sizes["time"]
    if all_times or "sensor" not in ds.coords:
        sel = np.ones(n, dtype=bool)
    else:
        sel = _sensors(ds) == adjustment.source
    slopes = {b: np.where(sel, adjustment.slope[b], 1.0) for b in bands}
    offsets = {b: np.where(sel, adjustment.offset[b], 0.0) for b in bands}
    return _apply_per_time(ds, slopes, offsets, f"linear:{adjustment.source}->{adjustment.target}")


def _pair_indices(src_t: np.ndarray, tgt_t: np.ndarray, max_days: float) -> list[tuple[int, int]]:
    """Each source time paired with its nearest target time within ``max_days`` (same solar day
    when ``max_days`` < 1)."""
    pairs = []
    for i, t in enumerate(src_t):
        if max_days < 1:
            same = np.flatnonzero(tgt_t.astype("datetime64[D]") == np.datetime64(t, "D"))
            if same.size:
                pairs.append((i, int(same[0])))
            continue
        d = np.abs((tgt_t - t) / np.timedelta64(1, "D")).astype("float64")
        j = int(np.argmin(d))
        if d[j] <= max_days:
            pairs.append((i, j))
    return pairs


def fit_linear_adjustment(
    landsat_cube: xr.Dataset,
    s2_cube: xr.Dataset | None = None,
    *,
    bands: Sequence[str] | None = None,
    max_days: float = 0.0,
    clear: str = "clear",
    source: str = LANDSAT,
    target: str = S2,
) -> LinearAdjustment:
    """Fit ``s2 = slope * landsat + offset`` per band on clear same-day pixel pairs.

    An ordinary least-squares fit of the target on the source: the best linear predictor of the
    target from the source, which is the baseline a learned model must beat. Only pixels finite
    and clear in both scenes of a pair count. The sums are accumulated lazily and computed
    once, so memory stays bounded by one chunk.

    Parameters
    ----------
    landsat_cube
        Source-sensor scenes; or a cube with both sensors when ``s2_cube`` is None (split by its
        ``sensor`` coordinate).
    s2_cube
        Target-sensor scenes on the same GeoBox.
    bands
        Bands to fit (default: every reflectance band both cubes have).
    max_days
        Pair each source scene with the nearest target scene within this many days; below 1
        (the default) only the same calendar day pairs.
    clear
        Name of the boolean clear-sky variable (used where present).
    source, target
        Sensor names, used to split a combined cube and recorded in the result.

    Returns
    -------
    LinearAdjustment

    Raises
    ------
    HarmonizeError
        If no pair, or too few clear pixels for a band, are found.
    """
    import dask

    if s2_cube is None:
        sensors = _sensors(landsat_cube)
        s2_cube = landsat_cube.isel(time=np.flatnonzero(sensors == target))
        landsat_cube = landsat_cube.isel(time=np.flatnonzero(sensors == source))
    if bands is None:
        bands = [b for b in REFLECTANCE_BANDS if b in landsat_cube.data_vars and b in s2_cube.data_vars]
    else:
        _bands_in(landsat_cube, bands)
        _bands_in(s2_cube, bands)
    if not bands:
        raise UnknownBandError("The two cubes share no reflectance band to fit.")
    pairs = _pair_indices(landsat_cube["time"].values, s2_cube["time"].values, max_days)
    if not pairs:
        raise HarmonizeError(
            f"No {source}/{target} scene pairs within {max_days:g} days; raise max_days or load "
            "a longer period."
        )
    sums: dict[str, list[Any]] = {b: [] for b in bands}
    for i, j in pairs:
        a = landsat_cube.isel(time=i)
        b_ = s2_cube.isel(time=j)
        ok = True
        if clear in a.data_vars:
            ok = a[clear].astype(bool).data
        if clear in b_.data_vars:
            ok = ok & b_[clear].astype(bool).data
        for band in bands:
            x = a[band].data.astype("float64")
            y = b_[band].data.astype("float64")
            m = ok & np.isfinite(x) & np.isfinite(y)
            x0 = np.where(m, x, 0.0)
            y0 = np.where(m, y, 0.0)
            sums[band].append(
                [m.sum(), x0.sum(), y0.sum(), (x0 * x0).sum(), (x0 * y0).sum(), (y0 * y0).sum()]
            )
    (computed,) = dask.compute(sums)
    slope, offset, n_pix, r2 = {}, {}, {}, {}
    for band in bands:
        n, sx, sy, sxx, sxy, syy = np.asarray(computed[band], dtype="float64").sum(axis=0)
        if n < 10:
            raise HarmonizeError(
                f"Only {int(n)} clear pixel pairs for band {band!r}; use clearer scenes or raise max_days."
            )
        vxx = sxx - sx * sx / n
        vxy = sxy - sx * sy / n
        vyy = syy - sy * sy / n
        if vxx <= 0:
            raise HarmonizeError(f"Band {band!r} is constant over the clear pairs; cannot fit a slope.")
        slope[band] = float(vxy / vxx)
        offset[band] = float((sy - slope[band] * sx) / n)
        n_pix[band] = int(n)
        r2[band] = float(vxy * vxy / (vxx * vyy)) if vyy > 0 else 1.0
    log.info("fitted %s->%s bandpass on %d pairs: %s", source, target, len(pairs), slope)
    return LinearAdjustment(slope, offset, source=source, target=target, n_pixels=n_pix, r2=r2)
