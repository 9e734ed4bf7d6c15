"""Writers for harmonized outputs: Zarr v3 cubes, Cloud-Optimized GeoTIFFs and STAC items.

Outputs are meant to be searched like the inputs they came from: every writer keeps the CRS
(``spatial_ref`` coordinate, rioxarray convention) and :func:`stac_item_for_output` describes
the files with the projection, raster and processing extensions plus ``derived_from`` links to
the source items.

Writes are safe to repeat: :func:`write_zarr` builds a new store under a temporary name and
renames it into place (or writes one region of an existing store), :func:`write_cogs` writes
each file under a temporary name and renames it, so a job killed midway never leaves a
half-written output under a final name. :func:`write_zarr_in_stripes` and
:func:`write_zarr_batch` write large lazy scenes a row of chunks at a time, so memory stays
bounded by a stripe.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pystac
import xarray as xr

from harmonize.bands import BANDS
from harmonize.errors import CRSMismatchError, HarmonizeError, StoreWriteError

__all__ = [
    "write_zarr",
    "write_zarr_batch",
    "write_zarr_in_stripes",
    "write_cogs",
    "stac_item_for_output",
    "write_stac_items",
    "PROCESSING_EXTENSION",
    "COG_MEDIA_TYPE",
    "ZARR_MEDIA_TYPE",
]

log = logging.getLogger(__name__)

PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
COG_MEDIA_TYPE = str(pystac.MediaType.COG)
ZARR_MEDIA_TYPE = "application/vnd+zarr"

ZarrMode = Literal["w-", "w", "a", "r+"]


# --------------------------------------------------------------------------------------------
# Zarr
# --------------------------------------------------------------------------------------------
def _require_crs(ds: xr.Dataset) -> None:
    if ds.rio.crs is None:
        raise CRSMismatchError(
            "the dataset carries no CRS; write one first with ds.rio.write_crs(...) "
            "(cubes from harmonize.cube.load_cube and super_resolve already carry it)"
        )


def _is_local(path: str | os.PathLike[str]) -> bool:
    s = os.fspath(path)
    return "://" not in s or s.startswith("file://")


def _local_path(path: str | os.PathLike[str]) -> Path:
    s = os.fspath(path)
    from harmonize.items import local_href

    return Path(local_href(s))


def prepare_for_zarr(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` ready for a Zarr write: its dask chunks as the stored chunks, the CRS kept as a
    coordinate, no stale encodings from the source (what :func:`write_zarr` writes)."""
    ds = ds.copy()
    if "spatial_ref" in ds.coords:
        # xarray leaves a grid-mapping variable out of every ``coordinates`` attribute; naming
        # it globally makes ``xr.open_zarr(...)`` read it back as a coordinate so ``.rio.crs``
        # works without ``decode_coords="all"``.
        ds.attrs["coordinates"] = "spatial_ref"
    for name, var in ds.variables.items():
        keep = {k: v for k, v in var.encoding.items() if k in ("dtype", "_FillValue", "units", "calendar")}
        if var.chunks is not None:
            keep["chunks"] = tuple(c[0] for c in var.chunks)
        if var.dtype.kind == "U":
            # zarr v3 has no spec for fixed-width unicode; the variable-length string is stable
            ds[name] = var.astype(object) if name in ds.data_vars else var
            if name in ds.coords:
                ds = ds.assign_coords({name: var.astype(object)})
        ds[name].encoding = keep
    return ds


def write_zarr(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    mode: ZarrMode = "w-",
    region: Mapping[str, slice] | Literal["auto"] | None = None,
    compute: bool = True,
) -> Path | str:
    """Write a dataset to a Zarr v3 store, keeping its CRS and chunking.

    Parameters
    ----------
    ds
        Dataset with a CRS (``ds.rio.crs``); dask-backed variables are written chunk by chunk
        and their chunks become the store's chunks.
    path
        Local directory or fsspec URL of the store.
    mode
        ``"w-"`` create, failing if the store exists; ``"w"`` replace an existing store;
        ``"a"`` append along ``time`` (or add variables) to an existing store; ``"r+"`` write
        ``region`` of an existing store. For ``"w-"`` and ``"w"`` on local paths the store is
        written under a temporary name beside ``path`` and renamed into place only once
        complete, so readers never see a half-written store.
    region
        With ``mode="r+"`` (the default when ``region`` is given): the slice of every dimension
        to write, or ``"auto"`` to infer it from the coordinates. Writes of disjoint regions are
        independent, which makes a tiled job idempotent and resumable.
    compute
        Write now (default). With ``False`` only the metadata is written and the dask delayed
        object that writes the data is returned in its place (no atomic rename then).

    Returns
    -------
    pathlib.Path or str
        The path of the store written.

    Raises
    ------
    CRSMismatchError
        When ``ds`` has no CRS.
    HarmonizeError
        When ``mode="w-"`` and the store exists, or ``mode`` is unknown.
    """
    _require_crs(ds)
    with warnings.catch_warnings():
        # consolidated metadata is not in the v3 spec yet; xarray and zarr-python read it fine
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        return _write_zarr(ds, path, mode=mode, region=region, compute=compute)


def _write_zarr(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    mode: ZarrMode,
    region: Mapping[str, slice] | Literal["auto"] | None,
    compute: bool,
) -> Any:
    if mode not in ("w-", "w", "a", "r+"):
        raise HarmonizeError(f"unknown Zarr write mode {mode!r}; use 'w-', 'w', 'a' or 'r+'")
    out = prepare_for_zarr(ds)
    if region is not None:
        if mode not in ("r+", "a"):
            mode = "r+"
        # variables without a dimension of the region (the CRS scalar) are already in the store
        drop = [n for n, v in out.variables.items() if region != "auto" and not set(v.dims) & set(region)]
        out = out.drop_vars(drop)
        out.attrs = {}
        result = out.to_zarr(
            path, mode=mode, region=region, zarr_format=3, consolidated=False, compute=compute
        )
        _consolidate(path)
        return result if not compute else _ret(path)
    if mode == "a":
        exists = _local_path(path).exists() if _is_local(path) else _remote_exists(path)
        kwargs: dict[str, Any] = {"append_dim": "time"} if exists and "time" in out.dims else {}
        out.to_zarr(path, mode="a" if exists else "w-", zarr_format=3, consolidated=True, **kwargs)
        return _ret(path)
    if mode == "r+":
        raise HarmonizeError("mode='r+' needs a region; pass region=... or 'auto'")
    if not _is_local(path) or not compute:
        result = out.to_zarr(path, mode=mode, zarr_format=3, consolidated=True, compute=compute)
        return result if not compute else _ret(path)

    final = _local_path(path)
    if final.exists() and mode == "w-":
        raise HarmonizeError(f"{final} exists; pass mode='w' to replace it or choose another path")
    _write_atomically(final, lambda tmp: out.to_zarr(tmp, mode="w-", zarr_format=3, consolidated=True))
    log.info("wrote Zarr store %s (%s)", final, ", ".join(map(str, ds.data_vars)))
    return final


def _write_atomically(final: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` to a temporary store beside ``final``, then move it into place, replacing an
    older ``final``: readers see the old store or the new one, never a half-written one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        try:
            write(tmp)
        except OSError as exc:
            raise _write_failed(exc, [final], remove=[tmp]) from exc
        if final.exists():
            trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            final.rename(trash)
            tmp.rename(final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_zarr_batch(
    datasets: Sequence[xr.Dataset], paths: Sequence[str | os.PathLike[str]], *, stripes: bool = True
) -> list[Path | str]:
    """Write lazy datasets to new Zarr stores together, one row of chunks of each per compute.

    Computing every dataset of a batch in one graph lets dask's threads work on several of them
    side by side; computing them a stripe at a time (:func:`harmonize.infer.stripes`: one row
    of chunks, the full width and time) bounds memory by a stripe of each instead of whole
    scenes. A dataset one chunk high is one stripe, so a batch of small scenes is written in
    one compute either way.

    Parameters
    ----------
    datasets
        Datasets with a CRS, usually dask-backed (a super-resolved date, say).
    paths
        One new store per dataset (``mode="w-"``: none may exist). The stores are written in
        place, not renamed: pass temporary paths and move them into place once this returns
        (as :func:`write_zarr_in_stripes` and a ledger's commit do).
    stripes
        ``False`` computes the whole batch in one graph.

    Returns
    -------
    list
        The stores' paths.

    Raises
    ------
    HarmonizeError
        When the numbers of datasets and paths differ, or a store exists.
    StoreWriteError
        When the disk is full (or another OS error stops a write): the partial stores are
        removed, nothing is committed.
    """
    from harmonize.infer import stripes as row_stripes

    if len(datasets) != len(paths):
        raise HarmonizeError(f"{len(datasets)} datasets for {len(paths)} paths; pass one path per dataset")
    for p in paths:
        if _is_local(p) and _local_path(p).exists():
            raise HarmonizeError(f"{p} exists; write_zarr_batch writes new stores only")
    try:
        _compute_batch(datasets, paths, row_stripes if stripes else None)
    except OSError as exc:  # disk full, quota, file too large, read-only
        raise _write_failed(exc, paths) from exc
    return [_ret(p) for p in paths]


def _compute_batch(
    datasets: Sequence[xr.Dataset], paths: Sequence[str | os.PathLike[str]], row_stripes: Any
) -> None:
    """Write each dataset's metadata, then compute the batch a row of chunks of each at a time."""
    import dask

    rows: list[list[Any]] = [[]]  # the delayed writes of each compute
    for ds, p in zip(datasets, paths, strict=True):
        regions = row_stripes(ds) if row_stripes is not None else []
        if len(regions) <= 1:  # one graph: the whole dataset is one stripe (or stripes are off)
            rows[0].append(write_zarr(ds, p, mode="w-", compute=False))
            continue
        write_zarr(ds, p, mode="w-", compute=False)  # metadata and coordinates only
        rows += [[] for _ in range(len(regions) - len(rows))]
        for row, region in zip(rows, regions, strict=False):
            row.append(write_zarr(ds.isel(region), p, region=region, compute=False))
    for row in rows:
        if row:
            dask.compute(*row)


def _write_failed(
    exc: OSError,
    paths: Sequence[str | os.PathLike[str]],
    remove: Sequence[str | os.PathLike[str]] | None = None,
) -> StoreWriteError:
    """The StoreWriteError of a failed write of ``paths``; the partial local stores (``remove``,
    default ``paths``) are deleted."""
    for p in paths if remove is None else remove:
        if _is_local(p):
            shutil.rmtree(_local_path(p), ignore_errors=True)
    names = ", ".join(str(p) for p in paths[:3]) + (f" (+{len(paths) - 3} more)" if len(paths) > 3 else "")
    return StoreWriteError(
        f"writing {names} failed: {exc.strerror or exc} (errno {exc.errno}). Nothing of it was "
        "committed: the partial stores were removed and stores committed before are intact. "
        "Free space (or fix the permissions) and run again; a job resumes where it stopped."
    )


def write_zarr_in_stripes(ds: xr.Dataset, path: str | os.PathLike[str], *, stripes: bool = True) -> Path:
    """Write a lazy dataset to a local Zarr store one row of chunks at a time, then move it into
    place, replacing an existing store.

    Memory stays bounded by a stripe (see :func:`write_zarr_batch`), and readers never see a
    half-written store.

    Parameters
    ----------
    ds
        A dataset with a CRS, usually dask-backed (a super-resolved scene, say).
    path
        The store's local path.
    stripes
        ``False`` writes it in one graph.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    final = _local_path(path)
    if not stripes:
        return Path(write_zarr(ds, final, mode="w"))
    _write_atomically(final, lambda tmp: write_zarr_batch([ds], [tmp]))
    return final


def _remote_exists(url: str | os.PathLike[str]) -> bool:
    """Whether an fsspec URL (``s3://bucket/store.zarr``) already holds something."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(os.fspath(url))
    return bool(fs.exists(root))


def _ret(path: str | os.PathLike[str]) -> Path | str:
    return _local_path(path) if _is_local(path) else os.fspath(path)


def _consolidate(path: str | os.PathLike[str]) -> None:
    import zarr

    try:
        zarr.consolidate_metadata(os.fspath(path))
    except Exception:  # pragma: no cover - consolidation is an optimisation only
        log.debug("could not consolidate %s", path, exc_info=True)


# --------------------------------------------------------------------------------------------
# COG
# --------------------------------------------------------------------------------------------
def _default_bands(ds: xr.Dataset) -> list[str]:
    """Float (y, x) variables: canonical bands in canonical order, then their ``_std``, then the
    rest in dataset order (a store read back lists its variables alphabetically)."""
    names = [str(n) for n, v in ds.data_vars.items() if {"y", "x"} <= set(v.dims) and v.dtype.kind == "f"]
    canonical = list(BANDS)
    order = {b: i for i, b in enumerate(canonical + [f"{b}_std" for b in canonical])}
    return sorted(names, key=lambda n: (order.get(n, len(order)), names.index(n)))


def _time_label(ds: xr.Dataset, i: int) -> str:
    """A file-name-safe label for date ``i``: its item id(s), else its timestamp."""
    if "item_id" in ds.coords and "time" in ds["item_id"].dims:
        ids = str(ds["item_id"].values[i]).split(",")  # load_cube joins same-day scenes with ","
        label = ids[0] + (f"+{len(ids) - 1}" if len(ids) > 1 else "")
        return re.sub(r"[^A-Za-z0-9._+-]", "_", label)
    t = pd.Timestamp(ds["time"].values[i])
    return t.strftime("%Y%m%dT%H%M%S")


def write_cogs(
    ds: xr.Dataset,
    out_dir: str | os.PathLike[str],
    *,
    bands: Sequence[str] | None = None,
    suffix: str = "_hz",
    blocksize: int = 512,
    overwrite: bool = True,
) -> list[Path]:
    """Write one multi-band Cloud-Optimized GeoTIFF per date.

    Parameters
    ----------
    ds
        Dataset on ``(time, y, x)`` (or ``(y, x)``) with a CRS.
    out_dir
        Directory for the files, created if missing. Each file is named after the date's
        ``item_id`` coordinate when present (``<item_id><suffix>.tif``), else its timestamp.
        An fsspec URL (``s3://bucket/prefix``) works too: each COG is written to a local
        temporary file and uploaded, and the URLs (``str``) are returned.
    bands
        Variables to write, in band order; default every floating-point variable on ``(y, x)``,
        canonical bands first (``blue … swir22``), then their ``<band>_std``.
        Band descriptions carry the variable names; nodata is NaN.
    suffix
        Appended to the file stem.
    blocksize
        Internal tile size of the COG.
    overwrite
        Replace existing files (default); with ``False`` an existing file is kept and skipped,
        which makes a rerun of an interrupted job cheap.

    Returns
    -------
    list of pathlib.Path
        The files, one per date, in time order (``str`` URLs for a remote ``out_dir``).

    Raises
    ------
    CRSMismatchError
        When ``ds`` has no CRS.
    UnknownBandError
        When a requested band is not in ``ds``.
    """
    from harmonize.errors import UnknownBandError

    _require_crs(ds)
    if not _is_local(out_dir):
        return _write_cogs_remote(  # type: ignore[return-value]
            ds, os.fspath(out_dir), bands=bands, suffix=suffix, blocksize=blocksize, overwrite=overwrite
        )
    names = list(bands) if bands is not None else _default_bands(ds)
    missing = [b for b in names if b not in ds.data_vars]
    if missing:
        raise UnknownBandError(f"bands {missing} are not in the dataset; it has {list(ds.data_vars)}")
    if not names:
        raise HarmonizeError("no floating-point (y, x) variables to write; pass bands=[...]")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timed = "time" in ds.dims
    n = ds.sizes["time"] if timed else 1
    crs = ds.rio.crs
    paths: list[Path] = []
    for i in range(n):
        one = ds.isel(time=i) if timed else ds
        stem = _time_label(ds, i) if timed else "harmonized"
        target = out / f"{stem}{suffix}.tif"
        paths.append(target)
        if target.exists() and not overwrite:
            log.info("keeping existing %s", target)
            continue
        arr = (
            xr.concat(
                [one[b].astype("float32") for b in names], dim="band", coords="minimal", compat="override"
            )
            .assign_coords(band=np.arange(1, len(names) + 1))
            .transpose("band", "y", "x")
        )
        arr = arr.drop_vars([c for c in arr.coords if c not in ("band", "y", "x", "spatial_ref")])
        arr.attrs = {"long_name": tuple(names)}  # band descriptions
        arr = arr.rio.write_crs(crs).rio.write_nodata(np.nan)
        tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            arr.compute().rio.to_raster(
                tmp,
                driver="COG",
                compress="DEFLATE",
                predictor="FLOATING_POINT",
                blocksize=blocksize,
                overviews="AUTO",
                resampling="average",
            )
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("wrote COG %s", target)
    return paths


def _write_cogs_remote(
    ds: xr.Dataset, url: str, *, bands: Sequence[str] | None, suffix: str, blocksize: int, overwrite: bool
) -> list[str]:
    """:func:`write_cogs` to an fsspec URL: each COG is written locally, then uploaded.

    GDAL's COG driver needs a seekable file; an object-store PUT is atomic, so readers see the
    old object or the new one, never half a file.
    """
    import tempfile

    import fsspec

    fs, _ = fsspec.core.url_to_fs(url)
    base = url.rstrip("/")
    n = ds.sizes["time"] if "time" in ds.dims else 1
    stems = [_time_label(ds, i) if "time" in ds.dims else "harmonized" for i in range(n)]
    targets = [f"{base}/{stem}{suffix}.tif" for stem in stems]
    todo = [i for i, t in enumerate(targets) if overwrite or not fs.exists(t)]
    if todo:
        part = ds.isel(time=todo) if "time" in ds.dims else ds
        with tempfile.TemporaryDirectory(prefix="hz-cogs-") as tmp:
            local = write_cogs(part, tmp, bands=bands, suffix=suffix, blocksize=blocksize, overwrite=True)
            for i, path in zip(todo, local, strict=True):
                fs.put_file(str(path), targets[i])
                log.info("wrote COG %s", targets[i])
    return targets


# --------------------------------------------------------------------------------------------
# STAC
# --------------------------------------------------------------------------------------------
def _bbox_wgs84(ds: xr.Dataset) -> tuple[list[float], dict[str, Any]]:
    from pyproj import Transformer
    from shapely.geometry import Polygon, mapping

    left, bottom, right, top = ds.rio.bounds()
    tr = Transformer.from_crs(ds.rio.crs, "EPSG:4326", always_xy=True)
    n = 21  # densify the edges so a reprojected footprint stays faithful
    xs = np.concatenate(
        [np.linspace(left, right, n), np.full(n, right), np.linspace(right, left, n), np.full(n, left)]
    )
    ys = np.concatenate(
        [np.full(n, bottom), np.linspace(bottom, top, n), np.full(n, top), np.linspace(top, bottom, n)]
    )
    lon, lat = tr.transform(xs, ys)
    poly = Polygon(zip(lon, lat, strict=True)).simplify(0)
    # GeoJSON wants lists, shapely's mapping gives tuples
    return [float(v) for v in poly.bounds], json.loads(json.dumps(mapping(poly)))


def _derived_links(derived_from: Iterable[str | pystac.Item]) -> list[pystac.Link]:
    links = []
    for src in derived_from:
        if isinstance(src, pystac.Item):
            href = src.get_self_href() or f"{src.id}.json"
            title = src.id
        else:
            href, title = str(src), str(src).rstrip("/").rsplit("/", 1)[-1]
        links.append(pystac.Link("derived_from", href, media_type=pystac.MediaType.GEOJSON, title=title))
    return links


def _raster_bands(ds: xr.Dataset, names: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for name in names:
        var = ds[name]
        entry: dict[str, Any] = {"name": name, "data_type": str(np.dtype(var.dtype)), "nodata": "nan"}
        base = name.removesuffix("_std")
        if base in BANDS:
            entry["unit"] = "1"  # reflectance, dimensionless
            if BANDS[base].sentinel2_wavelength:
                entry["description"] = (
                    f"{'standard deviation of ' if name.endswith('_std') else ''}"
                    f"Sentinel-2-like {base} reflectance (MSI {BANDS[base].sentinel2})"
                )
        out.append(entry)
    return out


def stac_item_for_output(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    ds: xr.Dataset,
    *,
    derived_from: Iterable[str | pystac.Item] = (),
    software: Mapping[str, str] | None = None,
    item_id: str | None = None,
    bands: Sequence[str] | None = None,
    collection: str | None = None,
    properties: Mapping[str, Any] | None = None,
) -> pystac.Item:
    """Describe output files as a STAC item, searchable like the inputs.

    Parameters
    ----------
    paths
        One file or store (COG or Zarr) or several (one asset each) holding ``ds``.
    ds
        The dataset written (its CRS, grid, time and variables describe the item).
    derived_from
        Source items (``pystac.Item``) or their hrefs; each becomes a ``derived_from`` link.
    software
        ``processing:software`` mapping, e.g. ``{"harmonize": "0.1.0"}``; defaults to the
        installed harmonize version.
    item_id
        Item id; default the first file's stem.
    bands
        Variables the assets hold (``raster:bands``); default every float variable on (y, x).
    collection
        Collection id to set on the item.
    properties
        Extra properties.

    Returns
    -------
    pystac.Item
        With ``proj:*`` fields, ``processing:software``, assets carrying ``raster:bands`` and
        ``derived_from`` links; its datetime is the single time of ``ds`` or a
        ``start_datetime``/``end_datetime`` range.
    """
    from pystac.extensions.projection import ProjectionExtension

    _require_crs(ds)
    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not files:
        raise HarmonizeError("stac_item_for_output needs at least one output path")
    if software is None:
        from importlib.metadata import version

        software = {"harmonize": version("harmonize")}
    names = list(bands) if bands is not None else _default_bands(ds)
    bbox, geometry = _bbox_wgs84(ds)
    props: dict[str, Any] = {"processing:software": dict(software)}
    if "time" in ds.coords:
        times = pd.DatetimeIndex(np.atleast_1d(ds["time"].values))
        start, end = times.min().to_pydatetime(), times.max().to_pydatetime()
    else:
        start = end = _dt.datetime.now(_dt.timezone.utc)
    start, end = (t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc) for t in (start, end))
    dt_single = start if start == end else None
    if dt_single is None:
        props["start_datetime"] = pystac.utils.datetime_to_str(start)
        props["end_datetime"] = pystac.utils.datetime_to_str(end)
    props.update(properties or {})
    first = Path(os.fspath(files[0]))
    item = pystac.Item(
        id=item_id or first.name.removesuffix(".tif").removesuffix(".zarr"),
        geometry=geometry,
        bbox=bbox,
        datetime=dt_single,
        properties=props,
        collection=collection,
    )
    item.stac_extensions.append(PROCESSING_EXTENSION)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    crs = ds.rio.crs
    epsg = crs.to_epsg()
    if epsg is not None:
        proj.code = f"EPSG:{epsg}"
    else:
        proj.wkt2 = crs.to_wkt()
    proj.shape = [int(ds.sizes["y"]), int(ds.sizes["x"])]
    proj.transform = list(ds.rio.transform())[:6]
    proj.bbox = list(ds.rio.bounds())
    raster_bands = _raster_bands(ds, names)
    for f in files:
        p = Path(os.fspath(f))
        is_zarr = p.suffix == ".zarr" or p.is_dir()
        key = "data" if len(files) == 1 else p.stem
        href = os.fspath(f) if "://" in os.fspath(f) else p.resolve().as_uri()
        asset = pystac.Asset(
            href=href,
            media_type=ZARR_MEDIA_TYPE if is_zarr else COG_MEDIA_TYPE,
            roles=["data"],
            title="harmonized Sentinel-2-like reflectance",
            extra_fields={"raster:bands": raster_bands},
        )
        item.add_asset(key, asset)
    raster_ext = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
    if raster_ext not in item.stac_extensions:
        item.stac_extensions.append(raster_ext)
    for link in _derived_links(derived_from):
        item.add_link(link)
    return item


def _source_key(ds: xr.Dataset, i: int) -> str:
    if "time" not in ds.dims:
        return ""
    if "item_id" in ds.coords and "time" in ds["item_id"].dims:
        return str(ds["item_id"].values[i])
    return pd.Timestamp(ds["time"].values[i]).isoformat()


def write_stac_items(
    paths: Sequence[str | os.PathLike[str]],
    ds: xr.Dataset,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    derived_from: Mapping[str, Sequence[str | pystac.Item]] | Sequence[str | pystac.Item] | None = None,
    software: Mapping[str, str] | None = None,
    collection: str | None = None,
) -> list[pystac.Item]:
    """Write one STAC item JSON per output file written by :func:`write_cogs`.

    Parameters
    ----------
    paths
        One file per date of ``ds``, in time order (what :func:`write_cogs` returns); a single
        Zarr store gets one item covering the whole time range.
    ds
        The dataset the files hold.
    out_dir
        Where the ``<id>.json`` files go; default beside each file. Files or ``out_dir`` on an
        fsspec URL (``s3://…``) get their items written there, with ``s3://`` self hrefs.
    derived_from
        Per-file sources: a mapping from each date's ``item_id`` coordinate value (else its
        ISO timestamp) to its sources, or one list shared by all files. Default: the ids in
        each date's ``item_id``.
    software
        ``processing:software`` (see :func:`stac_item_for_output`).
    collection
        Collection id to set on every item.

    Returns
    -------
    list of pystac.Item
        The items written, with their self hrefs set.
    """
    files = list(paths)
    single_store = len(files) == 1 and ("time" not in ds.dims or ds.sizes["time"] != 1) and (
        Path(os.fspath(files[0])).suffix == ".zarr" or Path(os.fspath(files[0])).is_dir()
    )
    items: list[pystac.Item] = []
    if single_store:
        pieces: list[tuple[str | os.PathLike[str], xr.Dataset, str]] = [(files[0], ds, "")]
    else:
        n = ds.sizes.get("time", 1)
        if len(files) != n:
            raise HarmonizeError(f"{len(files)} files for {n} dates; pass one file per date in time order")
        pieces = [
            (f, ds.isel(time=i) if "time" in ds.dims else ds, _source_key(ds, i)) for i, f in enumerate(files)
        ]
    for f, one, label in pieces:
        if derived_from is None:
            ids = one["item_id"].values if "item_id" in one.coords else []
            sources: Sequence[str | pystac.Item] = [
                s for v in np.atleast_1d(ids) for s in str(v).split(",") if s
            ]
        elif isinstance(derived_from, Mapping):
            sources = list(derived_from.get(label, []))
        else:
            sources = list(derived_from)
        item = stac_item_for_output(f, one, derived_from=sources, software=software, collection=collection)
        remote_dir = os.fspath(out_dir) if out_dir is not None else os.fspath(f).rsplit("/", 1)[0]
        if not _is_local(remote_dir):
            items.append(_put_stac_item(item, remote_dir))
            continue
        p = Path(os.fspath(f))
        target_dir = Path(out_dir) if out_dir is not None else p.parent
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / f"{item.id}.json"
        item.set_self_href(str(target.resolve()))
        tmp = target.with_name(f".{target.name}.tmp")
        # written here, not by pystac's save_object: it reads a path as an href, so a '#' in
        # the folder name would cut it short and the item land outside out_dir (issue 17)
        doc = item.to_dict(include_self_link=True, transform_hrefs=False)
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(target)
        items.append(item)
    return items


def _put_stac_item(item: pystac.Item, url_dir: str) -> pystac.Item:
    """Write ``item`` as ``<url_dir>/<id>.json`` on an fsspec file system (one atomic PUT)."""
    import fsspec

    target = f"{url_dir.rstrip('/')}/{item.id}.json"
    item.set_self_href(target)
    fs, path = fsspec.core.url_to_fs(target)
    doc = item.to_dict(include_self_link=True, transform_hrefs=False)
    fs.pipe_file(path, json.dumps(doc, indent=2).encode())
    log.info("wrote STAC item %s", target)
    return item

