"""STAC items and collections shaped like the real providers': Earth Search v1 for
``sentinel-2-l2a`` and ``landsat-c2-l2``, USGS LandsatLook for the ``landsat-c2l1`` pan band."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pyproj import Transformer

from harmonize.world.calendar import Scene
from harmonize.world.grids import Grid
from harmonize.world.sensors import SCALINGS

__all__ = [
    "S2_ASSETS",
    "LANDSAT_ASSETS",
    "footprint",
    "box_footprint",
    "sentinel2_item",
    "landsat_l2_item",
    "landsat_l1_item",
    "collections",
    "QA_PIXEL_BITFIELDS",
]

_COG = "image/tiff; application=geotiff; profile=cloud-optimized"
_EXT = "https://stac-extensions.github.io/{}/schema.json"

# asset key -> (file stem, title, band name, centre wavelength, fwhm, resolution)
S2_ASSETS: dict[str, tuple[str, str, float, float, int]] = {
    "blue": ("B02", "Blue (band 2) - 10m", 0.49, 0.098, 10),
    "green": ("B03", "Green (band 3) - 10m", 0.56, 0.045, 10),
    "red": ("B04", "Red (band 4) - 10m", 0.665, 0.038, 10),
    "nir08": ("B8A", "NIR 2 (band 8A) - 20m", 0.865, 0.033, 20),
    "swir16": ("B11", "SWIR 1 (band 11) - 20m", 1.61, 0.143, 20),
    "swir22": ("B12", "SWIR 2 (band 12) - 20m", 2.19, 0.242, 20),
}
# asset key -> (OLI band, title, common name, centre wavelength, fwhm)
LANDSAT_ASSETS: dict[str, tuple[str, str, float, float]] = {
    "blue": ("B2", "Blue Band", 0.48, 0.06),
    "green": ("B3", "Green Band", 0.56, 0.06),
    "red": ("B4", "Red Band", 0.65, 0.04),
    "nir08": ("B5", "Near Infrared Band 0.8", 0.87, 0.03),
    "swir16": ("B6", "Short-wave Infrared Band 1.6", 1.61, 0.09),
    "swir22": ("B7", "Short-wave Infrared Band 2.2", 2.2, 0.19),
}


def _bitfield(
    name: str, offset: int, length: int, desc: str, classes: list[tuple[int, str]]
) -> dict[str, Any]:
    return {
        "name": name,
        "description": desc,
        "offset": offset,
        "length": length,
        "classes": [{"value": v, "name": n} for v, n in classes],
    }


_CONF = [(0, "not_set"), (1, "low"), (2, "medium"), (3, "high")]
#: ``classification:bitfields`` of QA_PIXEL, as USGS documents them.
QA_PIXEL_BITFIELDS = [
    _bitfield("fill", 0, 1, "Image or fill data", [(0, "not_fill"), (1, "fill")]),
    _bitfield("dilated_cloud", 1, 1, "Dilated cloud", [(0, "not_dilated"), (1, "dilated")]),
    _bitfield("cirrus", 2, 1, "Cirrus mask", [(0, "not_cirrus"), (1, "cirrus")]),
    _bitfield("cloud", 3, 1, "Cloud mask", [(0, "not_cloud"), (1, "cloud")]),
    _bitfield("cloud_shadow", 4, 1, "Cloud shadow mask", [(0, "not_shadow"), (1, "shadow")]),
    _bitfield("snow", 5, 1, "Snow/Ice mask", [(0, "not_snow"), (1, "snow")]),
    _bitfield("clear", 6, 1, "Clear mask", [(0, "not_clear"), (1, "clear")]),
    _bitfield("water", 7, 1, "Water mask", [(0, "not_water"), (1, "water")]),
    _bitfield("cloud_confidence", 8, 2, "Cloud confidence levels", _CONF),
    _bitfield("cloud_shadow_confidence", 10, 2, "Cloud shadow confidence levels", _CONF),
    _bitfield("snow_ice_confidence", 12, 2, "Snow/Ice confidence levels", _CONF),
    _bitfield("cirrus_confidence", 14, 2, "Cirrus confidence levels", _CONF),
]


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def footprint(grid: Grid, epsg: int) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON polygon and bbox, in longitude/latitude, of ``grid``'s extent."""
    left, bottom, right, top = grid.bounds
    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    xs = [left, right, right, left, left]
    ys = [top, top, bottom, bottom, top]
    lon, lat = tr.transform(xs, ys)
    ring = [[round(a, 7), round(b, 7)] for a, b in zip(lon, lat, strict=True)]
    bbox = [min(lon), min(lat), max(lon), max(lat)]
    return {"type": "Polygon", "coordinates": [ring]}, [round(v, 7) for v in bbox]


def box_footprint(
    box: tuple[float, float, float, float], epsg: int, n: int = 8
) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON polygon and bbox, in longitude/latitude, of the box ``(left, bottom, right, top)``
    of CRS ``epsg``, each edge densified to ``n`` segments (a box of another zone is curved)."""
    left, bottom, right, top = box
    xs = [left + (right - left) * i / n for i in range(n)] + [right] * n
    xs += [right - (right - left) * i / n for i in range(n)] + [left] * n + [left]
    ys = [top] * n + [top - (top - bottom) * i / n for i in range(n)]
    ys += [bottom] * n + [bottom + (top - bottom) * i / n for i in range(n)] + [top]
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(xs, ys)
    ring = [[round(a, 7), round(b, 7)] for a, b in zip(lon, lat, strict=True)]
    bbox = [min(lon), min(lat), max(lon), max(lat)]
    return {"type": "Polygon", "coordinates": [ring]}, [round(v, 7) for v in bbox]


def _proj(grid: Grid) -> dict[str, Any]:
    return {"proj:shape": [grid.ny, grid.nx], "proj:transform": grid.stac_transform()}


def _raster(kind: str, res: int, bits: int | None = None) -> list[dict[str, Any]]:
    s = SCALINGS[kind]
    rb: dict[str, Any] = {"nodata": s.nodata, "data_type": s.dtype}
    if bits:
        rb["bits_per_sample"] = bits
    rb.update({"spatial_resolution": res, "scale": s.scale, "offset": s.offset})
    return [rb]


_S2_EXT = [
    _EXT.format(e)
    for e in (
        "raster/v1.1.0",
        "view/v1.0.0",
        "projection/v1.1.0",
        "mgrs/v1.0.0",
        "grid/v1.0.0",
        "eo/v1.1.0",
    )
]


def _s2_assets(hrefs: dict[str, str], grids: dict[int, Grid]) -> dict[str, Any]:
    """The six reflectance assets and the SCL asset of a ``sentinel-2-l2a`` item."""
    assets: dict[str, Any] = {}
    for key, (_stem, title, cw, fwhm, res) in S2_ASSETS.items():
        assets[key] = {
            "href": hrefs[key],
            "type": _COG,
            "title": title,
            "eo:bands": [
                {
                    "name": key,
                    "common_name": key,
                    "description": title.split(" - ")[0],
                    "center_wavelength": cw,
                    "full_width_half_max": fwhm,
                }
            ],
            "gsd": res,
            **_proj(grids[res]),
            "raster:bands": _raster("sentinel-2", res, 15),
            "roles": ["data", "reflectance"],
        }
    assets["scl"] = {
        "href": hrefs["scl"],
        "type": _COG,
        "title": "Scene classification map (SCL)",
        **_proj(grids[20]),
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
        "roles": ["data", "reflectance"],
    }
    return assets


def _s2_properties(
    scene: Scene, *, epsg: int, mgrs_tile: str, sun: tuple[float, float], stats: dict[str, float]
) -> dict[str, Any]:
    """The ``properties`` of a ``sentinel-2-l2a`` item, in Earth Search v1's order."""
    t = scene.datetime
    ymd = t.strftime("%Y%m%dT%H%M%S")
    stamp = (t + dt.timedelta(hours=6)).strftime("%Y%m%dT%H%M%S")
    zone, band, square = mgrs_tile[:2], mgrs_tile[2], mgrs_tile[3:]
    return {
        "created": _iso(t + dt.timedelta(hours=7)),
        "platform": scene.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": stats["cloud_cover"],
        "proj:epsg": epsg,
        "proj:code": f"EPSG:{epsg}",
        "mgrs:utm_zone": int(zone),
        "mgrs:latitude_band": band,
        "mgrs:grid_square": square,
        "grid:code": f"MGRS-{mgrs_tile}",
        "s2:mgrs_tile": mgrs_tile,
        "view:sun_azimuth": sun[0],
        "view:sun_elevation": sun[1],
        "s2:nodata_pixel_percentage": stats["nodata"],
        "s2:saturated_defective_pixel_percentage": 0.0,
        "s2:dark_features_percentage": 0.0,
        "s2:cloud_shadow_percentage": stats["shadow"],
        "s2:vegetation_percentage": stats["vegetation"],
        "s2:not_vegetated_percentage": stats["not_vegetated"],
        "s2:water_percentage": stats["water"],
        "s2:unclassified_percentage": 0.0,
        "s2:medium_proba_clouds_percentage": stats["medium"],
        "s2:high_proba_clouds_percentage": stats["high"],
        "s2:thin_cirrus_percentage": stats["cirrus"],
        "s2:snow_ice_percentage": 0.0,
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": "05.09",
        "s2:product_uri": f"S2{scene.platform[-1].upper()}_MSIL2A_{ymd}_N0509_R000_T{mgrs_tile}_{stamp}.SAFE",
        "s2:sequence": "0",
        "datetime": _iso(t),
        "earthsearch:boa_offset_applied": True,
        "updated": _iso(t + dt.timedelta(hours=7)),
    }


def sentinel2_item(
    scene: Scene,
    hrefs: dict[str, str],
    grids: dict[int, Grid],
    *,
    epsg: int,
    mgrs_tile: str,
    sun: tuple[float, float],
    stats: dict[str, float],
    footprint_: tuple[dict[str, Any], list[float]] | None = None,
) -> dict[str, Any]:
    """An Earth Search v1 ``sentinel-2-l2a`` item for ``scene``.

    Parameters
    ----------
    scene
        The acquisition (id, platform, datetime, collection).
    hrefs
        Asset key (``blue`` ... ``swir22``, ``scl``) -> URL of its COG.
    grids
        Resolution in metres (10, 20) -> the scene's grid at that resolution.
    epsg
        EPSG code of the grids' CRS.
    mgrs_tile
        MGRS tile id, e.g. ``"32UNU"``.
    sun
        ``(azimuth, elevation)`` in degrees.
    stats
        The percentages (``cloud_cover``, ``nodata``, ``shadow``, ``vegetation``,
        ``not_vegetated``, ``water``, ``cirrus``, ``medium``, ``high``) measured on the SCL pixels.
    footprint_
        ``(geometry, bbox)`` of the tile's data (:func:`box_footprint`); default: the 10 m grid's box.

    Returns
    -------
    dict
        The STAC item as a JSON-ready dict.
    """
    geom, bbox = footprint_ if footprint_ is not None else footprint(grids[10], epsg)
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": list(_S2_EXT),
        "id": scene.id,
        "geometry": geom,
        "bbox": bbox,
        "properties": _s2_properties(scene, epsg=epsg, mgrs_tile=mgrs_tile, sun=sun, stats=stats),
        "links": [],
        "assets": _s2_assets(hrefs, grids),
        "collection": scene.collection,
    }


def _landsat_props(
    scene: Scene,
    grid30: Grid,
    *,
    epsg: int,
    sun: tuple[float, float],
    cloud_cover: float,
    wrs: tuple[int, int],
    correction: str,
) -> dict[str, Any]:
    t = scene.datetime
    code = "LC8" if scene.platform == "landsat-8" else "LC9"
    return {
        "platform": scene.platform,
        "instruments": ["oli", "tirs"],
        "created": _iso(t + dt.timedelta(days=8)),
        "gsd": 30,
        "eo:cloud_cover": cloud_cover,
        "view:off_nadir": 0,
        "view:sun_elevation": sun[1],
        "view:sun_azimuth": sun[0],
        "proj:epsg": epsg,
        "proj:code": f"EPSG:{epsg}",
        **_proj(grid30),
        "landsat:cloud_cover_land": cloud_cover,
        "landsat:wrs_type": "2",
        "landsat:wrs_path": f"{wrs[0]:03d}",
        "landsat:wrs_row": f"{wrs[1]:03d}",
        "landsat:collection_category": "T1",
        "landsat:collection_number": "02",
        "landsat:correction": correction,
        "landsat:scene_id": f"{code}{wrs[0]:03d}{wrs[1]:03d}{t.strftime('%Y%j')}LGN00",
        "grid:code": f"WRS2-{wrs[0]:03d}{wrs[1]:03d}",
        "datetime": _iso(t),
        "updated": _iso(t + dt.timedelta(days=8)),
    }


def _qa_asset(href: str, grid30: Grid) -> dict[str, Any]:
    return {
        "href": href,
        "type": _COG,
        "title": "Pixel Quality Assessment Band",
        "description": "Collection 2 Level-1 Pixel Quality Assessment Band (QA_PIXEL)",
        "classification:bitfields": QA_PIXEL_BITFIELDS,
        **_proj(grid30),
        "raster:bands": [{"nodata": 1, "data_type": "uint16", "spatial_resolution": 30, "unit": "bit index"}],
        "roles": ["cloud", "cloud-shadow", "snow-ice", "water-mask"],
    }


_LANDSAT_EXT = [
    _EXT.format(e)
    for e in (
        "projection/v1.1.0",
        "classification/v1.0.0",
        "raster/v1.1.0",
        "grid/v1.1.0",
        "view/v1.0.0",
        "eo/v1.1.0",
        "landsat/v2.0.0",
    )
]


def _thermal_assets(hrefs: dict[str, str], grid30: Grid) -> dict[str, Any]:
    """``lwir11`` (ST_B10) and ``qa`` (ST_QA), as Earth Search v1 and Planetary Computer serve them."""
    from harmonize.world.thermal import ST_QA_SCALING, ST_SCALING

    st, qa = ST_SCALING, ST_QA_SCALING
    return {
        "lwir11": {
            "href": hrefs["lwir11"],
            "type": _COG,
            "title": "Surface Temperature Band",
            "description": "Collection 2 Level-2 Thermal Infrared Band (ST_B10) Surface Temperature",
            "eo:bands": [
                {
                    "name": "TIRS_B10",
                    "common_name": "lwir11",
                    "description": "Long-wave infrared",
                    "center_wavelength": 10.9,
                    "full_width_half_max": 0.59,
                }
            ],
            **_proj(grid30),
            "raster:bands": [
                {
                    "nodata": st.nodata,
                    "data_type": st.dtype,
                    "spatial_resolution": 30,
                    "unit": "kelvin",
                    "scale": st.scale,
                    "offset": st.offset,
                }
            ],
            "gsd": 100,
            "roles": ["data", "temperature"],
        },
        "qa": {
            "href": hrefs["qa"],
            "type": _COG,
            "title": "Surface Temperature Quality Assessment Band",
            "description": "Collection 2 Level-2 Quality Assessment Band (ST_QA) Surface Temperature Product",
            **_proj(grid30),
            "raster:bands": [
                {
                    "nodata": qa.nodata,
                    "data_type": qa.dtype,
                    "spatial_resolution": 30,
                    "unit": "kelvin",
                    "scale": qa.scale,
                }
            ],
            "roles": ["data"],
        },
    }


def landsat_l2_item(
    scene: Scene,
    hrefs: dict[str, str],
    grid30: Grid,
    *,
    epsg: int,
    sun: tuple[float, float],
    cloud_cover: float,
    wrs: tuple[int, int],
) -> dict[str, Any]:
    """An Earth Search v1 ``landsat-c2-l2`` item for ``scene``."""
    geom, bbox = footprint(grid30, epsg)
    assets: dict[str, Any] = {}
    for key, (oli, title, cw, fwhm) in LANDSAT_ASSETS.items():
        assets[key] = {
            "href": hrefs[key],
            "type": _COG,
            "title": title,
            "description": f"Collection 2 Level-2 {title} (SR_{oli}) Surface Reflectance",
            "eo:bands": [
                {
                    "name": f"OLI_{oli}",
                    "common_name": key,
                    "center_wavelength": cw,
                    "full_width_half_max": fwhm,
                }
            ],
            **_proj(grid30),
            "raster:bands": _raster("landsat-l2", 30),
            "roles": ["data", "reflectance"],
        }
    assets["qa_pixel"] = _qa_asset(hrefs["qa_pixel"], grid30)
    if "lwir11" in hrefs:
        assets.update(_thermal_assets(hrefs, grid30))
    props = _landsat_props(
        scene, grid30, epsg=epsg, sun=sun, cloud_cover=cloud_cover, wrs=wrs, correction="L2SP"
    )
    props["description"] = "Landsat Collection 2 Level-2"
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": _LANDSAT_EXT,
        "id": scene.id,
        "geometry": geom,
        "bbox": bbox,
        "properties": props,
        "links": [],
        "assets": assets,
        "collection": scene.collection,
    }


def landsat_l1_item(
    scene: Scene,
    hrefs: dict[str, str],
    grid30: Grid,
    grid15: Grid,
    *,
    epsg: int,
    sun: tuple[float, float],
    cloud_cover: float,
    wrs: tuple[int, int],
) -> dict[str, Any]:
    """A USGS-shaped ``landsat-c2l1`` item (pan band and QA_PIXEL) for ``scene``."""
    geom, bbox = footprint(grid30, epsg)
    assets = {
        "pan": {
            "href": hrefs["pan"],
            "type": _COG,
            "title": "Panchromatic Band (B8)",
            "description": "Collection 2 Level-1 Panchromatic Band (B8) Top of Atmosphere Radiance",
            "eo:bands": [
                {"name": "B8", "common_name": "pan", "center_wavelength": 0.59, "full_width_half_max": 0.18}
            ],
            **_proj(grid15),
            "raster:bands": _raster("landsat-l1", 15),
            "roles": ["data"],
        },
        "qa_pixel": _qa_asset(hrefs["qa_pixel"], grid30),
    }
    props = _landsat_props(
        scene, grid30, epsg=epsg, sun=sun, cloud_cover=cloud_cover, wrs=wrs, correction="L1TP"
    )
    props["description"] = "Landsat Collection 2 Level-1 Product"
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": _LANDSAT_EXT,
        "id": scene.l1_id,
        "geometry": geom,
        "bbox": bbox,
        "properties": props,
        "links": [],
        "assets": assets,
        "collection": "landsat-c2l1",
    }


def collections(bbox: list[float], start: dt.date, end: dt.date) -> dict[str, dict[str, Any]]:
    """Collection documents of the three collections, with the world's extent."""
    interval = [[f"{start.isoformat()}T00:00:00Z", f"{end.isoformat()}T23:59:59Z"]]
    extent = {"spatial": {"bbox": [bbox]}, "temporal": {"interval": interval}}

    def doc(
        cid: str, title: str, desc: str, platforms: list[str], item_assets: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "type": "Collection",
            "id": cid,
            "stac_version": "1.0.0",
            "stac_extensions": [
                _EXT.format("item-assets/v1.0.0"),
                _EXT.format("raster/v1.1.0"),
                _EXT.format("eo/v1.1.0"),
            ],
            "title": title,
            "description": desc + " Simulated by harmonize.world (deterministic; not real data).",
            "license": "proprietary",
            "keywords": ["simulated", "harmonize"],
            "providers": [{"name": "harmonize.world", "roles": ["producer", "processor", "host"]}],
            "extent": extent,
            "summaries": {"platform": platforms},
            "item_assets": item_assets,
            "links": [],
        }

    s2_assets = {
        k: {"type": _COG, "title": v[1], "roles": ["data", "reflectance"]} for k, v in S2_ASSETS.items()
    }
    s2_assets["scl"] = {
        "type": _COG,
        "title": "Scene classification map (SCL)",
        "roles": ["data", "reflectance"],
    }
    l2_assets = {
        k: {"type": _COG, "title": v[1], "roles": ["data", "reflectance"]} for k, v in LANDSAT_ASSETS.items()
    }
    l2_assets["qa_pixel"] = {"type": _COG, "title": "Pixel Quality Assessment Band", "roles": ["cloud"]}
    l2_assets["lwir11"] = {
        "type": _COG,
        "title": "Surface Temperature Band",
        "roles": ["data", "temperature"],
    }
    l2_assets["qa"] = {
        "type": _COG,
        "title": "Surface Temperature Quality Assessment Band",
        "roles": ["data"],
    }
    l1_assets = {
        "pan": {"type": _COG, "title": "Panchromatic Band (B8)", "roles": ["data"]},
        "qa_pixel": l2_assets["qa_pixel"],
    }
    return {
        "sentinel-2-l2a": doc(
            "sentinel-2-l2a",
            "Sentinel-2 Level-2A",
            "Sentinel-2 L2A surface reflectance, Earth Search v1 layout.",
            ["sentinel-2a", "sentinel-2b"],
            s2_assets,
        ),
        "landsat-c2-l2": doc(
            "landsat-c2-l2",
            "Landsat Collection 2 Level-2",
            "Landsat 8/9 OLI surface reflectance, Earth Search v1 layout.",
            ["landsat-8", "landsat-9"],
            l2_assets,
        ),
        "landsat-c2l1": doc(
            "landsat-c2l1",
            "Landsat Collection 2 Level-1",
            "Landsat 8/9 top-of-atmosphere pan band, USGS LandsatLook layout.",
            ["landsat-8", "landsat-9"],
            l1_assets,
        ),
    }
