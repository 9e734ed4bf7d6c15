"""Sub-pixel co-registration of Landsat scenes onto the Sentinel-2 grid, one way.

The two sensors are misregistered by up to about a Landsat pixel. :func:`estimate_shifts`
measures every Landsat scene of a cube against the nearest clear Sentinel-2 scenes and returns a
shift table; ``load_cube(items, shifts=table)`` then loads each scene once on its corrected grid
(one resampling from the native pixels). :func:`load_coregistered` is that chain in one call;
:func:`shift_cube` / :func:`coregister` resample a cube already loaded instead.

Convention: a shift ``(dx, dy)`` in metres is the *correction* to ADD to the Landsat scene's
geotransform origin, the same convention as ``load_cube(..., shifts=...)``. If a scene loaded
with origin ``(x0, y0)`` really shows the ground at ``(x0 + dx, y0 + dy)``, its shift is
``(dx, dy)``.

Estimation, per Landsat scene (:func:`estimate_shift_pair` against each reference): a masked
normalised cross-correlation finds the integer part, a masked Gauss-Newton fit of
``landsat(p) = a + b * reference(p + s)`` (which absorbs the bandpass gain and offset) the
sub-pixel part; estimates of several references and bands are combined, weighted by common
clear pixels and fit quality. Scenes with too little common clear area keep their current shift
and are flagged.

Modules: :mod:`~harmonize.coregister.pair` (one image against another),
:mod:`~harmonize.coregister.table` (the shift table of a cube),
:mod:`~harmonize.coregister.apply` (loading or resampling with it).
"""

from importlib import import_module
from typing import Any

# Loaded on first use: the pair estimator needs only numpy/scipy, so code that scores images
# with it (harmonize.metrics) does not pull in dask and odc through the loading modules.
_EXPORTS = {
    "coregister": "apply",
    "load_coregistered": "apply",
    "shift_cube": "apply",
    "PairShift": "pair",
    "estimate_shift_pair": "pair",
    "DEFAULT_BANDS": "table",
    "SHIFT_COLUMNS": "table",
    "estimate_shifts": "table",
    "pixel_size": "table",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = [
    "DEFAULT_BANDS",
    "SHIFT_COLUMNS",
    "PairShift",
    "coregister",
    "estimate_shift_pair",
    "estimate_shifts",
    "load_coregistered",
    "pixel_size",
    "shift_cube",
]
