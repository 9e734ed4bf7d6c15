"""Create and open simulated worlds: COGs, STAC items, truth and manifest on disk.

Layout of a world directory::

    world.json                   config, format version, counts (written last: completion marker)
    manifest.json                every scene: id, collection, sensor, platform, datetime, shift, clouds
    items.parquet                all STAC items as stac-geoparquet (rustac)
    items.ndjson                 the same items, one JSON document per line
    collections/<id>.json        sentinel-2-l2a, landsat-c2-l2, landsat-c2l1
    data/<collection>/<item id>/*.tif   Cloud-Optimized GeoTIFFs (Landsat L2 with ST_B10 / ST_QA)
    truth.zarr                   noise- and cloud-free Sentinel-2A reflectance and land surface
                                 temperature (``lst``, K; :mod:`harmonize.world.thermal`) on the
                                 10 m AOI grid
    masks.zarr                   raw mask bits of every scene on its quality asset's grid

Shift convention (Landsat): each scene has a shift ``(dx, dy)`` in metres, the correction to ADD
to the item's geotransform origin ``(x0, y0)`` so that its pixels land on the true ground: pixel
``(row, col)`` shows the ground at ``(x0 + dx + (col + 0.5) * res, y0 + dy - (row + 0.5) * res)``.
The scene's ``landsat-c2l1`` pan item shares the shift. Sentinel-2 scenes are not shifted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import multiprocessing
import shutil
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rioxarray  # noqa: F401 - registers the .rio accessor
import xarray as xr
from pyproj import Transformer

from harmonize.bands import REFLECTANCE_BANDS
from harmonize.errors import WorldError
from harmonize.world import stac_items, thermal
from harmonize.world.calendar import Scene, acquisitions, sun_position
from harmonize.world.config import WorldConfig
from harmonize.world.grids import Grid
from harmonize.world.landscape import CROPS, LANDCOVER, Landscape, landscape_of
from harmonize.world.scenes import (
    MASK_BITS,
    Geometry,
    SimulatedScene,
    product_masks,
    simulate_landsat,
    simulate_sentinel2,
)
from harmonize.world.sensors import spectral
from harmonize.world.zones import Tile, tiles

__all__ = ["World", "create_world", "open_world", "FORMAT", "SHIFT_CONVENTION"]

log = logging.getLogger(__name__)

FORMAT = "harmonize-world/1"
SHIFT_CONVENTION = (
    "shift = [dx, dy] metres to ADD to the item's geotransform origin (x0, y0) so its pixels land on "
    "the true ground: pixel (row, col) shows the ground at (x0 + dx + (col + 0.5) * res, "
    "y0 + dy - (row + 0.5) * res). The landsat-c2l1 pan item of a scene shares its shift; "
    "Sentinel-2 scenes have shift [0, 0]."
)
_TIME_CHUNK = 8
_S2_FILES = {
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "nir08": "B8A",
    "swir16": "B11",
    "swir22": "B12",
    "scl": "SCL",
}
_L2_FILES = {
    "blue": "SR_B2",
    "green": "SR_B3",
    "red": "SR_B4",
    "nir08": "SR_B5",
    "swir16": "SR_B6",
    "swir22": "SR_B7",
    "qa_pixel": "QA_PIXEL",
    "lwir11": "ST_B10",
    "qa": "ST_QA",
}


def geometry(cfg: WorldConfig) -> Geometry:
    """All grids of the world ``cfg`` describes (of its first tile in a two-zone world)."""
    return tiles(cfg)[0].geometry


def _margin_px(geo: Geometry) -> int:
    """How many pixels the simulated domain reaches past the AOI on each side."""
    return int(round((geo.aoi.x0 - geo.domain.x0) / geo.aoi.res))


def _centre_lonlat(cfg: WorldConfig, aoi: Grid) -> tuple[float, float]:
    left, bottom, right, top = aoi.bounds
    lon, lat = Transformer.from_crs(cfg.epsg, 4326, always_xy=True).transform(
        (left + right) / 2, (bottom + top) / 2
    )
    return float(lon), float(lat)


def _scenes(cfg: WorldConfig, aoi: Grid) -> list[Scene]:
    lon, _ = _centre_lonlat(cfg, aoi)
    ts = tiles(cfg)
    east = (ts[1].mgrs_tile, ts[1].wrs_path) if len(ts) > 1 else None
    return acquisitions(
        cfg.start,
        cfg.end,
        lon=lon,
        mgrs_tile=ts[0].mgrs_tile,
        wrs_path=ts[0].wrs_path,
        wrs_row=cfg.wrs_row,
        east=east,
    )


def _write_cog(path: Path, arr: np.ndarray, grid: Grid, epsg: int, nodata: int, categorical: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    opts: dict[str, Any] = dict(
        BLOCKSIZE=256,
        COMPRESS="ZSTD",
        LEVEL=1,  # fastest; higher levels gain little on noisy reflectance
        OVERVIEW_COUNT=1,
        OVERVIEW_RESAMPLING="NEAREST" if categorical else "AVERAGE",
    )
    if not categorical:
        opts["PREDICTOR"] = 2
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=grid.nx,
        height=grid.ny,
        count=1,
        dtype=arr.dtype.name,
        crs=f"EPSG:{epsg}",
        transform=grid.transform,
        nodata=nodata,
        **opts,
    ) as ds:
        ds.write(arr, 1)


def _uri(p: Path) -> str:
    return p.resolve().as_uri()


class _Builder:
    def __init__(self, root: Path, cfg: WorldConfig) -> None:
        self.root, self.cfg = root, cfg
        self.tiles: list[Tile] = tiles(cfg)
        self.geo = self.tiles[0].geometry
        self.lon, self.lat = _centre_lonlat(cfg, self.geo.aoi)

    def scene(
        self, scene: Scene, surface: np.ndarray, water: np.ndarray, lst: np.ndarray
    ) -> tuple[list[dict[str, Any]], dict[str, Any], np.ndarray]:
        cfg = self.cfg
        tile = self.tiles[scene.tile]
        geo, epsg = tile.geometry, tile.epsg
        sun = sun_position(scene.datetime, self.lat, self.lon)
        if scene.sensor == "sentinel-2":
            sim = simulate_sentinel2(cfg, geo, scene, surface, water, sun)
            folder = self.root / "data" / scene.collection / scene.id
            hrefs = {}
            for key, arr in sim.bands.items():
                grid = geo.s2_20 if key in ("nir08", "swir16", "swir22", "scl") else geo.s2_10
                p = folder / f"{_S2_FILES[key]}.tif"
                _write_cog(p, arr, grid, epsg, 0, key == "scl")
                hrefs[key] = _uri(p)
            items = [
                stac_items.sentinel2_item(
                    scene,
                    hrefs,
                    {10: geo.s2_10, 20: geo.s2_20},
                    epsg=epsg,
                    mgrs_tile=tile.mgrs_tile,
                    sun=sun,
                    stats=sim.stats,
                    footprint_=None if geo.valid is None else stac_items.box_footprint(geo.valid, cfg.epsg),
                )
            ]
        else:
            sim = simulate_landsat(cfg, geo, scene, surface, water, sun)
            st = thermal.landsat_st(
                lst,
                geo.domain,
                geo.l30,
                shift=sim.shift,
                raw_masks=sim.raw_masks,
                bits=MASK_BITS,
                seed=cfg.seed,
                scene_id=scene.id,
                noise=cfg.noise,
            )
            folder = self.root / "data" / scene.collection / scene.id
            hrefs = {}
            nodata = {"qa_pixel": 1, "qa": thermal.ST_QA_SCALING.nodata}
            for key, arr in {**sim.bands, "lwir11": st[0], "qa": st[1]}.items():
                p = folder / f"{scene.product_id}_{_L2_FILES[key]}.TIF"
                _write_cog(p, arr, geo.l30, epsg, nodata.get(key, 0), key == "qa_pixel")
                hrefs[key] = _uri(p)
            wrs = (tile.wrs_path, cfg.wrs_row)
            items = [
                stac_items.landsat_l2_item(
                    scene, hrefs, geo.l30, epsg=epsg, sun=sun, cloud_cover=sim.cloud_cover, wrs=wrs
                )
            ]
            folder1 = self.root / "data" / "landsat-c2l1" / str(scene.l1_id)
            h1 = {}
            p = folder1 / f"{scene.l1_id}_B8.TIF"
            _write_cog(p, sim.l1_bands["pan"], geo.l15, epsg, 0, False)
            h1["pan"] = _uri(p)
            p = folder1 / f"{scene.l1_id}_QA_PIXEL.TIF"
            _write_cog(p, sim.l1_bands["qa_pixel"], geo.l30, epsg, 1, True)
            h1["qa_pixel"] = _uri(p)
            items.append(
                stac_items.landsat_l1_item(
                    scene, h1, geo.l30, geo.l15, epsg=epsg, sun=sun, cloud_cover=sim.cloud_cover, wrs=wrs
                )
            )
        entry = self._manifest_entry(scene, sim, sun)
        return items, entry, sim.raw_masks

    def _manifest_entry(self, scene: Scene, sim: SimulatedScene, sun: tuple[float, float]) -> dict[str, Any]:
        tile = self.tiles[scene.tile]
        geo = tile.geometry
        qa_grid = geo.l30 if scene.sensor == "landsat" else geo.s2_20
        extra: dict[str, Any] = {}
        if len(self.tiles) > 1:
            extra = {"tile": tile.mgrs_tile if scene.sensor == "sentinel-2" else tile.wrs_path}
            if tile.epsg != self.cfg.epsg:
                extra["shift_world"] = list(_shift_in(qa_grid, sim.shift, self.cfg.epsg))
        return {
            "id": scene.id,
            "collection": scene.collection,
            "sensor": scene.sensor,
            "platform": scene.platform,
            "datetime": scene.datetime.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "date": scene.datetime.date().isoformat(),
            "l1_id": scene.l1_id,
            "shift": list(sim.shift),
            "cloud_fraction": round(sim.cloud_fraction, 6),
            "eo:cloud_cover": sim.cloud_cover,
            "nodata_edge": sim.nodata_edge,
            "sun_azimuth": sun[0],
            "sun_elevation": sun[1],
            "mask_grid": {"transform": qa_grid.stac_transform(), "shape": [qa_grid.ny, qa_grid.nx]},
            "epsg": tile.epsg,
            **extra,
        }


def _shift_in(grid: Grid, shift: tuple[float, float], epsg: int) -> tuple[float, float]:
    """``shift`` (metres in ``grid``'s CRS) as the same displacement of ``grid``'s centre in ``epsg``."""
    t = Transformer.from_crs(int(grid.epsg), epsg, always_xy=True)  # type: ignore[arg-type]
    left, bottom, right, top = grid.bounds
    cx, cy = (left + right) / 2, (bottom + top) / 2
    x0, y0 = t.transform(cx, cy)
    x1, y1 = t.transform(cx + shift[0], cy + shift[1])
    return (round(float(x1 - x0), 3), round(float(y1 - y0), 3))


def _write_truth(
    path: Path,
    cfg: WorldConfig,
    geo: Geometry,
    land: Any,
    batches: Iterator[tuple[list[dt.date], np.ndarray, dict, np.ndarray]],
) -> None:
    import zarr

    m = _margin_px(geo)
    aoi = geo.aoi
    sl = (slice(m, m + aoi.ny), slice(m, m + aoi.nx))
    first = True
    codec = zarr.codecs.ZstdCodec(level=5)
    for dates, refl, sensors, lst in batches:
        ds = xr.Dataset(
            {b: (("time", "y", "x"), refl[:, i]) for i, b in enumerate(REFLECTANCE_BANDS)}
            | {"lst": (("time", "y", "x"), lst)},
            coords={
                "time": np.array([np.datetime64(d, "ns") for d in dates]),
                "y": aoi.ys(),
                "x": aoi.xs(),
                "landsat": ("time", np.array(["landsat" in sensors[d] for d in dates])),
                "sentinel2": ("time", np.array(["sentinel-2" in sensors[d] for d in dates])),
            },
        )
        if first:
            ds["landcover"] = (("y", "x"), land.landcover[sl])
            ds["field_id"] = (("y", "x"), land.field_id[sl])
            nf = len(land.field_crop)
            ds = ds.assign_coords(field=np.arange(1, nf + 1, dtype=np.int32))
            ds["field_crop"] = ("field", land.field_crop.astype(np.uint8))
            ds["field_sow_doy"] = ("field", land.field_sow_doy)
            ds["field_harvest_doy"] = ("field", land.field_harvest_doy)
            ds["landcover"].attrs = {
                "flag_values": list(LANDCOVER),
                "flag_meanings": " ".join(LANDCOVER.values()),
                "long_name": "land cover",
            }
            ds["field_id"].attrs = {"long_name": "field number (0 outside fields)"}
            ds["field_crop"].attrs = {"flag_values": list(CROPS), "flag_meanings": " ".join(CROPS.values())}
            ds["field_sow_doy"].attrs = {"long_name": "sowing day of year", "units": "day"}
            ds["field_harvest_doy"].attrs = {"long_name": "harvest day of year", "units": "day"}
            ds.attrs = {
                "title": "harmonize.world truth: noise-free, cloud-free Sentinel-2A surface reflectance",
                "spectral": "sentinel-2a MSI (nir = B8A); see harmonize.world.sensors.spectral",
                "seed": cfg.seed,
            }
            for b in REFLECTANCE_BANDS:
                ds[b].attrs = {"long_name": f"{b} surface reflectance", "units": "1"}
            ds["lst"].attrs = {
                "long_name": "land surface temperature (harmonize.world.thermal)",
                "units": "K",
            }
            ds = ds.rio.write_crs(f"EPSG:{cfg.epsg}")
            ds = ds.rio.write_transform(aoi.transform)
            enc: dict[str, Any] = {
                b: {
                    "dtype": "uint16",
                    "scale_factor": np.float32(1e-4),
                    "add_offset": np.float32(0.0),
                    "_FillValue": np.uint16(0),
                    "chunks": (_TIME_CHUNK, min(256, aoi.ny), min(256, aoi.nx)),
                    "compressors": [codec],
                }
                for b in REFLECTANCE_BANDS
            }
            enc["lst"] = {**enc[REFLECTANCE_BANDS[0]], "scale_factor": np.float32(0.01)}
            enc["time"] = {"units": "days since 2022-01-01", "dtype": "int32"}
            ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False, encoding=enc)
            first = False
        else:
            ds = ds.rio.write_crs(f"EPSG:{cfg.epsg}").drop_vars("spatial_ref")
            ds.to_zarr(path, append_dim="time", zarr_format=3, consolidated=False)


def _write_masks(path: Path, masks: dict[str, np.ndarray]) -> None:
    import zarr

    g = zarr.open_group(path, mode="w", zarr_format=3)
    g.attrs["bits"] = MASK_BITS
    for sid in sorted(masks):
        a = masks[sid]
        arr = g.create_array(
            sid,
            shape=a.shape,
            dtype="uint8",
            chunks=a.shape,
            compressors=[zarr.codecs.ZstdCodec(level=5)],
            fill_value=0,
        )
        arr[...] = a


@dataclass
class _Simulated:
    """What simulating a world's scenes leaves for the catalogue: scenes in time order and their outputs."""

    scenes: list[Scene]
    dates: list[dt.date]
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # scene id -> its STAC items
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # scene id -> manifest entry
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # scene id -> raw mask bits


def _prepare_root(root: Path, cfg: WorldConfig, overwrite: bool) -> World | None:
    """Make ``root`` ready for a new world, or return the world of ``cfg`` it already holds.

    Raises
    ------
    WorldError
        If ``root`` holds a different or incomplete world, or other files, and ``overwrite`` is false.
    """
    if root.exists() and any(root.iterdir()) and not overwrite:
        if (root / "world.json").exists():
            existing = _read_world_json(root)
            if existing.get("format") == FORMAT and WorldConfig(**existing["config"]) == cfg:
                return open_world(root)
            raise WorldError(
                f"{root} already holds a different world (config {existing.get('config')}); pass another "
                "directory, or overwrite=True to replace it."
            )
        raise WorldError(
            f"{root} is not empty and holds no complete world (no world.json): it may be a half-written "
            "world or unrelated files. Choose an empty directory, or pass overwrite=True to replace it."
        )
    if root.exists() and overwrite:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    return None


#: Scenes times domain pixels from which a world is simulated on worker processes: the COG writes
#: hold the GIL, so threads simulate one scene at a time; a process each costs ~2 s to start,
#: more than a tiny world takes.
_PROCESS_WORK = 10_000_000


class _DateSimulator:
    """Simulates every scene of one date: its truth surface and temperature, then the scenes'
    COGs, items and manifest entries (in a worker process or thread; the outputs depend only on
    the date, not on where or in which order dates run)."""

    def __init__(self, builder: _Builder, land: Landscape, water: np.ndarray) -> None:
        self.builder, self.land, self.water = builder, land, water
        m, aoi = _margin_px(builder.geo), builder.geo.aoi
        self.sl = (slice(m, m + aoi.ny), slice(m, m + aoi.nx))

    def __call__(
        self, d: dt.date, scenes: list[Scene]
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[list[dict[str, Any]], dict[str, Any], np.ndarray]]]:
        """The truth reflectance and temperature of ``d`` on the AOI, and each scene's outputs."""
        surface = self.land.reflectance(d)
        temperature = thermal.surface_temperature(self.land, d, self.builder.cfg.seed)
        done = [self.builder.scene(s, surface, self.water, temperature) for s in scenes]
        sl = self.sl
        return np.ascontiguousarray(surface[:, sl[0], sl[1]]), np.ascontiguousarray(temperature[sl]), done


_WORKER: dict[str, _DateSimulator] = {}  # the simulator of a worker process (set by _start_worker)


def _start_worker(root: Path, cfg: WorldConfig, land: Landscape, water: np.ndarray) -> None:
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):  # Linux: die with the parent (PR_SET_PDEATHSIG)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    _WORKER["simulate"] = _DateSimulator(_Builder(root, cfg), land, water)


def _simulate_in_worker(
    d: dt.date, scenes: list[Scene]
) -> tuple[np.ndarray, np.ndarray, list[tuple[list[dict[str, Any]], dict[str, Any], np.ndarray]]]:
    return _WORKER["simulate"](d, scenes)


@contextlib.contextmanager
def _date_pool(
    builder: _Builder, land: Landscape, water: np.ndarray, workers: int, processes: bool
) -> Iterator[tuple[Executor, Callable[..., Any]]]:
    """An executor and the function simulating one date on it: ``workers`` forked processes
    (each given the landscape once), or threads."""
    if not processes:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield pool, _DateSimulator(builder, land, water)
        return
    # fork: no re-import of the caller's script (spawn would run an unguarded one again); the
    # workers only simulate scenes and write COGs, none of the parent's threads' work
    ctx = multiprocessing.get_context("fork")
    args = (builder.root, builder.cfg, land, water)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker, initargs=args) as pool:
        yield pool, _simulate_in_worker


def _scene_batches(
    builder: _Builder,
    land: Landscape,
    water: np.ndarray,
    by_date: dict[dt.date, list[Scene]],
    out: _Simulated,
    bar: Any,
    workers: int,
) -> Iterator[tuple[list[dt.date], np.ndarray, dict, np.ndarray]]:
    """Simulate and write the scenes, ``_TIME_CHUNK`` dates at a time, into ``out``.

    Yields each batch's dates, its truth reflectance on the AOI, the sensors seen on each date and
    the truth land surface temperature on the AOI, for :func:`_write_truth`. Each date is one
    task (on worker processes for a large world: :data:`_PROCESS_WORK`); the dates of the next
    batch are simulated while the caller writes this one's truth.
    """
    aoi = builder.geo.aoi
    chunks = [out.dates[i : i + _TIME_CHUNK] for i in range(0, len(out.dates), _TIME_CHUNK)]
    # processes only where fork is safe (Linux): macOS lists fork but its system libraries are not
    # fork-safe, and spawn would re-run a caller's unguarded script
    processes = (
        workers > 1
        and sys.platform.startswith("linux")
        and len(out.scenes) * land.landcover.size >= _PROCESS_WORK
    )
    with _date_pool(builder, land, water, max(1, workers), processes) as (pool, simulate):

        def submit(k: int) -> list[Future]:
            return [pool.submit(simulate, d, by_date[d]) for d in chunks[k]] if k < len(chunks) else []

        ahead = submit(0)
        for k, chunk in enumerate(chunks):
            futures, ahead = ahead, submit(k + 1)
            refl = np.empty((len(chunk), len(REFLECTANCE_BANDS), aoi.ny, aoi.nx), np.float32)
            lst = np.empty((len(chunk), aoi.ny, aoi.nx), np.float32)
            for j, (d, f) in enumerate(zip(chunk, futures, strict=True)):
                refl[j], lst[j], done = f.result()
                for s, (its, entry, raw) in zip(by_date[d], done, strict=True):
                    out.items[s.id], out.entries[s.id], out.masks[s.id] = its, entry, raw
                    bar.update(1)
            yield chunk, refl, {d: {s.sensor for s in by_date[d]} for d in chunk}, lst


def _simulate(root: Path, cfg: WorldConfig, *, progress: bool, workers: int) -> _Simulated:
    """Draw the landscape, write every scene's COGs, then ``truth.zarr`` and ``masks.zarr``."""
    from tqdm.auto import tqdm

    builder = _Builder(root, cfg)
    geo = builder.geo
    land = landscape_of(cfg, geo.domain.shape)
    water = (land.landcover == 4).astype(np.float32)
    scenes = _scenes(cfg, geo.aoi)
    by_date: dict[dt.date, list[Scene]] = {}
    for s in scenes:
        by_date.setdefault(s.datetime.date(), []).append(s)
    out = _Simulated(scenes=scenes, dates=sorted(by_date))
    bar = tqdm(total=len(scenes), desc="simulating scenes", unit="scene", disable=not progress)
    _write_truth(
        root / "truth.zarr", cfg, geo, land, _scene_batches(builder, land, water, by_date, out, bar, workers)
    )
    bar.close()
    _write_masks(root / "masks.zarr", out.masks)
    return out


def _write_manifest(root: Path, sim: _Simulated) -> None:
    """``manifest.json``: the conventions and every scene's entry, in time order."""
    manifest = {
        "format": FORMAT,
        "shift_convention": SHIFT_CONVENTION,
        "cloud_cover": "eo:cloud_cover = percent of valid quality-asset pixels decoded as cloud or cirrus",
        "masks": "masks.zarr/<scene id>: uint8 bits "
        + json.dumps(MASK_BITS)
        + " on the quality asset's grid",
        "scenes": [sim.entries[s.id] for s in sim.scenes],
    }
    _write_json(root / "manifest.json", manifest)


def _write_catalogue(root: Path, cfg: WorldConfig, sim: _Simulated) -> None:
    """The collection documents, and every item as ``items.ndjson`` and ``items.parquet``."""
    import rustac

    ordered = [it for s in sim.scenes for it in sim.items[s.id]]
    (root / "collections").mkdir(exist_ok=True)
    _, bbox = stac_items.footprint(geometry(cfg).aoi, cfg.epsg)
    if cfg.two_zones and ordered:  # the tile in the other zone reaches past the AOI's box
        boxes = np.array([it["bbox"] for it in ordered])
        bbox = [*boxes[:, :2].min(axis=0).tolist(), *boxes[:, 2:].max(axis=0).tolist()]
    for cid, doc in stac_items.collections(bbox, cfg.start, cfg.end).items():
        _write_json(root / "collections" / f"{cid}.json", doc)
    with open(root / "items.ndjson", "w") as f:
        for it in ordered:
            f.write(json.dumps(it, separators=(",", ":")) + "\n")
    rustac.write_sync(str(root / "items.parquet"), ordered, format="geoparquet")


def _write_marker(root: Path, cfg: WorldConfig, sim: _Simulated) -> None:
    """``world.json``, written last: the config, the format and the counts mark the world complete."""
    scenes = sim.scenes
    counts = {
        "sentinel-2-l2a": sum(s.sensor == "sentinel-2" for s in scenes),
        "landsat-c2-l2": sum(s.sensor == "landsat" for s in scenes),
        "landsat-c2l1": sum(s.sensor == "landsat" for s in scenes),
        "dates": len(sim.dates),
    }
    doc = {"format": FORMAT, "config": json.loads(cfg.model_dump_json()), "counts": counts}
    _write_json(root / "world.json", doc)


def create_world(
    out_dir: str | Path,
    config: WorldConfig | None = None,
    *,
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 2,
) -> World:
    """Simulate an archive into ``out_dir`` and return it.

    The same config (seed included) always gives the same files, byte for byte, apart from the
    asset URLs of the items, which hold ``out_dir``.

    Parameters
    ----------
    out_dir
        Target directory. If it already holds a world of the same config, that world is
        returned unchanged (creation is idempotent).
    config
        What to simulate (default: :class:`WorldConfig` defaults, the demo world).
    progress
        Show a tqdm progress bar over acquisition dates.
    overwrite
        Replace whatever ``out_dir`` holds (a different world, or a half-written one).
    workers
        Dates simulated at once: worker processes for a large world (the demo's), threads for
        a small one; the files do not depend on it.

    Returns
    -------
    World
        The world in ``out_dir``, opened.

    Raises
    ------
    WorldError
        If ``out_dir`` holds a different or incomplete world, or other files, and ``overwrite``
        is false.
    """
    cfg = config or WorldConfig()
    root = Path(out_dir).expanduser().absolute()
    existing = _prepare_root(root, cfg, overwrite)
    if existing is not None:
        return existing
    sim = _simulate(root, cfg, progress=progress, workers=workers)
    _write_manifest(root, sim)
    _write_catalogue(root, cfg, sim)
    _write_marker(root, cfg, sim)
    log.info("world of %d scenes written to %s", len(sim.scenes), root)
    return open_world(root)


def _write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=1) + "\n")


def _read_world_json(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / "world.json").read_text())
    except (OSError, ValueError) as exc:
        raise WorldError(f"{root}/world.json is unreadable ({exc}); recreate the world.") from exc


def open_world(root: str | Path) -> World:
    """Open a world written by :func:`create_world`.

    Raises
    ------
    WorldError
        If ``root`` is not a complete world of this format.
    """
    root = Path(root).expanduser().absolute()
    if not (root / "world.json").exists():
        raise WorldError(
            f"{root} holds no world (no world.json); create one with harmonize.world.create_world."
        )
    doc = _read_world_json(root)
    if doc.get("format") != FORMAT:
        raise WorldError(f"{root} was written as {doc.get('format')!r}, not {FORMAT!r}; recreate it.")
    return World(root, WorldConfig(**doc["config"]))


class World:
    """A simulated archive on disk.

    Attributes
    ----------
    root
        The world directory.
    config
        The :class:`WorldConfig` it was made from.
    """

    def __init__(self, root: Path, config: WorldConfig) -> None:
        self.root = Path(root)
        self.config = config
        self._geo = geometry(config)

    def __repr__(self) -> str:
        c = self.config
        return f"World({str(self.root)!r}, size_km={c.size_km}, {c.start}..{c.end})"

    @property
    def items_path(self) -> Path:
        """The stac-geoparquet file of all items."""
        return self.root / "items.parquet"

    @property
    def ndjson_path(self) -> Path:
        """All items as newline-delimited JSON."""
        return self.root / "items.ndjson"

    @property
    def collection_paths(self) -> dict[str, Path]:
        """Collection id -> collection JSON document."""
        return {p.stem: p for p in sorted((self.root / "collections").glob("*.json"))}

    @property
    def truth_path(self) -> Path:
        """The truth Zarr store."""
        return self.root / "truth.zarr"

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The manifest: conventions and one entry per scene (see :data:`SHIFT_CONVENTION`)."""
        return json.loads((self.root / "manifest.json").read_text())

    @property
    def scenes(self) -> list[dict[str, Any]]:
        """Manifest entries of every scene, in time order."""
        return self.manifest["scenes"]

    def scene(self, scene_id: str) -> dict[str, Any]:
        """The manifest entry of a scene, by its L2 or L1 item id."""
        for s in self.scenes:
            if scene_id in (s["id"], s["l1_id"]):
                return s
        raise WorldError(f"No scene {scene_id!r} in {self.root}; see World.scenes for the ids.")

    def items(self) -> list[dict[str, Any]]:
        """All STAC items as dicts (read from the ndjson file)."""
        with open(self.ndjson_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    @cached_property
    def truth(self) -> xr.Dataset:
        """The truth, lazily: bands ``(time, y, x)`` float32, ``landcover``, ``field_id``, field table."""
        import odc.geo.xr  # noqa: F401 - so that truth.odc.geobox works

        ds = xr.open_zarr(self.truth_path, chunks={}, consolidated=False, decode_coords="all")
        # CF decoding of the uint16 store gives float64 (JSON attrs lose float32); reflectance is float32.
        thermal_vars = [v for v in ("lst",) if v in ds]  # worlds before issue 16 have no LST
        return ds.assign({b: ds[b].astype(np.float32) for b in (*REFLECTANCE_BANDS, *thermal_vars)})

    def truth_as_seen_by(self, platform: str) -> xr.Dataset:
        """The truth through ``platform``'s spectral response (e.g. ``"landsat-8"``), lazily."""
        t = self.truth
        stacked = (
            xr.concat([t[b] for b in REFLECTANCE_BANDS], dim="band").transpose("band", ...).chunk(band=-1)
        )
        out = xr.apply_ufunc(
            lambda a: spectral(a, platform),
            stacked,
            dask="parallelized",  # type: ignore[arg-type]
            output_dtypes=[np.float32],
        )
        return xr.Dataset(
            {b: out.isel(band=i, drop=True) for i, b in enumerate(REFLECTANCE_BANDS)}
        ).rio.write_crs(f"EPSG:{self.config.epsg}")

    @property
    def crs(self) -> str:
        """``"EPSG:<code>"`` of every raster."""
        return f"EPSG:{self.config.epsg}"

    @property
    def bbox_utm(self) -> tuple[float, float, float, float]:
        """AOI ``(left, bottom, right, top)`` in the world's UTM CRS."""
        return self._geo.aoi.bounds

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """AOI ``(west, south, east, north)`` in longitude/latitude."""
        _, bbox = stac_items.footprint(self._geo.aoi, self.config.epsg)
        return tuple(bbox)  # type: ignore[return-value]

    @property
    def geobox(self):  # noqa: ANN201 - odc.geo.geobox.GeoBox
        """The 10 m AOI grid as an odc-geo ``GeoBox``."""
        from odc.geo.geobox import GeoBox

        g = self._geo.aoi
        return GeoBox((g.ny, g.nx), g.transform, self.crs)

    @property
    def grids(self) -> Geometry:
        """Every grid of the world (AOI, simulation domain, Sentinel-2 10/20 m, Landsat 30/15 m)."""
        return self._geo

    def injected_masks(self, scene_id: str) -> xr.Dataset:
        """The masks injected into a scene, on its quality asset's grid, with CRS.

        Exactly what decoding the scene's QA_PIXEL (:func:`harmonize.qa.landsat_masks`) or SCL
        (:func:`harmonize.qa.scl_masks`) gives: boolean ``nodata, cloud, shadow, cirrus, snow,
        water, clear``; plus ``cloud_high`` (high-probability cloud / the QA cloud bit).
        """
        import zarr

        entry = self.scene(scene_id)
        raw = zarr.open_group(self.root / "masks.zarr", mode="r")[entry["id"]][...]
        masks = product_masks(raw, entry["sensor"])
        masks["cloud_high"] = ((raw & MASK_BITS["cloud_high"]) != 0) & ~masks["nodata"]
        t = entry["mask_grid"]["transform"]
        ny, nx = entry["mask_grid"]["shape"]
        grid = Grid(t[2], t[5], t[0], ny, nx)
        ds = xr.Dataset(
            {k: (("y", "x"), v) for k, v in masks.items()}, coords={"y": grid.ys(), "x": grid.xs()}
        )
        ds.attrs = {"scene_id": entry["id"], "sensor": entry["sensor"]}
        crs = f"EPSG:{entry['epsg']}" if "epsg" in entry else self.crs
        return ds.rio.write_crs(crs).rio.write_transform(grid.transform)
