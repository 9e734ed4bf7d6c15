"""Acquisition calendars: Sentinel-2A/B every 5 days alternating, Landsat-8 and -9 every 16 days
each, 8 days apart; sun angles at overpass time; the products' id conventions."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

__all__ = ["Scene", "acquisitions", "sun_position", "EPOCH"]

#: Day 0 of every repeat cycle: calendars do not depend on a world's start date.
EPOCH = dt.date(2022, 1, 1)
# Local solar times of the descending nodes (Sentinel-2 10:30, Landsat about 10:10).
_LOCAL_TIME = {"sentinel-2": 10.5, "landsat": 10.17}


@dataclass(frozen=True)
class Scene:
    """One acquisition of the simulated archive.

    Attributes
    ----------
    id
        STAC item id (Earth Search v1 style for ``sentinel-2-l2a`` and ``landsat-c2-l2``).
    collection
        ``"sentinel-2-l2a"`` or ``"landsat-c2-l2"``.
    sensor
        ``"sentinel-2"`` or ``"landsat"``.
    platform
        ``"sentinel-2a"``, ``"sentinel-2b"``, ``"landsat-8"`` or ``"landsat-9"``.
    datetime
        Acquisition time (UTC).
    l1_id
        Id of the companion ``landsat-c2l1`` item carrying the pan band (Landsat only).
    product_id
        Full product id used in file names (with processing date, Landsat only).
    tile
        Which footprint of the world the scene covers (:mod:`harmonize.world.zones`): 0, or 1
        for the eastern tile / path of a world across a UTM zone boundary.
    datatake
        For the second tile of a Sentinel-2 pass, the first tile's id: both share one sky.
    """

    id: str
    collection: str
    sensor: str
    platform: str
    datetime: dt.datetime
    l1_id: str | None = None
    product_id: str | None = None
    tile: int = 0
    datatake: str | None = None


#: Days after the western WRS-2 path that the eastern neighbour (path - 1) is imaged.
EAST_PATH_LAG_DAYS = 7


def _landsat_scene(day: dt.date, n: int, cycle_day: int, lon: float, path: int, row: int, tile: int) -> Scene:
    plat = "landsat-8" if cycle_day % 16 < 8 else "landsat-9"
    code = "LC08" if plat == "landsat-8" else "LC09"
    ymd = day.strftime("%Y%m%d")
    pr = f"{path:03d}{row:03d}"
    proc = (day + dt.timedelta(days=7)).strftime("%Y%m%d")
    return Scene(
        id=f"{code}_L2SP_{pr}_{ymd}_02_T1",
        collection="landsat-c2-l2",
        sensor="landsat",
        platform=plat,
        datetime=_overpass(day, "landsat", lon, n),
        l1_id=f"{code}_L1TP_{pr}_{ymd}_{proc}_02_T1",
        product_id=f"{code}_L2SP_{pr}_{ymd}_{proc}_02_T1",
        tile=tile,
    )


def acquisitions(
    start: dt.date,
    end: dt.date,
    *,
    lon: float,
    mgrs_tile: str,
    wrs_path: int,
    wrs_row: int,
    east: tuple[str, int] | None = None,
) -> list[Scene]:
    """Every scene between ``start`` and ``end`` (inclusive), in time order.

    ``east`` is ``(mgrs tile, wrs path)`` of a world's second footprint: each Sentinel-2 pass then
    also images that tile (same time, same sky), and that WRS-2 path is imaged
    :data:`EAST_PATH_LAG_DAYS` after ``wrs_path`` by each Landsat.
    """
    out: list[Scene] = []
    day = start
    while day <= end:
        n = (day - EPOCH).days
        ymd = day.strftime("%Y%m%d")
        if n % 5 == 0:
            plat = "sentinel-2a" if (n // 5) % 2 == 0 else "sentinel-2b"
            t = _overpass(day, "sentinel-2", lon, n)
            first = f"S2{plat[-1].upper()}_{mgrs_tile}_{ymd}_0_L2A"
            out.append(Scene(first, "sentinel-2-l2a", "sentinel-2", plat, t))
            if east is not None:
                sid = f"S2{plat[-1].upper()}_{east[0]}_{ymd}_0_L2A"
                out.append(Scene(sid, "sentinel-2-l2a", "sentinel-2", plat, t, tile=1, datatake=first))
        if n % 8 == 0:
            out.append(_landsat_scene(day, n, n, lon, wrs_path, wrs_row, 0))
        if east is not None and (n - EAST_PATH_LAG_DAYS) % 8 == 0:
            out.append(_landsat_scene(day, n, n - EAST_PATH_LAG_DAYS, lon, east[1], wrs_row, 1))
        day += dt.timedelta(days=1)
    return sorted(out, key=lambda s: (s.datetime, s.id))


def _overpass(day: dt.date, sensor: str, lon: float, n: int) -> dt.datetime:
    hours = _LOCAL_TIME[sensor] - lon / 15.0
    # A deterministic few seconds of jitter so times look like real ones.
    seconds = round(hours * 3600 + (n * 37 % 120), 3)
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.timezone.utc) + dt.timedelta(seconds=seconds)


def sun_position(t: dt.datetime, lat: float, lon: float) -> tuple[float, float]:
    """Approximate solar ``(azimuth, elevation)`` in degrees (azimuth clockwise from north)."""
    doy = t.timetuple().tm_yday
    decl = math.radians(23.44) * math.sin(2 * math.pi * (doy - 81) / 365.0)
    solar_hours = t.hour + t.minute / 60 + t.second / 3600 + lon / 15.0
    h = math.radians(15.0 * (solar_hours - 12.0))
    phi = math.radians(lat)
    elev = math.asin(math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(h))
    az = (
        math.degrees(math.atan2(math.sin(h), math.cos(h) * math.sin(phi) - math.tan(decl) * math.cos(phi)))
        + 180.0
    )
    return round(az % 360.0, 6), round(math.degrees(elev), 6)
