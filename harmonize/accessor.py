"""The ``.hz`` xarray accessor: harmonize's free functions as methods.

Like ``.rio`` and ``.odc``, the accessor is thin and stateless: xarray recreates it on every
``ds[var]`` and every arithmetic result, so it holds nothing but the object and each method
forwards to one free function. To add a method, write the free function in its module and add
a one-line forwarder to :class:`_HarmonizeAccessor` (imports stay inside the method so that
``import harmonize`` stays light and modules to the right of the data flow load on demand).

Registered on ``import harmonize.accessor`` (which ``import harmonize`` does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import xarray as xr

from harmonize.errors import HarmonizeError

if TYPE_CHECKING:
    import pandas as pd

    from harmonize.bandpass import LinearAdjustment

__all__ = ["HarmonizeDatasetAccessor", "HarmonizeDataArrayAccessor"]


class _HarmonizeAccessor:
    """Methods shared by the Dataset and DataArray accessors; each forwards to a free function."""

    def __init__(self, obj: xr.Dataset | xr.DataArray) -> None:
        self._obj = obj

    @property
    def _ds(self) -> xr.Dataset:
        """The object as a cube (a Dataset of band variables)."""
        return self._obj  # type: ignore[return-value]

    # --- indices ---------------------------------------------------------------------------
    def ndvi(self, **kw: Any) -> xr.DataArray:
        """NDVI; see :func:`harmonize.indices.ndvi`."""
        from harmonize.indices import ndvi

        return ndvi(self._ds, **kw)

    def clear_fraction(self, **kw: Any) -> xr.DataArray:
        """Clear fraction per time; see :func:`harmonize.indices.clear_fraction`."""
        from harmonize.indices import clear_fraction

        return clear_fraction(self._ds, **kw)

    # --- loading ---------------------------------------------------------------------------
    def to_reflectance(self, **kw: Any) -> xr.Dataset:
        """Scale a raw-DN cube to reflectance; see :func:`harmonize.cube.to_reflectance`."""
        from harmonize.cube import to_reflectance

        return to_reflectance(self._ds, **kw)

    # --- co-registration -------------------------------------------------------------------
    def estimate_shifts(self, reference: xr.Dataset | None = None, **kw: Any) -> pd.DataFrame:
        """Landsat misregistration table; see :func:`harmonize.coregister.estimate_shifts`."""
        from harmonize.coregister import estimate_shifts

        return estimate_shifts(self._ds, reference, **kw)

    def coregister(self, reference: xr.Dataset | None = None, **kw: Any) -> xr.Dataset:
        """The cube resampled onto its measured shifts; see :func:`harmonize.coregister.coregister`
        (with the items at hand, ``load_cube(items, shifts=cube.hz.estimate_shifts())`` resamples
        once instead)."""
        from harmonize.coregister import coregister

        return coregister(self._ds, reference, **kw)

    # --- bandpass --------------------------------------------------------------------------
    def hls_adjust(self, to: str = "landsat", **kw: Any) -> xr.Dataset:
        """HLS bandpass adjustment; see :func:`harmonize.bandpass.hls_adjust`."""
        from harmonize.bandpass import hls_adjust

        return hls_adjust(self._ds, to, **kw)  # type: ignore[arg-type]

    def fit_linear_adjustment(self, s2_cube: xr.Dataset | None = None, **kw: Any) -> LinearAdjustment:
        """Fit a per-band linear adjustment; see :func:`harmonize.bandpass.fit_linear_adjustment`."""
        from harmonize.bandpass import fit_linear_adjustment

        return fit_linear_adjustment(self._ds, s2_cube, **kw)

    def apply_linear_adjustment(self, adjustment: LinearAdjustment, **kw: Any) -> xr.Dataset:
        """Apply a fitted adjustment; see :func:`harmonize.bandpass.apply_linear_adjustment`."""
        from harmonize.bandpass import apply_linear_adjustment

        return apply_linear_adjustment(self._ds, adjustment, **kw)

    def sharpen_20m(self, **kw: Any) -> xr.Dataset:
        """Sentinel-2's 20 m bands sharpened to 10 m on its 10 m bands (Sentinel-2 time steps
        only); see :func:`harmonize.sharpen.sharpen_20m`."""
        from harmonize.sharpen import sharpen_20m

        return sharpen_20m(self._ds, **kw)

    # --- inference ---------------------------------------------------------------------------
    def super_resolve(self, model: Any, **kw: Any) -> xr.Dataset:
        """Harmonized 10 m Landsat from a model (package path, module or ensemble);
        see :func:`harmonize.infer.super_resolve`."""
        from harmonize.infer import super_resolve

        return super_resolve(self._ds, model, **kw)

    # --- time series ---------------------------------------------------------------------------
    def fuse(self, landsat: xr.Dataset, **kw: Any) -> xr.Dataset:
        """Sentinel-2 cube + harmonized Landsat cube; see :func:`harmonize.timeseries.fuse`."""
        from harmonize.timeseries import fuse

        return fuse(self._ds, landsat, **kw)

    def ndvi_series(self) -> xr.DataArray:
        """Clear-sky NDVI with sensor labels; see :func:`harmonize.timeseries.ndvi_series`."""
        from harmonize.timeseries import ndvi_series

        return ndvi_series(self._ds)

    def gap_fill(self, **kw: Any) -> xr.Dataset | xr.DataArray:
        """Regular, gap-filled series; see :func:`harmonize.gapfill.gap_fill` (cube or e.g. NDVI)."""
        from harmonize.gapfill import gap_fill

        return gap_fill(self._obj, **kw)

    def monthly_composite(self) -> xr.Dataset | xr.DataArray:
        """Monthly median of clear observations; see :func:`harmonize.timeseries.monthly_composite`."""
        from harmonize.timeseries import monthly_composite

        return monthly_composite(self._obj)

    def phenology(self, **kw: Any) -> xr.Dataset:
        """Start, peak and end of season of gap-filled NDVI; see :func:`harmonize.phenology.phenology`."""
        from harmonize.phenology import phenology

        return phenology(self._obj, **kw)  # type: ignore[arg-type]


@xr.register_dataset_accessor("hz")
class HarmonizeDatasetAccessor(_HarmonizeAccessor):
    """``ds.hz``: harmonize on a cube (a Dataset of band variables on ``(time, y, x)``)."""


@xr.register_dataarray_accessor("hz")
class HarmonizeDataArrayAccessor(_HarmonizeAccessor):
    """``da.hz``: harmonize on a DataArray with a ``band`` dimension (bands become variables).

    A boolean DataArray without a ``band`` dimension is taken as a ``clear`` mask, so
    ``mask.hz.clear_fraction()`` works too.
    """

    @property
    def _ds(self) -> xr.Dataset:
        da = self._obj
        if "band" in da.dims:
            return da.to_dataset("band")
        if da.dtype == bool:
            return da.to_dataset(name="clear")
        raise HarmonizeError(
            f"DataArray {da.name!r} has no 'band' dimension; use the Dataset accessor "
            "(cube.hz...) or stack bands with ds.to_dataarray('band')."
        )
