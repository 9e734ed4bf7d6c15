"""Landsat/Sentinel-2 training pairs: matching, a lazy patch index, and a torch Dataset.

The pipeline stage between the cube and the model:

1. :func:`match_pairs` pairs each Landsat acquisition with the nearest Sentinel-2 acquisition
   within ``max_days`` solar days (0, the default, means the same solar day).
2. :func:`build_pair_index` cuts each pair into overlapping patch windows and keeps the windows
   that are clear enough in *both* scenes. Only the boolean ``clear`` masks are read, reduced to
   per-stride-block counts by dask in one ``compute``; the reflectance bands are never touched.
   Windows are split into train/val/test by spatial blocks, so no patch of one split overlaps a
   patch of another.
3. :class:`PairDataset` serves the windows of one split as tensors, computing only the patch it
   is asked for from the dask-backed cube, with optional flips/rotations and an optional Zarr
   cache for repeated epochs (:func:`cache_pairs`).

A sample is ``{"input": [7, H, W], "target": [6, H, W], "valid": [H, W] bool,
"pair_id": int64, "truth": [6, H, W] (only with ``truth``)}``: Landsat blue … swir22 and pan in,
Sentinel-2 blue … swir22 out, ``valid`` where both scenes are clear and every value is finite.
NaN is replaced by 0 in the tensors.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import dask
import numpy as np
import pandas as pd
import torch
import xarray as xr
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from harmonize.bands import PAN, REFLECTANCE_BANDS
from harmonize.errors import EmptySearchError, HarmonizeError, NoOverlapError, UnknownBandError

__all__ = [
    "INPUT_BANDS",
    "TARGET_BANDS",
    "SPLITS",
    "PairConfig",
    "match_pairs",
    "block_splits",
    "build_pair_index",
    "PairDataset",
    "cache_pairs",
    "datasets_from_config",
]

log = logging.getLogger(__name__)

#: Model input: the six Landsat reflectance bands and pan, in this order.
INPUT_BANDS: tuple[str, ...] = (*REFLECTANCE_BANDS, PAN)
#: Model target: the six Sentinel-2 reflectance bands, in this order.
TARGET_BANDS: tuple[str, ...] = REFLECTANCE_BANDS
#: Split names, in the order blocks are dealt to them.
SPLITS: tuple[str, ...] = ("train", "val", "test")

Split = Literal["train", "val", "test"]
_LANDSAT = "landsat"
_S2 = "sentinel-2"
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


def _solar_offset(obj: Any) -> pd.Timedelta:
    """UTC -> local mean solar time offset at the centre of a cube (0 when it has no geobox)."""
    try:
        centre = obj.odc.geobox.extent.centroid.to_crs("EPSG:4326")
        lon = float(centre.points[0][0])
    except Exception:  # no geobox, no CRS: fall back to UTC days
        return pd.Timedelta(0)
    return pd.Timedelta(hours=lon / 15.0)


def _sensor_positions(cube: xr.Dataset, sensor: str) -> np.ndarray:
    if "sensor" not in cube.coords:
        raise HarmonizeError(
            "the cube has no 'sensor' time coordinate; load it with harmonize.cube.load_cube, or "
            "pass (landsat_cube, sentinel2_cube) as a pair"
        )
    values = np.asarray(cube["sensor"].values).astype(str)
    return np.flatnonzero(values == sensor)


def _sources(cube: Any) -> tuple[xr.Dataset, np.ndarray, xr.Dataset, np.ndarray]:
    """Split a combined cube or a (landsat, s2) pair into sources and time positions."""
    if isinstance(cube, xr.Dataset):
        return (
            cube,
            _sensor_positions(cube, _LANDSAT),
            cube,
            _sensor_positions(cube, _S2),
        )
    if isinstance(cube, Sequence) and len(cube) == 2 and all(isinstance(c, xr.Dataset) for c in cube):
        landsat, s2 = cube
        return landsat, np.arange(landsat.sizes["time"]), s2, np.arange(s2.sizes["time"])
    raise HarmonizeError(
        f"expected a combined cube or a (landsat, sentinel2) pair of datasets, not {type(cube).__name__}"
    )


def _times(obj: Any) -> pd.DatetimeIndex:
    if isinstance(obj, xr.Dataset | xr.DataArray):
        obj = obj["time"].values
    return pd.DatetimeIndex(np.asarray(obj, dtype="datetime64[ns]"))


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
    if isinstance(obj, xr.Dataset) or _is_ds(obj):
        landsat, lpos, s2, spos = _sources(obj)
        lt, st = _times(landsat)[lpos], _times(s2)[spos]
        offset = _solar_offset(landsat)
    elif isinstance(obj, Sequence) and len(obj) == 2:
        lt, st, offset = _times(obj[0]), _times(obj[1]), pd.Timedelta(0)
    else:
        raise HarmonizeError(
            "match_pairs takes a combined cube, a (landsat, sentinel2) pair of datasets or of "
            f"datetime sequences, not {type(obj).__name__}"
        )
    rows = _match_times(lt, st, offset=offset, max_days=max_days, nearest_only=nearest_only)
    return pd.DataFrame(rows, columns=["landsat_time", "s2_time", "dt_days"]).astype(
        {"landsat_time": "datetime64[ns]", "s2_time": "datetime64[ns]", "dt_days": "float64"}
    )


def _is_ds(obj: Any) -> bool:
    return isinstance(obj, Sequence) and len(obj) == 2 and all(isinstance(c, xr.Dataset) for c in obj)


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
    landsat, lpos, s2, spos = _sources(cube)
    ny, nx = landsat.sizes["y"], landsat.sizes["x"]
    if (s2.sizes["y"], s2.sizes["x"]) != (ny, nx):
        raise NoOverlapError(
            f"the Landsat ({ny}x{nx}) and Sentinel-2 ({s2.sizes['y']}x{s2.sizes['x']}) cubes are "
            "on different grids; load both onto one GeoBox"
        )
    P, S = config.patch_size, config.stride
    if ny < P or nx < P:
        raise NoOverlapError(f"the cube ({ny}x{nx} px) is smaller than one patch ({P} px); lower patch_size")
    if pairs is None:
        pairs = match_pairs(
            (landsat, s2) if landsat is not s2 else landsat,
            max_days=config.max_days,
            nearest_only=config.nearest_only,
        )
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in _INDEX_COLUMNS})
    empty.attrs["config"] = config.model_dump()
    if pairs.empty:
        log.warning("no Landsat/Sentinel-2 pairs within %s days", config.max_days)
        return empty

    lmap = _position_map(_times(landsat)[lpos], lpos)
    smap = _position_map(_times(s2)[spos], spos)
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
    iy, ix = np.meshgrid(np.arange(lfrac.shape[1]), np.arange(lfrac.shape[2]), indexing="ij")
    y0, x0 = iy.ravel() * S, ix.ravel() * S

    blocks = block_splits(ny, nx, config)
    B = config.block_size
    corners = [blocks[ys // B, xs // B] for ys in (y0, y0 + P - 1) for xs in (x0, x0 + P - 1)]
    one_split = np.all([c == corners[0] for c in corners[1:]], axis=0)
    split = corners[0]

    lrow = {t: i for i, t in enumerate(lneed)}
    srow = {t: i for i, t in enumerate(sneed)}
    frames = []
    for pair in pairs.itertuples(index=False):
        fl = lfrac[lrow[lmap[pair.landsat_time.to_datetime64()]]].ravel()
        fs = sfrac[srow[smap[pair.s2_time.to_datetime64()]]].ravel()
        keep = one_split & (fl >= config.min_clear) & (fs >= config.min_clear)
        if not keep.any():
            continue
        frames.append(
            pd.DataFrame(
                {
                    "landsat_time": pair.landsat_time,
                    "s2_time": pair.s2_time,
                    "dt_days": pair.dt_days,
                    "y0": y0[keep],
                    "x0": x0[keep],
                    "patch_size": P,
                    "clear_landsat": fl[keep],
                    "clear_s2": fs[keep],
                    "split": split[keep],
                }
            )
        )
    if not frames:
        log.warning("no window is %.0f%% clear in both scenes of any pair", 100 * config.min_clear)
        return empty
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


def _position_map(times: pd.DatetimeIndex, positions: np.ndarray) -> dict[np.datetime64, int]:
    """Time -> first position in the cube (duplicate times keep the first)."""
    out: dict[np.datetime64, int] = {}
    for t, p in zip(times.values, positions, strict=True):
        out.setdefault(t, int(p))
    return out


# --------------------------------------------------------------------------------------------
# dataset


def _augment(arrays: dict[str, np.ndarray], op: int) -> dict[str, np.ndarray]:
    """Apply one of the 8 dihedral transforms (``op`` 0…7) to the last two axes of each array."""
    out = {}
    for name, a in arrays.items():
        if op >= 4:
            a = a[..., ::-1]
        out[name] = np.ascontiguousarray(np.rot90(a, op % 4, axes=(-2, -1)))
    return out


class PairDataset(Dataset):
    """Landsat -> Sentinel-2 patch pairs of one split, computed patch by patch from a lazy cube.

    Parameters
    ----------
    cube
        The combined cube (or ``(landsat, sentinel2)`` pair) the index was built from; dask-backed
        is expected, and only the patch a sample needs is computed.
    index
        Output of :func:`build_pair_index`.
    split
        ``"train"``, ``"val"``, ``"test"``, or ``None`` for every row.
    augment
        Random flips / 90° rotations (one of the 8 dihedral transforms, drawn from torch's RNG,
        the same for every array of a sample). ``None``: only for ``split="train"``.
    truth
        Optional noise-free reference (dims ``time, y, x``, variables named like the target
        bands, on the cube's grid or a grid containing it); the time nearest the Sentinel-2
        acquisition (within a day) is returned as ``"truth"``.
    cache
        Path of a Zarr store caching the (un-augmented) samples: the first read of a sample
        computes and writes it, later reads load it. A store built for another index is rebuilt.
    input_bands, target_bands
        Variables stacked into ``"input"`` and ``"target"``.
    scheduler
        dask scheduler for one patch; default ``"threads"`` in the main process and
        ``"synchronous"`` inside DataLoader workers.
    sharpen_target
        Sharpen the target's 20 m bands with :func:`harmonize.sharpen.sharpen_block` (each patch
        is read with a halo, so it equals the patch of the sharpened cube). ``None``: the
        index's ``attrs["config"]["sharpen_target"]`` (false for an index without it).
    """

    def __init__(
        self,
        cube: Any,
        index: pd.DataFrame,
        split: Split | None = "train",
        *,
        augment: bool | None = None,
        truth: xr.Dataset | xr.DataArray | None = None,
        cache: str | os.PathLike[str] | None = None,
        input_bands: Sequence[str] = INPUT_BANDS,
        target_bands: Sequence[str] = TARGET_BANDS,
        scheduler: str | None = None,
        sharpen_target: bool | None = None,
    ) -> None:
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, not {split!r}")
        rows = index if split is None else index[index["split"] == split]
        if rows.empty:
            raise EmptySearchError(
                f"the pair index has no {split or ''} windows; lower min_clear, raise max_days, or "
                "use a larger area / more blocks"
            )
        self.split = split
        self.augment = (split == "train") if augment is None else bool(augment)
        self.input_bands = tuple(input_bands)
        self.target_bands = tuple(target_bands)
        self.scheduler = scheduler
        landsat, lpos, s2, spos = _sources(cube)
        for ds, bands, what in (
            (landsat, self.input_bands, "Landsat"),
            (s2, self.target_bands, "Sentinel-2"),
        ):
            missing = [b for b in (*bands, "clear") if b not in ds]
            if missing:
                raise UnknownBandError(f"the {what} cube lacks {missing}; load it with those bands")
        if sharpen_target is None:
            sharpen_target = bool((index.attrs.get("config") or {}).get("sharpen_target", False))
        self._sharpen = _sharpen_plan(s2, self.target_bands) if sharpen_target else None
        self.sharpen_target = self._sharpen is not None
        # the raw (dask) arrays: slicing them costs far less per patch than Dataset.isel
        self._ldata = [_tyx(landsat[v]) for v in (*self.input_bands, "clear")]
        self._sdata = [_tyx(s2[v]) for v in (*self.target_bands, "clear")]
        extra = [] if self._sharpen is None else self._sharpen["extra"]
        self._gdata = [_tyx(s2[v]) for v in extra]
        lmap = _position_map(_times(landsat)[lpos], lpos)
        smap = _position_map(_times(s2)[spos], spos)
        try:
            self._lpos = np.array([lmap[t] for t in rows["landsat_time"].values], dtype=np.int64)
            self._spos = np.array([smap[t] for t in rows["s2_time"].values], dtype=np.int64)
        except KeyError as exc:
            raise HarmonizeError(
                f"the index names an acquisition ({exc.args[0]}) the cube lacks; build the index from "
                "this cube"
            ) from None
        self._y0 = rows["y0"].to_numpy(np.int64)
        self._x0 = rows["x0"].to_numpy(np.int64)
        self._size = rows["patch_size"].to_numpy(np.int64)
        self._pair_id = rows["pair_id"].to_numpy(np.int64)
        ny, nx = landsat.sizes["y"], landsat.sizes["x"]
        if (self._y0 + self._size > ny).any() or (self._x0 + self._size > nx).any():
            raise NoOverlapError("the index has windows outside this cube; build the index from this cube")
        self.rows = rows.reset_index(drop=True)

        self._truth = None
        if truth is not None:
            self._truth, self._tpos, self._toff = _prepare_truth(
                truth, self.target_bands, s2, rows["s2_time"]
            )
            self._tdata = [_tyx(self._truth[b]) for b in self.target_bands]
        self.cache_path = None if cache is None else Path(cache)
        self._cache: _PatchCache | None = None
        self._open_cache()  # create the store here, before DataLoader workers race to

    def __len__(self) -> int:
        return len(self._y0)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i = int(i) % len(self)
        arrays = self.load(i)
        if self.augment:
            arrays = _augment(arrays, int(torch.randint(8, (1,)).item()))
        sample = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        sample["pair_id"] = torch.tensor(self._pair_id[i])
        return sample

    # -- loading ------------------------------------------------------------------------------

    def load(self, i: int) -> dict[str, np.ndarray]:
        """The un-augmented arrays of sample ``i`` (from the cache when it holds them)."""
        cache = self._open_cache()
        if cache is not None:
            hit = cache.read(i)
            if hit is not None:
                return hit
        arrays = self._compute(i)
        if cache is not None:
            cache.write(i, arrays)
        return arrays

    def prefetch(self, *, batch_size: int = 32, progress: bool = False) -> int:
        """Compute every sample the cache lacks, ``batch_size`` samples per dask computation.

        One computation per batch instead of one per sample: each computation plans (culls) the
        cube's whole graph first, which costs more than reading a 64-pixel patch.

        Returns
        -------
        int
            The number of samples computed (0 when the cache held them all or there is no cache).
        """
        cache = self._open_cache()
        if cache is None:
            return 0
        todo = [i for i in range(len(self)) if not cache.has(i)]
        for start in tqdm(
            range(0, len(todo), batch_size), desc="reading pairs", disable=not progress, unit="batch"
        ):
            batch = todo[start : start + batch_size]
            lazy = [self._lazy_parts(i) for i in batch]
            flat = [p for parts, _ in lazy for p in parts]
            done = iter(dask.compute(*flat, scheduler=self._scheduler()))
            for i, (parts, where) in zip(batch, lazy, strict=True):
                cache.write(i, self._assemble(i, [np.asarray(next(done)) for _ in parts], where))
        return len(todo)

    def _scheduler(self) -> str:
        if self.scheduler is not None:
            return self.scheduler
        return "synchronous" if torch.utils.data.get_worker_info() is not None else "threads"

    def _lazy_parts(self, i: int) -> tuple[list[Any], tuple[slice, slice]]:
        """The (lazy) window arrays sample ``i`` needs, and the Sentinel-2 read window."""
        y0, x0, n = int(self._y0[i]), int(self._x0[i]), int(self._size[i])
        ys, xs = slice(y0, y0 + n), slice(x0, x0 + n)
        lt, st = int(self._lpos[i]), int(self._spos[i])
        sys_, sxs = ys, xs
        if self._sharpen is not None:  # read the Sentinel-2 side with the sharpening halo
            h, (sny, snx) = self._sharpen["halo"], self._sharpen["shape"]
            sys_ = slice(max(0, y0 - h), min(sny, y0 + n + h))
            sxs = slice(max(0, x0 - h), min(snx, x0 + n + h))
        parts = [_window(a, lt, ys, xs) for a in self._ldata] + [
            _window(a, st, sys_, sxs) for a in (*self._sdata, *self._gdata)
        ]
        if self._truth is not None:
            oy, ox = self._toff
            tys, txs = slice(y0 + oy, y0 + oy + n), slice(x0 + ox, x0 + ox + n)
            parts += [_window(a, int(self._tpos[i]), tys, txs) for a in self._tdata]
        return parts, (sys_, sxs)

    def _compute(self, i: int) -> dict[str, np.ndarray]:
        parts, where = self._lazy_parts(i)
        parts = [np.asarray(p) for p in dask.compute(*parts, scheduler=self._scheduler())]
        return self._assemble(i, parts, where)

    def _assemble(self, i: int, parts: list[np.ndarray], where: tuple[slice, slice]) -> dict[str, np.ndarray]:
        """Sample ``i``'s arrays from its computed window arrays (see :meth:`_lazy_parts`)."""
        y0, x0, n = int(self._y0[i]), int(self._x0[i]), int(self._size[i])
        sys_, sxs = where
        nl, ns = len(self._ldata), len(self._sdata)
        if self._sharpen is not None:
            oy, ox = y0 - sys_.start, x0 - sxs.start
            crop = (slice(oy, oy + n), slice(ox, ox + n))
            s2parts = self._sharpened(parts[nl : nl + ns + len(self._gdata)], sys_.start, sxs.start)
            parts = parts[:nl] + [p[crop] for p in s2parts] + parts[nl + ns + len(self._gdata) :]
        inp = np.stack(parts[: nl - 1]).astype(np.float32, copy=False)
        tgt = np.stack(parts[nl : nl + ns - 1]).astype(np.float32, copy=False)
        valid = (
            parts[nl - 1].astype(bool, copy=False)
            & parts[nl + ns - 1].astype(bool, copy=False)
            & np.isfinite(inp).all(axis=0)
            & np.isfinite(tgt).all(axis=0)
        )
        out = {"input": np.nan_to_num(inp, nan=0.0), "target": np.nan_to_num(tgt, nan=0.0), "valid": valid}
        if self._truth is not None:
            truth = np.stack(parts[nl + ns :]).astype(np.float32, copy=False)
            out["truth"] = np.nan_to_num(truth, nan=0.0)
        return out

    def _sharpened(self, s2parts: list[np.ndarray], y0: int, x0: int) -> list[np.ndarray]:
        """Sentinel-2 window arrays (targets, clear, extra guides) with the 20 m bands sharpened."""
        from harmonize.sharpen import sharpen_block

        plan = self._sharpen
        assert plan is not None
        named = dict(zip((*self.target_bands, "clear", *plan["extra"]), s2parts, strict=True))
        py, px = plan["phase"]
        sharp = sharpen_block(
            np.stack([named[b] for b in plan["bands"]]),
            np.stack([named[g] for g in plan["guides"]]),
            named["clear"].astype(bool),
            phase=((py + y0) % 2, (px + x0) % 2),
        )
        for k, b in enumerate(plan["bands"]):
            named[b] = sharp[k]
        return [named[b] for b in (*self.target_bands, "clear")]

    # -- cache ----------------------------------------------------------------------------------

    def with_cache(self, path: str | os.PathLike[str]) -> PairDataset:
        """A shallow copy of this dataset that caches its samples in the Zarr store ``path``."""
        new = copy.copy(self)
        new.cache_path = Path(path)
        new._cache = None
        new._open_cache()
        return new

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        for a in (self._lpos, self._spos, self._y0, self._x0, self._size, self._pair_id):
            h.update(a.tobytes())
        h.update(repr((self.input_bands, self.target_bands, self._truth is not None)).encode())
        if self._sharpen is not None:
            plan = self._sharpen
            h.update(repr(("sharpen", plan["bands"], plan["guides"], plan["settings"])).encode())
        h.update(self.rows["landsat_time"].values.tobytes() + self.rows["s2_time"].values.tobytes())
        return h.hexdigest()

    def _open_cache(self) -> _PatchCache | None:
        if self.cache_path is None:
            return None
        # reopen in each process: a store opened before a DataLoader fork is not reused
        if self._cache is None or self._cache.pid != os.getpid():
            size = int(self._size[0])
            if (self._size != size).any():
                raise HarmonizeError("a cached PairDataset needs one patch_size for all windows")
            shapes = {
                "input": (len(self.input_bands), size, size),
                "target": (len(self.target_bands), size, size),
                "valid": (size, size),
            }
            if self._truth is not None:
                shapes["truth"] = (len(self.target_bands), size, size)
            self._cache = _PatchCache(self.cache_path, len(self), shapes, self._fingerprint())
        return self._cache

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None
        return state


def _sharpen_plan(s2: xr.Dataset, target_bands: Sequence[str]) -> dict[str, Any] | None:
    """What sharpening the target needs: bands, guides (and those beyond the targets), halo."""
    from harmonize.sharpen import DEFAULT_EPS, DEFAULT_WINDOW, GUIDE_BANDS, SHARPEN_BANDS, grid_phase, halo

    bands = [b for b in target_bands if b in SHARPEN_BANDS]
    if not bands:
        return None
    missing = [g for g in GUIDE_BANDS if g not in s2]
    if missing:
        raise UnknownBandError(f"sharpen_target needs the Sentinel-2 10 m bands {missing}; load them too")
    return {
        "bands": bands,
        "guides": list(GUIDE_BANDS),
        "extra": [g for g in GUIDE_BANDS if g not in target_bands],
        "halo": halo(),
        "phase": grid_phase(s2),
        "shape": (s2.sizes["y"], s2.sizes["x"]),
        "settings": {"window": DEFAULT_WINDOW, "eps": DEFAULT_EPS},
    }


def _tyx(da: xr.DataArray) -> Any:
    """The (time, y, x) dask array of a variable; the DataArray itself when it is not dask-backed."""
    da = da.transpose("time", "y", "x")
    return da.data if da.chunks is not None else da


def _window(a: Any, t: int, ys: slice, xs: slice) -> Any:
    """One time step's window of an array from :func:`_tyx` (lazy when dask-backed)."""
    if isinstance(a, xr.DataArray):
        return a.isel(time=t, y=ys, x=xs).values
    return a[t, ys, xs]


def _prepare_truth(
    truth: xr.Dataset | xr.DataArray, bands: Sequence[str], cube: xr.Dataset, s2_times: pd.Series
) -> tuple[xr.Dataset, np.ndarray, tuple[int, int]]:
    """Check a truth dataset against the cube; its time positions and pixel offset."""
    if isinstance(truth, xr.DataArray):
        truth = truth.to_dataset("band")
    missing = [b for b in bands if b not in truth]
    if missing:
        raise UnknownBandError(f"the truth dataset lacks {missing}")
    truth = truth[list(bands)]
    tindex = pd.DatetimeIndex(truth["time"].values)
    wanted = pd.DatetimeIndex(s2_times.values)
    if (tindex == tindex.normalize()).all():
        # truth per date: take the Sentinel-2 acquisition's local solar date
        pos = tindex.get_indexer((wanted + _solar_offset(cube)).normalize())
    else:
        pos = tindex.get_indexer(wanted, method="nearest", tolerance=pd.Timedelta("12h"))
    if (pos < 0).any():
        missing = wanted[pos < 0][0]
        raise HarmonizeError(
            f"the truth dataset has no time for the Sentinel-2 acquisition of {missing}; pass the truth "
            "of the same world and period"
        )
    offsets = []
    for dim in ("y", "x"):
        if dim in truth.coords and dim in cube.coords and cube.sizes[dim] > 1:
            c = cube[dim].values
            res = abs(float(c[1] - c[0]))
            idx = pd.Index(truth[dim].values).get_indexer(c[[0, -1]], method="nearest", tolerance=res / 2)
            if (idx < 0).any() or idx[1] - idx[0] != len(c) - 1:
                raise NoOverlapError(f"the truth grid does not contain the cube's {dim} pixels")
            offsets.append(int(idx[0]))
        elif truth.sizes[dim] == cube.sizes[dim]:
            offsets.append(0)
        else:
            raise NoOverlapError("the truth dataset is not on the cube's grid")
    return truth, pos.astype(np.int64), (offsets[0], offsets[1])


class _PatchCache:
    """Per-sample Zarr cache: one float32 chunk per sample holding every array's channels.

    A sample not yet written reads as the NaN fill value (written samples hold no NaN), so a hit
    costs one chunk read and no separate flag.
    """

    VERSION = 2

    def __init__(self, path: Path, n: int, shapes: dict[str, tuple[int, ...]], fingerprint: str) -> None:
        import zarr

        self.pid = os.getpid()
        self.names = tuple(shapes)
        size = shapes["valid"][-1]
        self.channels = {k: (v[0] if len(v) == 3 else 1) for k, v in shapes.items()}
        total = sum(self.channels.values())
        key = f"{fingerprint}:{self.VERSION}"
        array = None
        if path.exists():
            group = zarr.open_group(str(path), mode="a")
            if group.attrs.get("fingerprint") == key and "samples" in group:
                array = group["samples"]
            else:
                log.warning("pair cache %s was built for another index; rebuilding it", path)
        if array is None:
            group = zarr.open_group(str(path), mode="w")
            array = group.create_array(
                "samples",
                shape=(n, total, size, size),
                chunks=(1, total, size, size),
                dtype=np.float32,
                fill_value=np.nan,
                compressors=None,  # reflectance barely compresses; reads stay cheap
            )
            group.attrs["fingerprint"] = key
            group.attrs["layout"] = dict(self.channels)
        self.array = array

    def has(self, i: int) -> bool:
        return not bool(np.isnan(self.array[i, 0, 0, 0]))

    def read(self, i: int) -> dict[str, np.ndarray] | None:
        block = np.asarray(self.array[i])
        if np.isnan(block[0, 0, 0]):
            return None
        out, c = {}, 0
        for name in self.names:
            k = self.channels[name]
            part = block[c : c + k]
            out[name] = part[0] > 0.5 if name == "valid" else part
            c += k
        return out

    def write(self, i: int, arrays: dict[str, np.ndarray]) -> None:
        parts = [
            np.asarray(arrays[n], dtype=np.float32).reshape(-1, *arrays[n].shape[-2:]) for n in self.names
        ]
        self.array[i] = np.concatenate(parts)


def cache_pairs(dataset: PairDataset, path: str | os.PathLike[str], *, progress: bool = True) -> PairDataset:
    """Compute every sample of ``dataset`` once into the Zarr store ``path``.

    Samples already in the store are skipped, so an interrupted run resumes.

    Returns
    -------
    PairDataset
        A copy of ``dataset`` that reads its samples from the store.
    """
    cached = dataset.with_cache(path)
    cached.prefetch(progress=progress)
    return cached


# --------------------------------------------------------------------------------------------
# training entry point


def datasets_from_config(config: Any) -> tuple[PairDataset, PairDataset | None]:
    """Dataset factory of ``harmonize train``: load a cube, index its pairs, serve train and val.

    Reads ``config.dataset`` (a mapping; ``config`` is a :class:`harmonize.train.TrainConfig`):

    ``source``
        Where the items are: a STAC API URL, an item file, or a directory holding
        ``items.parquet`` (a simulated world). Required.
    ``bbox``, ``datetime``, ``max_cloud``
        Passed to :func:`harmonize.catalog.search`.
    ``chunks``
        dask chunks of the cube (default ``{"time": 1, "y": 512, "x": 512}``).
    ``pairs``
        :class:`PairConfig` fields (``max_days``, ``min_clear``, ``patch_size`` …).
    ``cache``
        A folder for Zarr caches of the samples (``train.zarr``, ``val.zarr``), reused by later
        epochs and runs.
    ``truth``
        If true and ``source`` is a simulated world, validation samples carry its truth.

    Returns
    -------
    tuple
        ``(train, val)``; ``val`` is ``None`` when the index has no validation windows.
    """
    from harmonize.catalog import search
    from harmonize.cube import load_cube

    params = dict(getattr(config, "dataset", config) or {})
    if "source" not in params:
        raise HarmonizeError("dataset.source is required: a STAC API URL, an item file or a world folder")
    source = params["source"]
    pair_config = PairConfig(**params.get("pairs", {}))
    items = search(
        source,
        bbox=params.get("bbox"),
        datetime=params.get("datetime"),
        max_cloud=params.get("max_cloud"),
        include_pan=True,
        require=True,
    )
    world = None
    if not str(source).startswith(("http://", "https://")) and (Path(source) / "world.json").exists():
        from harmonize.world import open_world

        world = open_world(source)
    chunks = params.get("chunks", {"time": 1, "y": 512, "x": 512})
    geobox = world.geobox if world is not None and params.get("bbox") is None else None
    cube = load_cube(items, bbox=params.get("bbox"), geobox=geobox, chunks=chunks)
    index = build_pair_index(cube, pair_config)
    cache = params.get("cache")
    train = PairDataset(cube, index, "train", cache=None if cache is None else Path(cache) / "train.zarr")
    truth = world.truth if (world is not None and params.get("truth", False)) else None
    val = None
    if (index["split"] == "val").any():
        val = PairDataset(
            cube, index, "val", truth=truth, cache=None if cache is None else Path(cache) / "val.zarr"
        )
    return train, val
