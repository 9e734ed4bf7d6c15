"""Configuration of a simulated world: where, when, how big, how cloudy, how textured."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harmonize.world.grids import origin_for_zone_boundary, zone_boundary_fraction

__all__ = ["WorldConfig", "S2_MIN_DATE"]

#: Sentinel-2 processing baseline 04.00 (BOA_ADD_OFFSET = -1000) starts here; every simulated
#: item carries baseline 05.09, so a world may not start earlier.
S2_MIN_DATE = dt.date(2022, 1, 25)


class WorldConfig(BaseModel):
    """Everything that determines a simulated archive; same config, same bytes.

    Attributes
    ----------
    size_km
        Side of the square area of interest in km; the AOI is ``size_km * 100`` pixels of 10 m,
        which must be an even number (so the 20 m Sentinel-2 bands tile it).
    start, end
        First and last acquisition day (inclusive).
    seed
        Seed of every random draw (landscape, clouds, shifts, noise).
    epsg
        A WGS 84 / UTM zone (326xx north, 327xx south).
    origin
        Upper-left corner of the AOI (easting, northing) in metres, on a 20 m lattice as the
        Sentinel-2 MGRS grids are.
    mean_field_ha
        Mean size of a Voronoi landscape cell (fields, woods, meadows) in hectares.
    clear_probability
        Chance that a scene is drawn cloud free; other scenes draw a cloud fraction uniformly
        between 0 and ``max_cloud_fraction``.
    max_cloud_fraction
        Largest drawn cloud fraction (1.0 allows overcast scenes).
    cirrus_probability
        Chance that a scene carries a field of thin cirrus.
    edge_nodata_probability
        Chance that a scene is cut by a swath edge (a band of nodata along one side).
    max_shift_px
        Largest Landsat misregistration per axis, in 30 m Landsat pixels.
    noise
        Multiplier of the sensor noise model (0 gives noise-free scenes).
    cloud_height_m
        Height of the cloud layer, which sets how far shadows fall from clouds.
    mgrs_tile, wrs_path, wrs_row
        Nominal tile names used in item ids.
    field_texture
        Strength of the texture inside fields, woods and meadows: patchy vigour, sowing rows
        (tramlines 30-60 m apart) and wet patches of darker soil; 0 gives the flat fields of the
        demo world, 1 the ``realistic-land`` preset's.
    hedgerow_fraction
        Share of field boundaries that carry a hedgerow or tree line (20 m wide) instead of a
        grass margin.
    field_irregularity
        How far field boundaries wander from straight Voronoi edges (0: straight; 1: about 60 m).
    wet_season
        ``("MM-DD", "MM-DD")``, first and last day of a wet season that recurs every year (it may
        wrap over the new year), or ``None``. In it, clouds persist over weeks and move slowly:
        one cloud field drifts across the AOI, shared by every scene of a day, instead of a new
        field per scene.
    wet_season_cover
        Range of the wet season's cloud fraction (it changes slowly, week to week).
    two_zones
        The AOI straddles the eastern boundary of ``epsg``'s UTM zone (which must cross it
        between 30 % and 80 % of its width): Sentinel-2 comes as two MGRS tiles, the western one
        in ``epsg`` and the eastern one in the next zone's CRS, overlapping near the boundary and
        acquired in the same pass (one sky); Landsat comes from two WRS-2 paths, ``wrs_path``
        (west, in ``epsg``) and ``wrs_path - 1`` (east, in the next zone), each covering 70 % of
        the AOI (the middle 40 % is their sidelap), imaged 7 days apart. Tile names then follow
        from the MGRS grid (``mgrs_tile`` is not used). :mod:`harmonize.world.zones`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    size_km: float = Field(5.12, gt=0, le=40.96)
    start: dt.date = dt.date(2023, 1, 1)
    end: dt.date = dt.date(2023, 12, 31)
    seed: int = Field(0, ge=0)
    epsg: int = 32614
    origin: tuple[float, float] = (552_000.0, 4_321_000.0)
    mean_field_ha: float = Field(6.0, gt=0.5, le=200)
    clear_probability: float = Field(0.3, ge=0, le=1)
    max_cloud_fraction: float = Field(1.0, ge=0, le=1)
    cirrus_probability: float = Field(0.25, ge=0, le=1)
    edge_nodata_probability: float = Field(0.15, ge=0, le=1)
    max_shift_px: float = Field(1.0, ge=0, le=1.5)
    noise: float = Field(1.0, ge=0, le=10)
    cloud_height_m: float = Field(1500.0, ge=0, le=12_000)
    mgrs_tile: str = Field("14SNH", pattern=r"^\d{2}[C-X][A-Z]{2}$")
    wrs_path: int = Field(28, ge=1, le=233)
    wrs_row: int = Field(33, ge=1, le=248)
    field_texture: float = Field(0.0, ge=0, le=2)
    hedgerow_fraction: float = Field(0.0, ge=0, le=1)
    field_irregularity: float = Field(0.0, ge=0, le=2)
    wet_season: tuple[str, str] | None = None
    wet_season_cover: tuple[float, float] = (0.7, 0.95)
    two_zones: bool = False

    @field_validator("size_km")
    @classmethod
    def _even_pixels(cls, v: float) -> float:
        px = v * 100
        if abs(px - round(px)) > 1e-6 or round(px) % 2 or round(px) < 32:
            raise ValueError(
                f"size_km={v} gives {px:g} pixels of 10 m; choose a multiple of 0.02 km of at "
                "least 0.32 km (e.g. 1.28 or 5.12) so the 20 m bands tile the AOI"
            )
        return float(v)

    @field_validator("epsg")
    @classmethod
    def _utm(cls, v: int) -> int:
        if not (32601 <= v <= 32660 or 32701 <= v <= 32760):
            raise ValueError(f"epsg={v} is not a WGS 84 / UTM zone; use 326xx (north) or 327xx (south)")
        return v

    @field_validator("origin")
    @classmethod
    def _on_lattice(cls, v: tuple[float, float]) -> tuple[float, float]:
        if any(abs(c / 20 - round(c / 20)) > 1e-9 for c in v):
            raise ValueError(f"origin={v} must lie on the 20 m Sentinel-2 lattice (multiples of 20 m)")
        return (float(v[0]), float(v[1]))

    @field_validator("wet_season")
    @classmethod
    def _month_days(cls, v: tuple[str, str] | None) -> tuple[str, str] | None:
        if v is None:
            return v
        for md in v:
            try:
                ok = re.fullmatch(r"\d{2}-\d{2}", md) and dt.datetime.strptime(f"2024-{md}", "%Y-%m-%d")
            except ValueError:
                ok = None
            if not ok:
                raise ValueError(f"wet_season day {md!r} is not a month-day 'MM-DD' (e.g. '06-01')")
        return (v[0], v[1])

    @field_validator("wet_season_cover")
    @classmethod
    def _cover_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1] <= 1:
            raise ValueError(f"wet_season_cover={v} must be (low, high) with 0 <= low <= high <= 1")
        return (float(v[0]), float(v[1]))

    @model_validator(mode="after")
    def _dates(self) -> WorldConfig:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}; swap them")
        if self.start < S2_MIN_DATE:
            raise ValueError(
                f"start {self.start} predates Sentinel-2 processing baseline 04.00 ({S2_MIN_DATE}), "
                "which every simulated item declares; start on or after it"
            )
        if (self.end - self.start).days > 3 * 366:
            raise ValueError("a world spans at most three years; shorten start..end")
        if self.two_zones:
            self._check_two_zones()
        return self

    def _check_two_zones(self) -> None:
        if self.epsg % 100 == 60:
            raise ValueError("two_zones needs a zone east of epsg's; zone 60 has none in this simulator")
        if self.wrs_path < 2:
            raise ValueError("two_zones needs wrs_path >= 2 (the eastern path is wrs_path - 1)")
        f = zone_boundary_fraction(self.origin, self.size_px, self.epsg)
        if not 0.3 <= f <= 0.8:
            x0 = origin_for_zone_boundary(self.origin, self.size_px, self.epsg, 0.58)
            raise ValueError(
                f"two_zones: the UTM zone boundary crosses the AOI at {f:.0%} of its width (it must be "
                f"between 30 % and 80 %); move the origin, e.g. origin=({x0:.0f}, {self.origin[1]:.0f})"
            )

    @property
    def size_px(self) -> int:
        """AOI side in 10 m pixels."""
        return int(round(self.size_km * 100))

    def in_wet_season(self, day: dt.date) -> bool:
        """Whether ``day`` falls in the recurring :attr:`wet_season`."""
        if self.wet_season is None:
            return False
        first, last = self.wet_season
        d = day.strftime("%m-%d")  # "MM-DD" strings order as the days do
        return first <= d <= last if first <= last else (d >= first or d <= last)

    @classmethod
    def tiny(cls, **overrides: Any) -> WorldConfig:
        """A world small enough for unit tests: 1.28 km over six weeks of early summer."""
        base: dict[str, Any] = dict(size_km=1.28, start=dt.date(2023, 5, 1), end=dt.date(2023, 6, 15))
        base.update(overrides)
        return cls(**base)
