"""The canonical band table shared by both sensors.

harmonize speaks of bands by canonical names (``blue`` … ``swir22``, ``pan``); provider profiles
map those onto each provider's asset keys. The band matches follow HLS v2.0: OLI B2-B7 against
MSI B02, B03, B04, B8A (the narrow NIR, the spectral match of OLI B5), B11, B12.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harmonize.errors import UnknownBandError

__all__ = [
    "Band",
    "BANDS",
    "REFLECTANCE_BANDS",
    "PAN",
    "LST",
    "LST_QA",
    "THERMAL",
    "SENSORS",
    "Sensor",
    "BandpassCoefficients",
    "HLS_BANDPASS",
    "bandpass_coefficients",
    "check_bands",
]

Sensor = Literal["landsat", "sentinel-2"]
SENSORS: tuple[Sensor, ...] = ("landsat", "sentinel-2")


@dataclass(frozen=True)
class Band:
    """One canonical band and its realisation on each sensor.

    Attributes
    ----------
    name
        Canonical name (``"blue"``, ``"nir"``, ``"pan"`` …).
    landsat
        OLI band id (``"B2"``) or ``None`` where Landsat has no such band.
    sentinel2
        MSI band id (``"B02"``) or ``None`` where Sentinel-2 has no such band.
    landsat_resolution, sentinel2_resolution
        Native ground sampling distance in metres (``None`` where the sensor lacks the band).
    landsat_wavelength, sentinel2_wavelength
        Centre wavelength in micrometres (Sentinel-2A values).
    """

    name: str
    landsat: str | None
    sentinel2: str | None
    landsat_resolution: float | None
    sentinel2_resolution: float | None
    landsat_wavelength: float | None
    sentinel2_wavelength: float | None

    def resolution(self, sensor: Sensor) -> float | None:
        """Native resolution of this band on ``sensor`` in metres."""
        return self.landsat_resolution if sensor == "landsat" else self.sentinel2_resolution


BANDS: dict[str, Band] = {
    b.name: b
    for b in (
        Band("blue", "B2", "B02", 30.0, 10.0, 0.482, 0.4924),
        Band("green", "B3", "B03", 30.0, 10.0, 0.561, 0.5598),
        Band("red", "B4", "B04", 30.0, 10.0, 0.655, 0.6646),
        Band("nir", "B5", "B8A", 30.0, 20.0, 0.865, 0.8648),
        Band("swir16", "B6", "B11", 30.0, 20.0, 1.609, 1.6137),
        Band("swir22", "B7", "B12", 30.0, 20.0, 2.201, 2.2024),
        Band("pan", "B8", None, 15.0, None, 0.590, None),
    )
}

#: The six harmonized reflectance bands, in the order models and cubes use them.
REFLECTANCE_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir16", "swir22")
#: The Landsat panchromatic band (Collection 2 Level-1 only).
PAN = "pan"
#: Landsat Collection 2 Level-2 surface temperature (TIRS band 10, ``ST_B10``; asset ``lwir11``)
#: and its uncertainty (``ST_QA``; asset ``qa``), both in kelvin. Loaded together: asking for
#: ``lst`` gives ``lst_qa`` too.
LST, LST_QA = "lst", "lst_qa"
#: The thermal variables a cube may carry: name -> (units, long name).
THERMAL: dict[str, tuple[str, str]] = {
    LST: ("K", "land surface temperature (Landsat ST_B10)"),
    LST_QA: ("K", "land surface temperature uncertainty (Landsat ST_QA)"),
}


@dataclass(frozen=True)
class BandpassCoefficients:
    """Linear bandpass adjustment ``msi_adjusted = slope * msi + offset`` (OLI-referenced)."""

    slope: float
    offset: float

    def apply(self, msi):  # noqa: ANN001, ANN201 - works on numpy, dask and xarray alike
        """Adjust Sentinel-2 reflectance to look like OLI."""
        return msi * self.slope + self.offset

    def invert(self, oli):  # noqa: ANN001, ANN201
        """Adjust OLI reflectance to look like Sentinel-2 (the inverse of :meth:`apply`)."""
        return (oli - self.offset) / self.slope


_C = BandpassCoefficients
#: HLS v2.0 bandpass adjustment coefficients, MSI -> OLI, per Sentinel-2 platform.
HLS_BANDPASS: dict[str, dict[str, BandpassCoefficients]] = {
    "sentinel-2a": {
        "blue": _C(0.9778, -0.004),
        "green": _C(1.0053, -0.0009),
        "red": _C(0.9765, 0.0009),
        "nir": _C(0.9983, -0.0001),
        "swir16": _C(0.9987, -0.0011),
        "swir22": _C(1.003, -0.0012),
    },
    "sentinel-2b": {
        "blue": _C(0.9778, -0.004),
        "green": _C(1.0075, -0.0008),
        "red": _C(0.9761, 0.001),
        "nir": _C(0.9966, 0.0),
        "swir16": _C(1.000, -0.0003),
        "swir22": _C(0.9867, 0.0004),
    },
}


def bandpass_coefficients(platform: str) -> dict[str, BandpassCoefficients]:
    """HLS coefficients for a Sentinel-2 platform name as providers spell it.

    Parameters
    ----------
    platform
        ``"sentinel-2a"``, ``"Sentinel-2B"``, ``"S2A"`` … (case and spelling as found in STAC).

    Returns
    -------
    dict
        Canonical band name -> :class:`BandpassCoefficients`.
    """
    key = platform.lower().replace("_", "-")
    if key in ("s2a", "sentinel2a"):
        key = "sentinel-2a"
    elif key in ("s2b", "sentinel2b"):
        key = "sentinel-2b"
    elif key in ("s2c", "sentinel2c", "sentinel-2c"):
        # HLS has not published S2C coefficients; S2C's MSI is a copy of S2A's design.
        key = "sentinel-2a"
    if key not in HLS_BANDPASS:
        raise UnknownBandError(
            f"No bandpass coefficients for platform {platform!r}; "
            f"expected one of {sorted(HLS_BANDPASS)}."
        )
    return HLS_BANDPASS[key]


def check_bands(
    bands: list[str] | tuple[str, ...] | None, *, allow_pan: bool = True, allow_lst: bool = False
) -> tuple[str, ...]:
    """Validate canonical band names, defaulting to all reflectance bands.

    ``allow_lst`` also accepts :data:`LST` (surface temperature, where the caller can load it).

    Raises
    ------
    UnknownBandError
        If a name is not canonical; the message lists the valid names.
    """
    if bands is None:
        return REFLECTANCE_BANDS + ((PAN,) if allow_pan else ())
    if isinstance(bands, str):
        bands = (bands,)
    valid = set(REFLECTANCE_BANDS) | ({PAN} if allow_pan else set()) | ({LST} if allow_lst else set())
    unknown = [b for b in bands if b not in valid]
    if unknown:
        raise UnknownBandError(
            f"Unknown band(s) {unknown}; canonical bands are {sorted(valid)}."
        )
    return tuple(bands)
