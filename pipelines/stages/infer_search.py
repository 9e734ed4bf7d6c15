"""Job: search Landsat scenes, super-resolve them with a model package, write Zarr + COGs + STAC.

Usage::

    python -m pipelines.infer MODEL --source URL_OR_FILE --bbox W S E N --datetime 2024-05/2024-08 \
        --out DIR [--device cuda] [--uncertainty mc_dropout] [--format zarr --format cog]
    python -m pipelines.infer --config pipelines/configs/infer.yaml

What it writes under ``out``::

    harmonized.zarr/           every Landsat date on the 10 m grid (Zarr v3, CRS kept)
    cogs/<item id>_hz.tif      one multi-band COG per date
    items/<item id>_hz.json    one STAC item per COG, ``derived_from`` its source items

A rerun is idempotent: the Zarr store is replaced atomically, COGs already written are kept
(delete them to recompute), items are rewritten.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pystac
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

__all__ = ["InferConfig", "infer_job", "write_zarr_in_stripes", "run_config"]


class InferConfig(BaseModel):
    """Every option of the inference job (one CLI flag each; loadable from YAML).

    Attributes
    ----------
    model
        Model package path, or several (an ensemble).
    source
        STAC API URL or local item file/directory (see :func:`harmonize.catalog.search`).
    bbox
        ``(west, south, east, north)`` in degrees.
    datetime
        Date or range (``"2024-05/2024-08"``).
    out
        Output directory.
    provider
        Provider profile name (default: recognised from ``source``).
    max_cloud
        Scene cloud cover limit in percent.
    chunks
        Spatial chunk of the inference (pixels); default the cube's chunks.
    device
        ``"cuda"``, ``"cpu"`` (default: CUDA when available).
    precision
        ``"tf32"``, or ``"bf16"``/``"fp16"`` autocast on the device (default strict float32).
    batch_size, tile
        Tiles per forward pass; inner tile size.
    uncertainty, mc_passes
        ``"mc_dropout"`` (with ``mc_passes``) or ``"ensemble"``; adds ``<band>_std`` outputs.
    formats
        Any of ``"zarr"`` and ``"cog"``; STAC items accompany the COGs.
    progress
        Show dask's progress bar.
    """

    model_config = ConfigDict(extra="forbid")

    model: str | list[str]
    source: str
    bbox: tuple[float, float, float, float]
    datetime: str | None = None
    out: Path
    provider: str | None = None
    max_cloud: float | None = Field(None, ge=0, le=100)
    chunks: int | None = Field(None, gt=0)
    device: str | None = None
    precision: Literal["tf32", "bf16", "fp16"] | None = None
    batch_size: int = Field(8, gt=0)
    tile: int | None = Field(None, gt=0)
    uncertainty: Literal["mc_dropout", "ensemble"] | None = None
    mc_passes: int = Field(8, ge=2)
    formats: tuple[Literal["zarr", "cog"], ...] = ("zarr", "cog")
    progress: bool = False


def _sources_per_date(ds: Any, items: Sequence[pystac.Item]) -> dict[str, list[pystac.Item]]:
    """For each date's ``item_id`` value: its Level-2 items and the Level-1 (pan) scenes of the
    same platform within 12 hours."""
    by_id = {it.id: it for it in items}
    out: dict[str, list[pystac.Item]] = {}
    for key, t, plat in zip(
        ds["item_id"].values,
        ds["time"].values,
        ds["platform"].values if "platform" in ds.coords else [None] * ds.sizes["time"],
        strict=True,
    ):
        srcs = [by_id[i] for i in str(key).split(",") if i in by_id]
        when = pd.Timestamp(t).tz_localize("UTC") if pd.Timestamp(t).tzinfo is None else pd.Timestamp(t)
        for it in items:
            if it in srcs or "l1" not in (it.collection_id or "").lower() or it.datetime is None:
                continue
            same_platform = plat is None or str(it.properties.get("platform", "")).lower().replace(
                "_", "-"
            ) == str(plat)
            if same_platform and abs(pd.Timestamp(it.datetime) - when) < pd.Timedelta(hours=12):
                srcs.append(it)
        out[str(key)] = srcs or [str(i) for i in str(key).split(",")]
    return out


def write_zarr_in_stripes(ds: Any, path: str | Path, *, stripes: bool = True) -> Path:
    """Write a lazy dataset to a new Zarr store one row of chunks at a time, then move it into
    place (replacing an existing store): memory stays bounded by a stripe, readers never see a
    half-written store. ``stripes=False`` writes it in one graph."""
    import shutil
    import uuid

    from harmonize.infer import stripes as _stripes
    from harmonize.io import write_zarr

    final = Path(path)
    if not stripes:
        return Path(write_zarr(ds, final, mode="w"))
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write_zarr(ds, tmp, mode="w-", compute=False)  # metadata and coordinates only
        for region in _stripes(ds):
            write_zarr(ds.isel(region), tmp, region=region)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def infer_job(
    model: str | Path | Sequence[str | Path],
    source: str | Path,
    bbox: Sequence[float],
    datetime: str | None,
    out: str | Path,
    *,
    provider: str | None = None,
    max_cloud: float | None = None,
    chunks: int | None = None,
    device: str | None = None,
    precision: Literal["tf32", "bf16", "fp16"] | None = None,
    batch_size: int = 8,
    tile: int | None = None,
    uncertainty: Literal["mc_dropout", "ensemble"] | None = None,
    mc_passes: int = 8,
    formats: Sequence[str] = ("zarr", "cog"),
    progress: bool = False,
) -> dict[str, Any]:
    """Search, load, super-resolve and write harmonized Landsat scenes.

    Parameters
    ----------
    model
        Model package path (or several: an ensemble).
    source, bbox, datetime, provider, max_cloud
        The search (:func:`harmonize.catalog.search`, Landsat Level-2 plus Level-1 for pan).
    out
        Output directory (see the module docstring for its layout).
    chunks, device, precision, batch_size, tile, uncertainty, mc_passes
        Passed to :func:`harmonize.infer.super_resolve`.
    formats
        ``"zarr"`` and/or ``"cog"``.
    progress
        Show dask's progress bar while writing.

    Returns
    -------
    dict
        ``items_found``, ``dates``, ``zarr`` (path or None), ``cogs`` and ``stac_items`` (paths).

    Raises
    ------
    EmptySearchError
        When the search finds no Landsat scene.
    UnknownBandError
        When the scenes lack the pan band (no Level-1 items).
    """
    import contextlib

    from dask.diagnostics import ProgressBar

    from harmonize.catalog import search
    from harmonize.cube import load_cube
    from harmonize.infer import super_resolve
    from harmonize.io import write_cogs, write_stac_items

    unknown = set(formats) - {"zarr", "cog"}
    if unknown:
        from harmonize.errors import HarmonizeError

        raise HarmonizeError(f"unknown output formats {sorted(unknown)}; use 'zarr' and/or 'cog'")
    out = Path(out)
    items = list(
        search(
            source,
            provider=provider,
            sensors=("landsat",),
            bbox=bbox,
            datetime=datetime,
            max_cloud=max_cloud,
            include_pan=True,
            require=True,
        )
    )
    log.info("found %d Landsat items", len(items))
    cube = load_cube(items, bbox=bbox, provider=provider)
    models = [str(m) for m in model] if isinstance(model, (list, tuple)) else str(model)
    result = super_resolve(
        cube,
        models,
        chunks=chunks,
        device=device,
        precision=precision,
        batch_size=batch_size,
        tile=tile,
        uncertainty=uncertainty,
        mc_passes=mc_passes,
    )
    report: dict[str, Any] = {
        "items_found": len(items),
        "dates": int(result.sizes["time"]),
        "zarr": None,
        "cogs": [],
        "stac_items": [],
    }
    bar = ProgressBar() if progress else contextlib.nullcontext()
    with bar:
        if "zarr" in formats:
            report["zarr"] = str(write_zarr_in_stripes(result, out / "harmonized.zarr"))
        if "cog" in formats:
            src = xr_open(report["zarr"]) if report["zarr"] else result  # reuse what was written
            cogs = write_cogs(src, out / "cogs", overwrite=False)
            from importlib.metadata import version

            stac = write_stac_items(
                cogs,
                src,
                out / "items",
                derived_from=_sources_per_date(src, items),
                software={"harmonize": version("harmonize")},
            )
            report["cogs"] = [str(p) for p in cogs]
            report["stac_items"] = [it.get_self_href() for it in stac]
    return report


def xr_open(path: str) -> Any:
    """Open a store written by the job (lazily) to write COGs from it without recomputing."""
    import xarray as xr

    return xr.open_zarr(path)


def run_config(config: InferConfig) -> dict[str, Any]:
    """Run :func:`infer_job` from a config object."""
    c = config
    return infer_job(
        c.model,
        c.source,
        c.bbox,
        c.datetime,
        c.out,
        provider=c.provider,
        max_cloud=c.max_cloud,
        chunks=c.chunks,
        device=c.device,
        precision=c.precision,
        batch_size=c.batch_size,
        tile=c.tile,
        uncertainty=c.uncertainty,
        mc_passes=c.mc_passes,
        formats=c.formats,
        progress=c.progress,
    )
