"""The torch adapter of the pair index: :class:`PairDataset` serves patches of a lazy cube.

:class:`PairDataset` serves the windows of one split of a pair index
(:func:`harmonize.pairs.build_pair_index`) as tensors, computing only the patch it is asked for
from the dask-backed cube, with optional flips/rotations and an optional Zarr cache for repeated
epochs (:func:`cache_pairs`).

A sample is ``{"input": [7, H, W], "target": [6, H, W], "valid": [H, W] bool,
"pair_id": int64, "reference": [6, H, W] (only with ``reference``)}``: Landsat blue … swir22 and
pan in, Sentinel-2 blue … swir22 out, ``valid`` where both scenes are clear and every value is
finite. NaN is replaced by 0 in the tensors.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from harmonize.errors import EmptySearchError, HarmonizeError, NoOverlapError, UnknownBandError
from harmonize.pairs.augment import N_DIHEDRAL, dihedral
from harmonize.pairs.cache import PatchCache
from harmonize.pairs.index import INPUT_BANDS, SPLITS, TARGET_BANDS, Split
from harmonize.pairs.reference import align_reference
from harmonize.pairs.sources import acquisition_times, position_map, split_sources

__all__ = ["PairDataset", "cache_pairs", "PREFETCH_TILE"]

#: Side (pixels) of the tiles :meth:`PairDataset.prefetch` reads a pair's windows by: one block
#: per array, acquisition pair and tile (a few MB), cut into the windows in memory.
PREFETCH_TILE = 512


class PairDataset(Dataset):
    """Landsat -> Sentinel-2 patch pairs of one split, computed patch by patch from a lazy cube.

    Parameters
    ----------
    cube
        The combined cube (or ``(landsat, sentinel2)`` pair) the index was built from; dask-backed
        is expected, and only the patch a sample needs is computed.
    index
        Output of :func:`~harmonize.pairs.build_pair_index`.
    split
        ``"train"``, ``"val"``, ``"test"``, or ``None`` for every row.
    augment
        Random flips / 90° rotations (one of the 8 dihedral transforms, drawn from torch's RNG,
        the same for every array of a sample). ``None``: only for ``split="train"``.
    reference
        Optional reference reflectance (dims ``time, y, x``, variables named like the target
        bands, on the cube's grid or a grid containing it); the time nearest the Sentinel-2
        acquisition (within a day) is returned as ``"reference"``
        (see :func:`~harmonize.pairs.reference.align_reference`).
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
    in_memory
        With ``cache``: also keep each cached sample in memory once written or read, so later
        epochs skip the store (the same arrays; for sets that fit in memory).
    """

    def __init__(
        self,
        cube: Any,
        index: pd.DataFrame,
        split: Split | None = "train",
        *,
        augment: bool | None = None,
        reference: xr.Dataset | xr.DataArray | None = None,
        cache: str | os.PathLike[str] | None = None,
        input_bands: Sequence[str] = INPUT_BANDS,
        target_bands: Sequence[str] = TARGET_BANDS,
        scheduler: str | None = None,
        sharpen_target: bool | None = None,
        in_memory: bool = False,
    ) -> None:
        rows = _split_rows(index, split)
        self.in_memory = bool(in_memory)
        self.split = split
        self.augment = (split == "train") if augment is None else bool(augment)
        self.input_bands = tuple(input_bands)
        self.target_bands = tuple(target_bands)
        self.scheduler = scheduler
        landsat, lpos, s2, spos = split_sources(cube)
        _check_bands(landsat, self.input_bands, "Landsat")
        _check_bands(s2, self.target_bands, "Sentinel-2")
        if sharpen_target is None:
            sharpen_target = bool((index.attrs.get("config") or {}).get("sharpen_target", False))
        self._sharpen = _sharpen_plan(s2, self.target_bands) if sharpen_target else None
        self.sharpen_target = self._sharpen is not None
        # the raw (dask) arrays: slicing them costs far less per patch than Dataset.isel
        self._ldata = [_tyx(landsat[v]) for v in (*self.input_bands, "clear")]
        self._sdata = [_tyx(s2[v]) for v in (*self.target_bands, "clear")]
        extra = [] if self._sharpen is None else self._sharpen["extra"]
        self._gdata = [_tyx(s2[v]) for v in extra]
        self._lpos = _time_positions(rows["landsat_time"], landsat, lpos)
        self._spos = _time_positions(rows["s2_time"], s2, spos)
        self._y0 = rows["y0"].to_numpy(np.int64)
        self._x0 = rows["x0"].to_numpy(np.int64)
        self._size = rows["patch_size"].to_numpy(np.int64)
        self._pair_id = rows["pair_id"].to_numpy(np.int64)
        ny, nx = landsat.sizes["y"], landsat.sizes["x"]
        if (self._y0 + self._size > ny).any() or (self._x0 + self._size > nx).any():
            raise NoOverlapError("the index has windows outside this cube; build the index from this cube")
        self.rows = rows.reset_index(drop=True)

        self._reference = None
        if reference is not None:
            self._reference, self._rpos, self._roff = align_reference(
                reference, self.target_bands, s2, rows["s2_time"]
            )
            self._rdata = [_tyx(self._reference[b]) for b in self.target_bands]
        self.cache_path = None if cache is None else Path(cache)
        self._cache: PatchCache | None = None
        self._open_cache()  # create the store here, before DataLoader workers race to

    def __len__(self) -> int:
        return len(self._y0)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i = int(i) % len(self)
        arrays = self.load(i)
        if self.augment:
            arrays = dihedral(arrays, int(torch.randint(N_DIHEDRAL, (1,)).item()))
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
        """Compute every sample the cache lacks, reading each source region once.

        The samples are grouped by acquisition pair and :data:`PREFETCH_TILE`-pixel tile; each
        group's windows are read as one block per array (their bounding box, with the sharpening
        halo on the Sentinel-2 side) and cut out of it in memory (overlapping windows read their
        pixels once); groups are packed into dask computations of about ``batch_size`` samples
        (each computation plans the cube's graph first; a group is never split). The samples
        are those of :meth:`load`, bit for bit.

        Returns
        -------
        int
            The number of samples computed (0 when the cache held them all or there is no cache).
        """
        cache = self._open_cache()
        if cache is None:
            return 0
        todo = [i for i in range(len(self)) if not cache.has(i)]
        batches = _batches(self._groups(todo), batch_size)
        # assembling (sharpening) is numpy that releases the GIL: a thread per core
        with ThreadPoolExecutor(max_workers=max(1, len(os.sched_getaffinity(0)))) as pool:
            for batch in tqdm(batches, desc="reading pairs", disable=not progress, unit="batch"):
                plans = [self._group_plan(g) for g in batch]
                flat = [p for _, lazy in plans for p in lazy]
                done = iter(dask.compute(*flat, scheduler=self._scheduler()))
                for group, (boxes, lazy) in zip(batch, plans, strict=True):
                    blocks = [np.asarray(next(done)) for _ in lazy]
                    samples = pool.map(lambda i, b=blocks, x=boxes: self._assemble(i, *self._cut(i, b, x)),
                                       group)
                    for i, arrays in zip(group, samples, strict=True):
                        cache.write(i, arrays)
        return len(todo)

    def _groups(self, todo: Sequence[int]) -> list[list[int]]:
        """``todo`` grouped by acquisitions (Landsat, Sentinel-2, reference) and tile."""
        rpos = self._rpos if self._reference is not None else np.zeros(len(self), np.int64)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in todo:
            key = (int(self._lpos[i]), int(self._spos[i]), int(rpos[i]),
                   int(self._y0[i]) // PREFETCH_TILE, int(self._x0[i]) // PREFETCH_TILE)
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def _group_plan(self, group: list[int]) -> tuple[list[tuple[slice, slice]], list[Any]]:
        """The read boxes of a group (Landsat, Sentinel-2 with halo, reference) and the lazy
        block of each array, in :meth:`_lazy_parts` order."""
        wheres = [self._read_windows(i) for i in group]
        boxes = [_union([w[k] for w in wheres]) for k in range(3)]
        i = group[0]
        lt, st = int(self._lpos[i]), int(self._spos[i])
        lazy = [_window(a, lt, *boxes[0]) for a in self._ldata] + [
            _window(a, st, *boxes[1]) for a in (*self._sdata, *self._gdata)
        ]
        if self._reference is not None:
            lazy += [_window(a, int(self._rpos[i]), *boxes[2]) for a in self._rdata]
        return boxes, lazy

    def _read_windows(self, i: int) -> tuple[tuple[slice, slice], ...]:
        """Sample ``i``'s Landsat, Sentinel-2 (with the sharpening halo) and reference windows."""
        y0, x0, n = int(self._y0[i]), int(self._x0[i]), int(self._size[i])
        ys, xs = slice(y0, y0 + n), slice(x0, x0 + n)
        sys_, sxs = ys, xs
        if self._sharpen is not None:  # read the Sentinel-2 side with the sharpening halo
            h, (sny, snx) = self._sharpen["halo"], self._sharpen["shape"]
            sys_ = slice(max(0, y0 - h), min(sny, y0 + n + h))
            sxs = slice(max(0, x0 - h), min(snx, x0 + n + h))
        oy, ox = self._roff if self._reference is not None else (0, 0)
        return (ys, xs), (sys_, sxs), (slice(y0 + oy, y0 + oy + n), slice(x0 + ox, x0 + ox + n))

    def _cut(self, i: int, blocks: list[np.ndarray], boxes: list[tuple[slice, slice]]
             ) -> tuple[list[np.ndarray], tuple[slice, slice]]:
        """Sample ``i``'s window arrays cut from its group's blocks (as :meth:`_lazy_parts` reads
        them), and the Sentinel-2 read window."""
        wins = self._read_windows(i)
        sources = [0] * len(self._ldata) + [1] * (len(self._sdata) + len(self._gdata))
        sources += [2] * (len(blocks) - len(sources))
        parts = []
        for block, k in zip(blocks, sources, strict=True):
            (ys, xs), (by, bx) = wins[k], boxes[k]
            rows = slice(ys.start - by.start, ys.stop - by.start)
            parts.append(block[rows, xs.start - bx.start : xs.stop - bx.start])
        return parts, wins[1]

    def _scheduler(self) -> str:
        if self.scheduler is not None:
            return self.scheduler
        return "synchronous" if torch.utils.data.get_worker_info() is not None else "threads"

    def _lazy_parts(self, i: int) -> tuple[list[Any], tuple[slice, slice]]:
        """The (lazy) window arrays sample ``i`` needs, and the Sentinel-2 read window."""
        (ys, xs), (sys_, sxs), (tys, txs) = self._read_windows(i)
        lt, st = int(self._lpos[i]), int(self._spos[i])
        parts = [_window(a, lt, ys, xs) for a in self._ldata] + [
            _window(a, st, sys_, sxs) for a in (*self._sdata, *self._gdata)
        ]
        if self._reference is not None:
            parts += [_window(a, int(self._rpos[i]), tys, txs) for a in self._rdata]
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
        if self._reference is not None:
            reference = np.stack(parts[nl + ns :]).astype(np.float32, copy=False)
            out["reference"] = np.nan_to_num(reference, nan=0.0)
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
        h.update(repr((self.input_bands, self.target_bands, self._reference is not None)).encode())
        if self._sharpen is not None:
            plan = self._sharpen
            h.update(repr(("sharpen", plan["bands"], plan["guides"], plan["settings"])).encode())
        h.update(self.rows["landsat_time"].values.tobytes() + self.rows["s2_time"].values.tobytes())
        return h.hexdigest()

    def _open_cache(self) -> PatchCache | None:
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
            if self._reference is not None:
                shapes["reference"] = (len(self.target_bands), size, size)
            self._cache = PatchCache(
                self.cache_path, len(self), shapes, self._fingerprint(), memory=self.in_memory
            )
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


def _union(windows: Sequence[tuple[slice, slice]]) -> tuple[slice, slice]:
    """The bounding box of ``(rows, cols)`` windows."""
    return (slice(min(w[0].start for w in windows), max(w[0].stop for w in windows)),
            slice(min(w[1].start for w in windows), max(w[1].stop for w in windows)))


def _batches(groups: list[list[int]], size: int) -> list[list[list[int]]]:
    """Consecutive groups packed into batches of about ``size`` samples (a group is never split)."""
    out: list[list[list[int]]] = []
    count = size
    for g in groups:
        if count + len(g) > size:
            out.append([])
            count = 0
        out[-1].append(g)
        count += len(g)
    return out


def _tyx(da: xr.DataArray) -> Any:
    """The (time, y, x) dask array of a variable; the DataArray itself when it is not dask-backed."""
    da = da.transpose("time", "y", "x")
    return da.data if da.chunks is not None else da


def _window(a: Any, t: int, ys: slice, xs: slice) -> Any:
    """One time step's window of an array from :func:`_tyx` (lazy when dask-backed)."""
    if isinstance(a, xr.DataArray):
        return a.isel(time=t, y=ys, x=xs).values
    return a[t, ys, xs]


def _split_rows(index: pd.DataFrame, split: Split | None) -> pd.DataFrame:
    """The index rows of ``split`` (every row for ``None``); an empty split is a named error."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, not {split!r}")
    rows = index if split is None else index[index["split"] == split]
    if rows.empty:
        raise EmptySearchError(
            f"the pair index has no {split or ''} windows; lower min_clear, raise max_days, or "
            "use a larger area / more blocks"
        )
    return rows


def _check_bands(ds: xr.Dataset, bands: Sequence[str], what: str) -> None:
    missing = [b for b in (*bands, "clear") if b not in ds]
    if missing:
        raise UnknownBandError(f"the {what} cube lacks {missing}; load it with those bands")


def _time_positions(times: pd.Series, source: xr.Dataset, positions: np.ndarray) -> np.ndarray:
    """The cube time position of each row's acquisition."""
    lookup = position_map(acquisition_times(source)[positions], positions)
    try:
        return np.array([lookup[t] for t in times.values], dtype=np.int64)
    except KeyError as exc:
        raise HarmonizeError(
            f"the index names an acquisition ({exc.args[0]}) the cube lacks; build the index from this cube"
        ) from None


def cache_pairs(dataset: PairDataset, path: str | os.PathLike[str], *, progress: bool = True) -> PairDataset:
    """Compute every sample of ``dataset`` once into the Zarr store ``path``.

    Samples already in the store are skipped, so an interrupted run resumes.

    Parameters
    ----------
    dataset
        The dataset to cache.
    path
        The Zarr store (created, or reused when it was built for the same index).
    progress
        Show a progress bar.

    Returns
    -------
    PairDataset
        A copy of ``dataset`` that reads its samples from the store.
    """
    cached = dataset.with_cache(path)
    cached.prefetch(progress=progress)
    return cached
