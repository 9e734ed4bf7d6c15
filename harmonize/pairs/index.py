"""The pair index: match Landsat/Sentinel-2 acquisitions, cut clear patch windows, split them.

The plan of which patches a model learns from, kept apart from the pixels and from torch (as
xbatcher keeps its selectors apart from its torch loader):

1. :func:`match_pairs` pairs each Landsat acquisition with the nearest Sentinel-2 acquisition
   within ``max_days`` solar days (0, the default, means the same solar day).
2. :func:`build_pair_index` cuts each pair into overlapping patch windows and keeps the windows
   that are clear enough in *both* scenes. Only the boolean ``clear`` masks are read, reduced to
   per-stride-block counts by dask in one ``compute``; the reflectance bands are never touched.
   Windows are split into train/val/test by spatial blocks (:func:`block_splits`), so no patch
   of one split overlaps a patch of another.

The index is a pandas table (one row per window); :class:`harmonize.pairs.PairDataset` serves it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import dask
import dask.array
import numpy as np
import pandas as pd
import xarray as xr
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, ConfigDict, Field, model_validator

from harmonize.bands import PAN, REFLECTANCE_BANDS
from harmonize.errors import HarmonizeError, NoOverlapError, UnknownBandError
from harmonize.pairs.sources import (
    acquisition_times,
    is_dataset_pair,
    position_map,
    solar_offset,
    split_sources,
)

__all__ = [
    "INPUT_BANDS",
    "TARGET_BANDS",
    "SPLITS",
    "Split",
    "PairConfig",
    "match_pairs",
    "block_splits",
    "build_pair_index",
]

log = logging.getLogger(__name__)

#: Model input: the six Landsat reflectance bands and pan, in this order.
INPUT_BANDS: tuple[str, ...] = (*REFLECTANCE_BANDS, PAN)
#: Model target: the six Sentinel-2 reflectance bands, in this order.
TARGET_BANDS: tuple[str, ...] = REFLECTANCE_BANDS
#: Split names, in the order blocks are dealt to them.
SPLITS: tuple[str, ...] = ("train", "val", "test")

Split = Literal["train", "val", "test"]
_INDEX_COLUMNS = (
    "pair_id",
    "landsat_time",
    "s2_time",
    "dt_days",
    "y0",
    "x0",
    "patch_size",
    "clear_landsat",
    "clear_s2",
    "split",
)


class PairConfig(BaseModel):
    """How Landsat/Sentinel-2 pairs are matched, cut into patches and split.

    Attributes
    ----------
    max_days
        Largest difference in solar days between the two acquisitions of a pair; 0 (the default,
        as in the published protocol) pairs only same-day acquisitions.
    nearest_only
        Keep only the nearest Sentinel-2 acquisition for each Landsat one (the default); if
        false, every Sentinel-2 acquisition within ``max_days`` makes a pair.
    min_clear
        Smallest clear fraction of a patch, required of BOTH scenes.
    patch_size, stride
        Window size and step in 10 m pixels; ``patch_size`` must be a multiple of ``stride``.
    block_size
        Side of the square spatial blocks dealt to the splits, in pixels; a multiple of
        ``patch_size``.
    train_fraction, val_fraction, test_fraction
        Share of blocks for each split; they sum to 1.
    seed
        Seed of the deterministic shuffle that deals blocks to splits.
    sharpen_target
        Sharpen the Sentinel-2 target's 20 m bands (nir, swir16, swir22) to 10 m with its 10 m
        bands (:func:`harmonize.sharpen.sharpen_20m`) before a model learns from them; on the
        demo world this brings them 3-5 dB closer to the truth. :class:`PairDataset` reads it
        from the index it is given. Off by default, so that a sample's target is the cube's
        own pixels unless asked for.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_days: float = Field(0.0, ge=0)
    nearest_only: bool = True
    min_clear: float = Field(0.99, ge=0.0, le=1.0)
    patch_size: int = Field(256, gt=0)
    stride: int = Field(128, gt=0)
    block_size: int = Field(512, gt=0)
    train_fraction: float = Field(0.8, ge=0.0, le=1.0)
    val_fraction: float = Field(0.1, ge=0.0, le=1.0)
    test_fraction: float = Field(0.1, ge=0.0, le=1.0)
    seed: int = 0
    sharpen_target: bool = False

    @model_validator(mode="after")
    def _check(self) -> PairConfig:
        if self.patch_size % self.stride:
            raise ValueError(
                f"patch_size ({self.patch_size}) must be a multiple of stride ({self.stride}); "
                "pick e.g. stride = patch_size // 2"
            )
        if self.block_size % self.patch_size:
            raise ValueError(
                f"block_size ({self.block_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        total = self.train_fraction + self.val_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, not {total:g}")
        return self

    @property
    def fractions(self) -> dict[str, float]:
        """Split name -> share of blocks."""
        return {"train": self.train_fraction, "val": self.val_fraction, "test": self.test_fraction}


# --------------------------------------------------------------------------------------------
# matching


def match_pairs(
    cube_or_two_cubes: Any,
    *,
    max_days: float = 0,
    nearest_only: bool = True,
) -> pd.DataFrame:
    """Pair Landsat acquisitions with Sentinel-2 acquisitions of (nearly) the same day.

    Parameters
    ----------
    cube_or_two_cubes
        A combined cube with a ``sensor`` time coordinate (``"landsat"`` / ``"sentinel-2"``), a
        ``(landsat, sentinel2)`` pair of datasets, or a pair of sequences of datetimes.
    max_days
        Largest difference in local solar days (0: the same solar day). Solar days are taken at
        the cube's centre longitude when it has a geobox, else UTC days.
    nearest_only
        One pair per Landsat acquisition (the nearest Sentinel-2 one, ties to the earlier); if
        false, every Sentinel-2 acquisition within ``max_days``.

    Returns
    -------
    pandas.DataFrame
        Columns ``landsat_time``, ``s2_time``, ``dt_days`` (``s2_time - landsat_time`` in days,
        signed), sorted by ``landsat_time``; empty when nothing matches.
    """
    obj = cube_or_two_cubes
    if isinstance(obj, xr.Dataset) or is_dataset_pair(obj):
        landsat, lpos, s2, spos = split_sources(obj)
        lt, st = acquisition_times(landsat)[lpos], acquisition_times(s2)[spos]
        offset = solar_offset(landsat)
    elif isinstance(obj, Sequence) and len(obj) == 2:
        lt, st, offset = acquisition_times(obj[0]), acquisition_times(obj[1]), pd.Timedelta(0)
    else:
        raise HarmonizeError(
            "match_pairs takes a combined cube, a (landsat, sentinel2) pair of datasets or of "
            f"datetime sequences, not {type(obj).__name__}"
        )
    rows = _match_times(lt, st, offset=offset, max_days=max_days, nearest_only=nearest_only)
    return pd.DataFrame(rows, columns=["landsat_time", "s2_time", "dt_days"]).astype(
        {"landsat_time": "datetime64[ns]", "s2_time": "datetime64[ns]", "dt_days": "float64"}
    )


def _match_times(
    lt: pd.DatetimeIndex, st: pd.DatetimeIndex, *, offset: pd.Timedelta, max_days: float, nearest_only: bool
) -> list[tuple[Any, Any, float]]:
    day = np.timedelta64(1, "D")
    lday = (lt + offset).floor("D").values
    sday = (st + offset).floor("D").values
    s_order = np.argsort(st.values, kind="stable")
    rows = []
    for i in np.argsort(lt.values, kind="stable"):
        ddays = np.abs((sday[s_order] - lday[i]) / day)
        cand = s_order[ddays <= max_days]
        if cand.size == 0:
            continue
        dt = (st.values[cand] - lt.values[i]) / day
        if nearest_only:
            cand = cand[[int(np.argmin(np.abs(dt)))]]
            dt = (st.values[cand] - lt.values[i]) / day
        rows.extend((lt[i], st[j], float(d)) for j, d in zip(cand, dt, strict=True))
    return rows


# --------------------------------------------------------------------------------------------
# index


def block_splits(ny: int, nx: int, config: PairConfig) -> np.ndarray:
    """Deal the spatial blocks of an ``ny`` x ``nx`` pixel grid to the splits.

    Blocks are ``config.block_size`` pixels square, anchored at pixel (0, 0); a seeded shuffle
    deals them to train/val/test in proportion to the fractions (largest remainder), giving each
    split with a positive fraction at least one block when there are enough blocks.

    Parameters
    ----------
    ny, nx
        The grid's size in pixels.
    config
        ``block_size``, the split fractions and the ``seed`` of the shuffle.

    Returns
    -------
    numpy.ndarray
        ``(ceil(ny / block), ceil(nx / block))`` array of split names.
    """
    b = config.block_size
    shape = (-(-ny // b), -(-nx // b))
    n = shape[0] * shape[1]
    fractions = config.fractions
    want = np.array([fractions[s] * n for s in SPLITS])
    counts = np.floor(want).astype(int)
    for k in np.argsort(-(want - counts), kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    positive = [k for k, s in enumerate(SPLITS) if fractions[s] > 0]
    if n >= len(positive):
        for k in positive:  # a split asked for gets a block, taken from the largest
            if counts[k] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[k] = 1
    order = np.random.default_rng(config.seed).permutation(n)
    labels = np.empty(n, dtype=object)
    start = 0
    for s, c in zip(SPLITS, counts, strict=True):
        labels[order[start : start + c]] = s
        start += c
    return labels.reshape(shape).astype(str)


def _clear_mask(ds: xr.Dataset) -> xr.DataArray:
    if "clear" not in ds:
        raise UnknownBandError(
            "the cube has no 'clear' mask variable; load it with harmonize.cube.load_cube (which "
            "adds it from QA_PIXEL / SCL)"
        )
    clear = ds["clear"]
    return clear if clear.dtype == bool else (clear.fillna(0) != 0)


def _block_counts(clear: xr.DataArray, positions: np.ndarray, stride: int) -> Any:
    """Lazy clear-pixel counts per ``stride`` x ``stride`` block at the given time positions."""
    ny, nx = (clear.sizes["y"] // stride) * stride, (clear.sizes["x"] // stride) * stride
    m = clear.isel(time=positions, y=slice(0, ny), x=slice(0, nx)).transpose("time", "y", "x").data
    if not hasattr(m, "dask"):
        m = dask.array.from_array(np.asarray(m), chunks=(1, -1, -1))
    # coarsen needs chunks that are whole multiples of the block
    chunks = tuple(max(stride, (c // stride) * stride) for c in m.chunksize[1:])
    if any(any(c % stride for c in cs[:-1]) for cs in m.chunks[1:]):
        m = m.rechunk((1, *chunks))
    return dask.array.coarsen(np.sum, m.astype(np.int32), {1: stride, 2: stride})


def build_pair_index(
    cube: Any,
    config: PairConfig | None = None,
    *,
    pairs: pd.DataFrame | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Index every clear patch window of every Landsat/Sentinel-2 pair, lazily from the masks.

    Only the ``clear`` masks of the paired acquisitions are computed (one ``dask.compute``),
    reduced to clear counts per ``stride`` block; window fractions are sums of
    ``patch_size / stride`` blocks squared. No reflectance band is read.

    Parameters
    ----------
    cube
        Combined cube (``sensor`` time coordinate) or ``(landsat, sentinel2)`` pair, each with a
        boolean ``clear`` variable on ``(time, y, x)`` (same y/x grid).
    config
        Matching, patch and split settings (defaults: :class:`PairConfig`).
    pairs
        Pairs to use instead of :func:`match_pairs` (same columns).
    progress
        Show a dask progress bar while the masks are reduced.

    Returns
    -------
    pandas.DataFrame
        One row per kept window: ``pair_id`` (0…n-1), ``landsat_time``, ``s2_time``,
        ``dt_days``, ``y0``, ``x0`` (top-left pixel), ``patch_size``, ``clear_landsat``,
        ``clear_s2`` (clear fractions) and ``split``. ``attrs["config"]`` holds the config.
    """
    config = config or PairConfig()
    landsat, lpos, s2, spos = split_sources(cube)
    ny, nx = _check_grids(landsat, s2, config)
    if pairs is None:
        pairs = match_pairs(
            (landsat, s2) if landsat is not s2 else landsat,
            max_days=config.max_days,
            nearest_only=config.nearest_only,
        )
    if pairs.empty:
        log.warning("no Landsat/Sentinel-2 pairs within %s days", config.max_days)
        return _empty_index(config)
    fractions = _clear_fractions(landsat, lpos, s2, spos, pairs, config, progress=progress)
    windows = _windows(fractions.shape, ny, nx, config)
    frames = [
        frame
        for pair in pairs.itertuples(index=False)
        if (frame := _pair_windows(pair, fractions, windows, config)) is not None
    ]
    if not frames:
        log.warning("no window is %.0f%% clear in both scenes of any pair", 100 * config.min_clear)
        return _empty_index(config)
    return _number_windows(frames, pairs, config)


def _check_grids(landsat: xr.Dataset, s2: xr.Dataset, config: PairConfig) -> tuple[int, int]:
    """The grid's ``(ny, nx)``, after checking both sources share it and hold one patch."""
    ny, nx = landsat.sizes["y"], landsat.sizes["x"]
    if (s2.sizes["y"], s2.sizes["x"]) != (ny, nx):
        raise NoOverlapError(
            f"the Landsat ({ny}x{nx}) and Sentinel-2 ({s2.sizes['y']}x{s2.sizes['x']}) cubes are "
            "on different grids; load both onto one GeoBox"
        )
    P = config.patch_size
    if ny < P or nx < P:
        raise NoOverlapError(f"the cube ({ny}x{nx} px) is smaller than one patch ({P} px); lower patch_size")
    return ny, nx


def _empty_index(config: PairConfig) -> pd.DataFrame:
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in _INDEX_COLUMNS})
    empty.attrs["config"] = config.model_dump()
    return empty


class _ClearFractions:
    """Clear fraction of every window of every paired acquisition, looked up by time."""

    def __init__(self, landsat: dict[Any, np.ndarray], s2: dict[Any, np.ndarray]) -> None:
        self.landsat, self.s2 = landsat, s2
        self.shape = next(iter(landsat.values())).shape

    def of(self, pair: Any) -> tuple[np.ndarray, np.ndarray]:
        """Flat window fractions of a pair's Landsat and Sentinel-2 acquisitions."""
        lt, st = pair.landsat_time.to_datetime64(), pair.s2_time.to_datetime64()
        return self.landsat[lt].ravel(), self.s2[st].ravel()


def _clear_fractions(
    landsat: xr.Dataset,
    lpos: np.ndarray,
    s2: xr.Dataset,
    spos: np.ndarray,
    pairs: pd.DataFrame,
    config: PairConfig,
    *,
    progress: bool,
) -> _ClearFractions:
    """Reduce the paired acquisitions' clear masks to window fractions (one ``dask.compute``)."""
    P, S = config.patch_size, config.stride
    lmap = position_map(acquisition_times(landsat)[lpos], lpos)
    smap = position_map(acquisition_times(s2)[spos], spos)
    lneed = np.unique([lmap[t] for t in pairs["landsat_time"].values])
    sneed = np.unique([smap[t] for t in pairs["s2_time"].values])
    lazy = (_block_counts(_clear_mask(landsat), lneed, S), _block_counts(_clear_mask(s2), sneed, S))
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            lcounts, scounts = dask.compute(*lazy)
    else:
        lcounts, scounts = dask.compute(*lazy)

    k = P // S
    area = float(P * P)
    lfrac = sliding_window_view(lcounts, (k, k), axis=(1, 2)).sum(axis=(-1, -2)) / area
    sfrac = sliding_window_view(scounts, (k, k), axis=(1, 2)).sum(axis=(-1, -2)) / area
    lrow = {t: i for i, t in enumerate(lneed)}
    srow = {t: i for i, t in enumerate(sneed)}
    return _ClearFractions(
        {t: lfrac[lrow[p]] for t, p in lmap.items() if p in lrow},
        {t: sfrac[srow[p]] for t, p in smap.items() if p in srow},
    )


def _windows(shape: tuple[int, int], ny: int, nx: int, config: PairConfig) -> dict[str, np.ndarray]:
    """Every window's origin (``y0``, ``x0``), its split, and whether it lies in one split's blocks."""
    P, S, B = config.patch_size, config.stride, config.block_size
    iy, ix = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    y0, x0 = iy.ravel() * S, ix.ravel() * S
    blocks = block_splits(ny, nx, config)
    corners = [blocks[ys // B, xs // B] for ys in (y0, y0 + P - 1) for xs in (x0, x0 + P - 1)]
    one_split = np.all([c == corners[0] for c in corners[1:]], axis=0)
    return {"y0": y0, "x0": x0, "split": corners[0], "one_split": one_split}


def _pair_windows(
    pair: Any, fractions: _ClearFractions, windows: dict[str, np.ndarray], config: PairConfig
) -> pd.DataFrame | None:
    """The windows of one pair clear enough in both scenes (``None`` when there are none)."""
    fl, fs = fractions.of(pair)
    keep = windows["one_split"] & (fl >= config.min_clear) & (fs >= config.min_clear)
    if not keep.any():
        return None
    return pd.DataFrame(
        {
            "landsat_time": pair.landsat_time,
            "s2_time": pair.s2_time,
            "dt_days": pair.dt_days,
            "y0": windows["y0"][keep],
            "x0": windows["x0"][keep],
            "patch_size": config.patch_size,
            "clear_landsat": fl[keep],
            "clear_s2": fs[keep],
            "split": windows["split"][keep],
        }
    )


def _number_windows(frames: list[pd.DataFrame], pairs: pd.DataFrame, config: PairConfig) -> pd.DataFrame:
    """One table of every kept window, numbered by ``pair_id``, with the config in its attrs."""
    index = pd.concat(frames, ignore_index=True)
    index.insert(0, "pair_id", np.arange(len(index)))
    index = index.astype({"y0": "int64", "x0": "int64", "patch_size": "int64"})
    index.attrs["config"] = config.model_dump()
    log.info(
        "pair index: %d pairs, %d windows (%s)",
        len(pairs),
        len(index),
        ", ".join(f"{s} {n}" for s, n in index["split"].value_counts().items()),
    )
    return index
