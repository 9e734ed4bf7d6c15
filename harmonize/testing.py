"""Small STAC items shaped like each provider's, for tests (harmonize's and its users').

The real item documents differ in asset keys, in whether ``raster:bands`` is present and in how
Sentinel-2's BOA offset is declared. :func:`make_item` reproduces those differences on a tiny
footprint, so provider logic can be tested without the network or third-party files.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import pystac

from harmonize.providers import get_provider

__all__ = ["make_item"]

Shape = Literal["earth-search", "planetary-computer", "usgs", "local"]


def make_item(
    provider: Shape,
    sensor: Literal["landsat", "sentinel-2"],
    *,
    item_id: str | None = None,
    when: dt.datetime = dt.datetime(2023, 10, 8, 17, 40, tzinfo=dt.timezone.utc),
    epsg: int = 32613,
    transform: tuple[float, ...] | None = None,
    shape: tuple[int, int] = (8, 8),
    cloud_cover: float = 10.0,
    processing_baseline: str | None = "05.09",
    raster_bands: bool | None = None,
    href_root: str = "file:///tmp/harmonize-test",
    level: Literal["L2", "L1"] = "L2",
    footprint_from_grid: bool = False,
    native_resolution: bool = False,
    wrs_path_row: tuple[int, int] | None = None,
) -> pystac.Item:
    """Build a small item the way ``provider`` would serve it.

    Parameters
    ----------
    provider
        Whose item shape to imitate.
    sensor
        ``"landsat"`` or ``"sentinel-2"``.
    raster_bands
        Whether assets carry ``raster:bands``; default as the provider does (Earth Search and
        Planetary Computer's Landsat: yes; Planetary Computer's Sentinel-2 and USGS: no).
    processing_baseline
        ``s2:processing_baseline`` for Sentinel-2 items (``None`` to omit it).
    footprint_from_grid
        Make ``geometry``/``bbox`` the grid's true extent in lon/lat (needed where code derives a
        grid or an overlap from the footprint); default a fixed box near the real items (Colorado).
    native_resolution
        Give each asset its own ``proj:transform``/``proj:shape`` at the band's native resolution
        (Sentinel-2 B8A/B11/B12 and SCL at 20 m, Landsat Level-1 QA_PIXEL at 30 m), as real items
        do; ``transform``/``shape`` then describe the finest band. Default: one grid for all.
    wrs_path_row
        ``landsat:wrs_path``/``landsat:wrs_row`` for Landsat items (zero-padded strings, as served).

    Returns
    -------
    pystac.Item
        With absolute hrefs under ``href_root``.
    """
    prov = get_provider(provider)
    profile = prov.collection(sensor, level)
    res = 10.0 if sensor == "sentinel-2" else (15.0 if level == "L1" else 30.0)
    if transform is None:
        x0 = 399960.0 if sensor == "sentinel-2" else 449085.0
        transform = (res, 0.0, x0, 0.0, -res, 4500000.0 if sensor == "sentinel-2" else 4581915.0)
    x0, y0 = transform[2], transform[5]
    x1, y1 = x0 + shape[1] * transform[0], y0 + shape[0] * transform[4]
    # A footprint in lon/lat near the real items (Colorado); exactness is not needed here.
    bbox = [-104.3, 40.2, -104.1, 40.4]
    if footprint_from_grid:
        from odc.geo import geom

        box = geom.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1), f"EPSG:{epsg}")
        footprint = box.to_crs("epsg:4326")
        bbox = list(footprint.boundingbox)
    geometry = {
        "type": "Polygon",
        "coordinates": [[[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]], [bbox[0], bbox[1]]]],
    }
    if footprint_from_grid:
        geometry = footprint.json
    if item_id is None:
        stamp = when.strftime("%Y%m%d")
        item_id = f"S2A_13TDE_{stamp}_0_L2A" if sensor == "sentinel-2" else f"LC08_L2SP_033032_{stamp}_02_T1"
    props: dict[str, Any] = {
        "platform": "sentinel-2a" if sensor == "sentinel-2" else "landsat-8",
        "eo:cloud_cover": cloud_cover,
        "proj:epsg": epsg,
    }
    if sensor == "sentinel-2" and processing_baseline is not None:
        props["s2:processing_baseline"] = processing_baseline
    if provider == "planetary-computer" and sensor == "sentinel-2":
        props["platform"] = "Sentinel-2A"
    if provider == "usgs":
        props["platform"] = "LANDSAT_8"
    if sensor == "landsat" and wrs_path_row is not None:
        props["landsat:wrs_path"], props["landsat:wrs_row"] = f"{wrs_path_row[0]:03d}", f"{wrs_path_row[1]:03d}"
    item = pystac.Item(item_id, geometry, bbox, when, props, collection=profile.collection)
    with_rb = raster_bands
    if with_rb is None:
        with_rb = not (provider == "usgs" or (provider == "planetary-computer" and sensor == "sentinel-2"))
    keys = {**{b: k for b, k in profile.assets.items()}, "qa": profile.qa_asset}
    for band, key in keys.items():
        extra: dict[str, Any] = {"proj:shape": list(shape), "proj:transform": list(transform)}
        if native_resolution:
            r = _native_res(band, sensor)
            if r is not None and r != res:
                f = r / res
                t = list(transform)
                extra = {
                    "proj:shape": [max(1, round(shape[0] / f)), max(1, round(shape[1] / f))],
                    "proj:transform": [t[0] * f, t[1], t[2], t[3], t[4] * f, t[5]],
                }
        if with_rb:
            scaling = profile.scaling[band]
            rb: dict[str, Any] = {"data_type": scaling.dtype, "nodata": scaling.nodata}
            if band != "qa":
                rb.update(scale=scaling.scale, offset=scaling.offset)
            extra["raster:bands"] = [rb]
        if provider == "usgs":
            extra["alternate"] = {"s3": {"storage:requester_pays": True, "href": f"s3://usgs-landsat/{item_id}_{key}.TIF"}}
        item.add_asset(
            key,
            pystac.Asset(
                href=f"{href_root}/{item_id}_{key}.tif",
                media_type=pystac.MediaType.COG,
                roles=["data"],
                extra_fields=extra,
            ),
        )
    item.collection_id = profile.collection
    return item


def _native_res(band: str, sensor: str) -> float | None:
    """Native resolution of canonical ``band`` (or ``"qa"``: SCL 20 m, QA_PIXEL 30 m)."""
    from harmonize.bands import BANDS

    if band == "qa":
        return 20.0 if sensor == "sentinel-2" else 30.0
    return BANDS[band].resolution(sensor) if band in BANDS else None
