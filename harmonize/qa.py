"""Quality bands to boolean masks, and back.

Landsat Collection 2 ``QA_PIXEL`` is a bit field; Sentinel-2 L2A ``SCL`` is a class map. Both
decode to the same set of masks (:data:`MASK_NAMES`) so the rest of harmonize never needs to know
which sensor a mask came from. The encoders are the exact inverses used by the simulated archive,
so what it writes is what the real products carry.

All functions work on numpy arrays, dask arrays and xarray objects alike (only bitwise and
comparison operators are used), so decoding stays lazy on a lazy cube.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "LANDSAT_QA_BITS",
    "SCL_CLASSES",
    "MASK_NAMES",
    "LandsatQAFlags",
    "SCLFlags",
    "landsat_masks",
    "scl_masks",
    "encode_landsat_qa",
    "encode_scl",
    "ST_QA_MAX_K",
    "lst_mask",
]

#: QA_PIXEL bit positions (Landsat Collection 2, Level-1 and Level-2 alike).
LANDSAT_QA_BITS: dict[str, int] = {
    "fill": 0,
    "dilated_cloud": 1,
    "cirrus": 2,
    "cloud": 3,
    "cloud_shadow": 4,
    "snow": 5,
    "clear": 6,
    "water": 7,
}
# Two-bit confidence fields: 0 none, 1 low, 2 medium, 3 high.
_CONFIDENCE_SHIFT = {"cloud": 8, "cloud_shadow": 10, "snow": 12, "cirrus": 14}

#: Sentinel-2 L2A scene classification classes.
SCL_CLASSES: dict[int, str] = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area",
    3: "cloud_shadow",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow",
}

#: The masks every decoder returns.
MASK_NAMES: tuple[str, ...] = ("nodata", "cloud", "shadow", "cirrus", "snow", "water", "clear")


@dataclass(frozen=True)
class LandsatQAFlags:
    """Which QA_PIXEL bits make up each mask.

    Attributes
    ----------
    cloud
        Bits whose union is "cloud" (default: cloud and dilated cloud).
    not_clear
        Mask names that make a pixel not clear (besides nodata).
    """

    cloud: tuple[str, ...] = ("cloud", "dilated_cloud")
    not_clear: tuple[str, ...] = ("cloud", "shadow", "cirrus", "snow")


@dataclass(frozen=True)
class SCLFlags:
    """Which SCL classes make up each mask.

    Attributes
    ----------
    nodata, cloud, shadow, cirrus, snow, water
        Class values per mask.
    clear
        Classes counted as clear observations of the surface (default: dark area, vegetation,
        not vegetated, water, unclassified; snow is excluded as for Landsat).
    """

    nodata: tuple[int, ...] = (0, 1)
    cloud: tuple[int, ...] = (8, 9)
    shadow: tuple[int, ...] = (3,)
    cirrus: tuple[int, ...] = (10,)
    snow: tuple[int, ...] = (11,)
    water: tuple[int, ...] = (6,)
    clear: tuple[int, ...] = field(default=(2, 4, 5, 6, 7))


def _bit(qa: Any, name: str) -> Any:
    return (qa & (1 << LANDSAT_QA_BITS[name])) != 0


def _any_of(values: Iterable[Any]) -> Any:
    out = None
    for v in values:
        out = v if out is None else (out | v)
    return out


def _isin(arr: Any, classes: Iterable[int]) -> Any:
    classes = tuple(classes)
    if not classes:
        return arr != arr  # all False, same type and laziness as the input
    return _any_of(arr == c for c in classes)


def landsat_masks(qa: Any, flags: LandsatQAFlags = LandsatQAFlags()) -> dict[str, Any]:
    """Decode a Landsat ``QA_PIXEL`` array into boolean masks.

    Parameters
    ----------
    qa
        Integer QA_PIXEL values (numpy, dask or xarray).
    flags
        Which bits count as cloud and which masks make a pixel not clear.

    Returns
    -------
    dict
        ``{name: bool array}`` for each of :data:`MASK_NAMES`. ``clear`` excludes nodata and every
        mask named in ``flags.not_clear``.
    """
    nodata = _bit(qa, "fill")
    masks = {
        "nodata": nodata,
        "cloud": _any_of(_bit(qa, b) for b in flags.cloud) & ~nodata,
        "shadow": _bit(qa, "cloud_shadow") & ~nodata,
        "cirrus": _bit(qa, "cirrus") & ~nodata,
        "snow": _bit(qa, "snow") & ~nodata,
        "water": _bit(qa, "water") & ~nodata,
    }
    masks["clear"] = ~(nodata | _any_of(masks[n] for n in flags.not_clear))
    return masks


def scl_masks(scl: Any, flags: SCLFlags = SCLFlags()) -> dict[str, Any]:
    """Decode a Sentinel-2 ``SCL`` array into boolean masks.

    Parameters
    ----------
    scl
        Integer SCL class values (numpy, dask or xarray).
    flags
        Which classes make up each mask.

    Returns
    -------
    dict
        ``{name: bool array}`` for each of :data:`MASK_NAMES`.
    """
    return {name: _isin(scl, getattr(flags, name)) for name in MASK_NAMES}


def encode_landsat_qa(
    *,
    nodata: np.ndarray,
    cloud: np.ndarray,
    dilated_cloud: np.ndarray,
    cirrus: np.ndarray,
    shadow: np.ndarray,
    snow: np.ndarray,
    water: np.ndarray,
) -> np.ndarray:
    """Encode boolean masks as a Collection 2 ``QA_PIXEL`` array, as USGS does.

    Fill pixels are exactly ``1``. Elsewhere the clear bit is set where neither cloud nor dilated
    cloud is; the water bit only where not cloudy; each confidence pair is high (3) where its
    flag is set and low (1) otherwise. A clear land pixel is therefore ``21824`` and a cloudy one
    ``22280``, the values found in real scenes.
    """
    nodata = np.asarray(nodata, bool)
    cloud = np.asarray(cloud, bool)
    dilated = np.asarray(dilated_cloud, bool) & ~cloud
    qa = np.zeros(nodata.shape, np.uint16)

    def setbit(mask: np.ndarray, name: str) -> None:
        qa[mask] |= np.uint16(1 << LANDSAT_QA_BITS[name])

    setbit(cloud, "cloud")
    setbit(dilated, "dilated_cloud")
    setbit(np.asarray(cirrus, bool), "cirrus")
    setbit(np.asarray(shadow, bool) & ~cloud, "cloud_shadow")
    setbit(np.asarray(snow, bool) & ~cloud, "snow")
    setbit(~cloud & ~dilated, "clear")
    setbit(np.asarray(water, bool) & ~cloud & ~dilated, "water")
    for name, shift in _CONFIDENCE_SHIFT.items():
        flag = {
            "cloud": cloud,
            "cloud_shadow": np.asarray(shadow, bool) & ~cloud,
            "snow": np.asarray(snow, bool) & ~cloud,
            "cirrus": np.asarray(cirrus, bool),
        }[name]
        conf = np.where(flag, 3, 1).astype(np.uint16)
        qa |= conf << np.uint16(shift)
    qa[nodata] = 1
    return qa


def encode_scl(
    *,
    nodata: np.ndarray,
    cloud_high: np.ndarray,
    cloud_medium: np.ndarray,
    cirrus: np.ndarray,
    shadow: np.ndarray,
    snow: np.ndarray,
    water: np.ndarray,
    vegetation: np.ndarray,
    dark: np.ndarray | None = None,
) -> np.ndarray:
    """Encode boolean masks as a Sentinel-2 ``SCL`` class map.

    Precedence follows Sen2Cor: no data, then high- and medium-probability cloud, thin cirrus,
    cloud shadow, snow, water, dark area, vegetation; the rest is "not vegetated".
    """
    scl = np.full(np.shape(nodata), 5, np.uint8)
    # Lowest precedence first, so later assignments win.
    scl[np.asarray(vegetation, bool)] = 4
    if dark is not None:
        scl[np.asarray(dark, bool)] = 2
    scl[np.asarray(water, bool)] = 6
    scl[np.asarray(snow, bool)] = 11
    scl[np.asarray(shadow, bool)] = 3
    scl[np.asarray(cirrus, bool)] = 10
    scl[np.asarray(cloud_medium, bool)] = 8
    scl[np.asarray(cloud_high, bool)] = 9
    scl[np.asarray(nodata, bool)] = 0
    return scl


#: Largest ``ST_QA`` uncertainty (K) :func:`lst_mask` keeps by default. USGS gives ST_QA per
#: pixel; it grows near clouds, whose cold tops the 100 m thermal footprint spreads beyond the
#: QA_PIXEL cloud and dilated-cloud bits.
ST_QA_MAX_K = 2.0


def lst_mask(lst_qa: Any, clear: Any = None, *, max_uncertainty: float = ST_QA_MAX_K) -> Any:
    """Pixels whose surface temperature is usable: ``lst_qa <= max_uncertainty`` (and ``clear``).

    Parameters
    ----------
    lst_qa
        ``ST_QA`` uncertainty in kelvin (the cube's ``lst_qa``; NaN where there is none).
    clear
        Optional boolean clear-sky mask (QA_PIXEL's ``clear``) to combine with.
    max_uncertainty
        Largest uncertainty kept, in kelvin.
    """
    ok = lst_qa <= max_uncertainty
    return ok & clear if clear is not None else ok
