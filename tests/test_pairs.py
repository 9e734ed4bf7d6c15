"""Pair matching, the lazy patch index, the spatial split and the torch Dataset."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections import Counter

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from harmonize.errors import EmptySearchError, HarmonizeError
from harmonize.pairs import (
    INPUT_BANDS,
    SPLITS,
    TARGET_BANDS,
    PairConfig,
    PairDataset,
    block_splits,
    build_pair_index,
    cache_pairs,
    datasets_from_config,
    match_pairs,
)
from harmonize.pairs.augment import dihedral as _augment

VARS = (*INPUT_BANDS, "clear")


# --------------------------------------------------------------------------------------------
# a synthetic dask cube whose every chunk read is counted


class Reads:
    """Thread-safe record of (variable, time, y-chunk, x-chunk) reads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chunks: Counter[tuple[str, int, int, int]] = Counter()

    def add(self, key: tuple[str, int, int, int]) -> None:
        with self.lock:
            self.chunks[key] += 1

    def clear(self) -> None:
        with self.lock:
            self.chunks.clear()

    def of(self, var: str | None = None) -> set[tuple[str, int, int, int]]:
        return {k for k in self.chunks if var is None or k[0] == var}


def value(k: int, t: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Known reflectance of band number ``k`` at time index ``t``, pixel (y, x)."""
    return (0.1 * k + 0.01 * t + 1e-4 * y + 1e-6 * x).astype(np.float32)


def make_cube(
    ltimes: list[pd.Timestamp],
    stimes: list[pd.Timestamp],
    ny: int,
    nx: int,
    *,
    chunk: int = 32,
    clear: np.ndarray | None = None,
    reads: Reads | None = None,
    s2_offset: float = 0.0,
) -> xr.Dataset:
    """A combined cube like load_cube's, each chunk produced (and counted) on demand.

    ``clear`` is a (time, y, x) bool array in the cube's time order (default all clear). Landsat
    pan is NaN at Sentinel-2 times; ``s2_offset`` is added to Sentinel-2 reflectance.
    """
    times = pd.DatetimeIndex(list(ltimes) + list(stimes))
    sensor = np.array(["landsat"] * len(ltimes) + ["sentinel-2"] * len(stimes))
    order = np.argsort(times.values, kind="stable")
    times, sensor = times[order], sensor[order]
    nt = len(times)
    if clear is None:
        clear = np.ones((nt, ny, nx), bool)

    def block(name: str, k: int, block_info=None):
        info = block_info[None]
        (t0, t1), (y0, y1), (x0, x1) = info["array-location"]
        if reads is not None:
            loc = info["chunk-location"]
            reads.add((name, loc[0], loc[1], loc[2]))
        if name == "clear":
            return clear[t0:t1, y0:y1, x0:x1].copy()
        t, y, x = np.meshgrid(np.arange(t0, t1), np.arange(y0, y1), np.arange(x0, x1), indexing="ij")
        out = value(k, t, y, x)
        s2 = sensor[t0:t1] == "sentinel-2"
        if name == "pan":
            out[s2] = np.nan
        else:
            out[s2] += np.float32(s2_offset)
        return out

    chunks = ((1,) * nt, _chunks(ny, chunk), _chunks(nx, chunk))
    data = {}
    for k, name in enumerate(VARS):
        dtype = bool if name == "clear" else np.float32
        arr = da.map_blocks(
            block, name, k, chunks=chunks, dtype=dtype, meta=np.empty((0, 0, 0), dtype), name=f"cube-{name}"
        )
        data[name] = (("time", "y", "x"), arr)
    return xr.Dataset(
        data,
        coords={
            "time": times.values,
            "sensor": ("time", sensor),
            "y": 1000.0 - 10.0 * np.arange(ny) - 5.0,
            "x": 500.0 + 10.0 * np.arange(nx) + 5.0,
        },
    )


def _chunks(n: int, c: int) -> tuple[int, ...]:
    return (c,) * (n // c) + ((n % c,) if n % c else ())


def days(*d: float, hour: float = 10.5) -> list[pd.Timestamp]:
    base = pd.Timestamp("2024-03-01")
    return [base + pd.Timedelta(days=x, minutes=round(hour * 60)) for x in d]


# --------------------------------------------------------------------------------------------
# matching


def test_match_same_day_every_40_days():
    landsat = days(*range(0, 161, 8), hour=10.3)
    s2 = days(*range(0, 161, 5), hour=10.6)
    pairs = match_pairs((landsat, s2), max_days=0)
    expected = [t for t in landsat if (t - landsat[0]).days % 40 == 0]
    assert list(pairs["landsat_time"]) == expected  # days 0, 40, 80, 120, 160
    assert (pairs["s2_time"] - pairs["landsat_time"] == pd.Timedelta(hours=0.3)).all()
    np.testing.assert_allclose(pairs["dt_days"], 0.3 / 24)


def test_match_within_days_takes_the_nearest():
    landsat = days(*range(0, 161, 8), hour=10.3)
    s2 = days(*range(0, 161, 5), hour=10.6)
    pairs = match_pairs((landsat, s2), max_days=2)
    # every Landsat day is within 2 days of a multiple of 5: one pair each, the nearest one
    assert list(pairs["landsat_time"]) == landsat
    for row in pairs.itertuples():
        gaps = [abs((s - row.landsat_time) / pd.Timedelta(days=1)) for s in s2]
        assert abs(row.dt_days) == pytest.approx(min(gaps))
        assert row.s2_time == s2[int(np.argmin(gaps))]
    assert pairs["dt_days"].abs().max() <= 2.0 + 1 / 24
    # with every match kept, Landsat days 2 or 3 (mod 5) see two S2 days within 3 days
    allpairs = match_pairs((landsat, s2), max_days=3, nearest_only=False)
    per = allpairs.groupby("landsat_time").size()
    for t, n in per.items():
        d = (t - landsat[0]).days
        assert n == (2 if d % 5 in (2, 3) else 1), d


def test_match_uses_solar_days_at_the_cube_longitude():
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    # 23:50 and 00:10 UTC are different UTC days but the same solar day at 150 E
    landsat = [pd.Timestamp("2024-03-01T23:50")]
    s2 = [pd.Timestamp("2024-03-02T00:10")]
    assert match_pairs((landsat, s2), max_days=0).empty
    gbox = GeoBox.from_bbox((200_000, 6_100_000, 200_640, 6_100_640), crs="EPSG:32656", resolution=10)
    coords = xr_coords(gbox)
    cube = xr.Dataset(
        coords={
            **coords,
            "time": np.array(landsat + s2, "datetime64[ns]"),
            "sensor": ("time", ["landsat", "sentinel-2"]),
        }
    )
    lon = cube.odc.geobox.extent.centroid.to_crs("EPSG:4326").points[0][0]
    assert 145 < lon < 155
    pairs = match_pairs(cube, max_days=0)
    assert len(pairs) == 1 and pairs["dt_days"].iloc[0] == pytest.approx(20 / 1440)


# --------------------------------------------------------------------------------------------
# the index


def blob(ny: int, nx: int, cy: int, cx: int, r: int) -> np.ndarray:
    y, x = np.mgrid[:ny, :nx]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def test_index_clear_fractions_match_numpy():
    ny, nx, P, S = 160, 224, 64, 32
    landsat = days(0, 16, hour=10.3)
    s2 = days(0, 5, 16, hour=10.6)
    cube_times = sorted(landsat + s2)
    clear = np.ones((len(cube_times), ny, nx), bool)
    tl0, ts0 = cube_times.index(landsat[0]), cube_times.index(s2[0])
    clear[tl0] &= ~blob(ny, nx, 40, 60, 18)  # a cloud in the day-0 Landsat scene
    clear[ts0] &= ~blob(ny, nx, 120, 170, 12)  # and another in the day-0 Sentinel-2 scene
    clear[ts0, :3, :] = False  # a nodata strip
    cube = make_cube(landsat, s2, ny, nx, clear=clear)
    config = PairConfig(
        patch_size=P, stride=S, block_size=P, train_fraction=1, val_fraction=0, test_fraction=0
    )
    index = build_pair_index(cube, config)

    pos = {t: i for i, t in enumerate(cube_times)}
    expected = []
    for lt, st in ((landsat[0], s2[0]), (landsat[1], s2[2])):
        for y0 in range(0, ny - P + 1, S):
            for x0 in range(0, nx - P + 1, S):
                fl = clear[pos[lt], y0 : y0 + P, x0 : x0 + P].mean()
                fs = clear[pos[st], y0 : y0 + P, x0 : x0 + P].mean()
                if fl >= 0.99 and fs >= 0.99:
                    expected.append((lt, st, y0, x0, fl, fs))
    got = list(
        index[["landsat_time", "s2_time", "y0", "x0", "clear_landsat", "clear_s2"]].itertuples(index=False)
    )
    assert [g[:4] for g in got] == [e[:4] for e in expected]
    np.testing.assert_allclose([g[4:] for g in got], [e[4:] for e in expected])
    # the clouds removed windows of the first pair only; the second pair keeps every window
    n_windows = ((ny - P) // S + 1) * ((nx - P) // S + 1)
    per_pair = index.groupby("landsat_time").size()
    assert per_pair[landsat[1]] == n_windows
    assert 0 < per_pair[landsat[0]] < n_windows
    first = index[index["landsat_time"] == landsat[0]]
    for y0, x0 in zip(first["y0"], first["x0"], strict=True):
        assert not blob(ny, nx, 40, 60, 10)[y0 : y0 + P, x0 : x0 + P].any()
        assert y0 > 0  # the nodata strip
    assert list(index["pair_id"]) == list(range(len(index)))
    np.testing.assert_allclose(index["dt_days"], 0.3 / 24)


def test_index_reads_only_clear_chunks_of_paired_times():
    reads = Reads()
    landsat = days(0, 8, 16, hour=10.3)  # day 8 has no same-day S2
    s2 = days(0, 5, 10, 16, hour=10.6)
    cube = make_cube(landsat, s2, 128, 128, reads=reads)
    index = build_pair_index(cube, PairConfig(patch_size=64, stride=32, block_size=64))
    assert set(index["landsat_time"]) == {landsat[0], landsat[2]}
    assert reads.of() == reads.of("clear"), "a reflectance chunk was read while building the index"
    times = list(cube["time"].values)
    paired = {times.index(np.datetime64(t)) for t in (landsat[0], landsat[2], s2[0], s2[3])}
    assert {k[1] for k in reads.of()} == paired
    assert all(n == 1 for n in reads.chunks.values())  # one compute, no chunk read twice


def test_spatial_split_has_no_overlap_and_covers_each_split():
    ny, nx, P, S, B = 512, 384, 64, 32, 128
    cube = make_cube(days(0), days(0), ny, nx, chunk=128)
    config = PairConfig(
        patch_size=P, stride=S, block_size=B, train_fraction=0.6, val_fraction=0.2, test_fraction=0.2, seed=3
    )
    index = build_pair_index(cube, config)
    blocks = block_splits(ny, nx, config)
    assert blocks.shape == (4, 3)
    assert {s: int((blocks == s).sum()) for s in SPLITS} == {"train": 7, "val": 3, "test": 2}
    painted = {}
    for s in SPLITS:
        sel = index[index["split"] == s]
        assert len(sel) > 0
        m = np.zeros((ny, nx), bool)
        for y0, x0 in zip(sel["y0"], sel["x0"], strict=True):
            m[y0 : y0 + P, x0 : x0 + P] = True
        painted[s] = m
        # the windows of a split tile exactly its blocks
        np.testing.assert_array_equal(m, np.kron(blocks == s, np.ones((B, B), bool))[:ny, :nx])
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not (painted[a] & painted[b]).any(), (a, b)
    # deterministic by seed; another seed deals the blocks differently
    np.testing.assert_array_equal(block_splits(ny, nx, config), blocks)
    assert (block_splits(ny, nx, config.model_copy(update={"seed": 4})) != blocks).any()
    with pytest.raises(ValueError, match="multiple of patch_size"):
        PairConfig(patch_size=64, stride=32, block_size=96)


# --------------------------------------------------------------------------------------------
# the dataset


def chunks_touching(t: int, y0: int, x0: int, size: int, chunk: int) -> set[tuple[int, int, int]]:
    return {
        (t, cy, cx)
        for cy in range(y0 // chunk, (y0 + size - 1) // chunk + 1)
        for cx in range(x0 // chunk, (x0 + size - 1) // chunk + 1)
    }


def test_dataset_computes_only_the_patch():
    reads = Reads()
    ny, nx, chunk = 192, 192, 40
    landsat, s2 = days(0, 16, hour=10.3), days(0, 5, 16, hour=10.6)
    cube = make_cube(landsat, s2, ny, nx, chunk=chunk, reads=reads, s2_offset=0.5)
    config = PairConfig(
        patch_size=64, stride=32, block_size=64, train_fraction=1, val_fraction=0, test_fraction=0
    )
    index = build_pair_index(cube, config)
    ds = PairDataset(cube, index, "train", augment=False)
    times = list(cube["time"].values)
    sensor = list(cube["sensor"].values)

    i = int(np.flatnonzero((ds.rows["y0"] == 32) & (ds.rows["x0"] == 96))[0])
    row = ds.rows.iloc[i]
    reads.clear()
    sample = ds[i]
    tl, ts = times.index(np.datetime64(row.landsat_time)), times.index(np.datetime64(row.s2_time))
    want_l = chunks_touching(tl, row.y0, row.x0, 64, chunk)
    want_s = chunks_touching(ts, row.y0, row.x0, 64, chunk)
    assert len(want_l) == 6  # rows 32-95 span 3 chunks of 40, columns 96-159 span 2
    for var in INPUT_BANDS:
        assert {k[1:] for k in reads.of(var)} == (want_l | want_s if var in TARGET_BANDS else want_l), var
    assert {k[1:] for k in reads.of("clear")} == want_l | want_s

    # the values are the cube's own pixels
    y, x = np.mgrid[row.y0 : row.y0 + 64, row.x0 : row.x0 + 64]
    assert sample["input"].shape == (7, 64, 64) and sample["input"].dtype == torch.float32
    assert sample["target"].shape == (6, 64, 64) and sample["valid"].dtype == torch.bool
    for k in range(7):
        np.testing.assert_array_equal(sample["input"][k].numpy(), value(k, np.full_like(y, tl), y, x))
    for k in range(6):
        want = value(k, np.full_like(y, ts), y, x) + np.float32(0.5)
        np.testing.assert_array_equal(sample["target"][k].numpy(), want)
    assert sample["valid"].all() and int(sample["pair_id"]) == row.pair_id
    assert sensor[tl] == "landsat" and sensor[ts] == "sentinel-2"

    # a DataLoader batch reads only the chunks of its patches
    reads.clear()
    loader = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=False, num_workers=0)
    batch = next(iter(loader))
    assert batch["input"].shape == (3, 7, 64, 64)
    want = set()
    for j in range(3):
        r = ds.rows.iloc[j]
        for t in (times.index(np.datetime64(r.landsat_time)), times.index(np.datetime64(r.s2_time))):
            want |= chunks_touching(t, r.y0, r.x0, 64, chunk)
    assert {k[1:] for k in reads.of("clear")} == want
    total_chunks = len(times) * (ny // chunk) * (nx // chunk)
    assert len(reads.of("red")) < total_chunks / 4


def test_valid_masks_clouds_and_nonfinite_and_nan_becomes_zero():
    ny = nx = 64
    landsat, s2 = days(0), days(0)
    clear = np.ones((2, ny, nx), bool)
    clear[0, 10:20, 10:20] = False  # Landsat cloud (ignored by the index at min_clear 0.9)
    clear[1, 40:45, 30:35] = False  # S2 shadow
    cube = make_cube(landsat, s2, ny, nx).copy()
    nanmask = np.zeros((2, ny, nx), bool)
    nanmask[1, 50, 50] = True
    cube["red"] = cube["red"].where(~xr.DataArray(nanmask, dims=("time", "y", "x")))
    cube["clear"] = (("time", "y", "x"), da.from_array(clear, chunks=(1, 32, 32)))
    config = PairConfig(
        patch_size=64,
        stride=32,
        block_size=64,
        min_clear=0.9,
        train_fraction=1,
        val_fraction=0,
        test_fraction=0,
    )
    index = build_pair_index(cube, config)
    assert len(index) == 1
    sample = PairDataset(cube, index, augment=False)[0]
    expected = clear[0] & clear[1] & ~nanmask[1]
    np.testing.assert_array_equal(sample["valid"].numpy(), expected)
    assert sample["target"][2, 50, 50] == 0.0 and torch.isfinite(sample["target"]).all()


def test_augmentation_keeps_input_target_valid_and_reference_aligned():
    ny = nx = 64
    landsat, s2 = days(0), days(0)
    clear = np.ones((2, ny, nx), bool)
    clear[0, 5:9, 40:50] = False  # asymmetric, so every transform moves it differently
    cube = make_cube(landsat, s2, ny, nx, clear=clear, s2_offset=1.0)
    # a reference on a larger grid with daily times, holding the S2 values minus 1
    y, x = np.mgrid[: ny + 10, : nx + 10]
    ycoord = 1000.0 - 10.0 * np.arange(-4, ny + 6) - 5.0
    xcoord = 500.0 + 10.0 * np.arange(-6, nx + 4) + 5.0
    tdays = pd.date_range("2024-02-28", periods=5, freq="D")
    truth = xr.Dataset(
        {
            b: (
                ("time", "y", "x"),
                np.stack([value(k, np.full_like(y, 1), y - 4, x - 6) + np.float32(d) for d in range(5)]),
            )
            for k, b in enumerate(TARGET_BANDS)
        },
        coords={"time": tdays, "y": ycoord, "x": xcoord},
    )
    config = PairConfig(
        patch_size=64,
        stride=32,
        block_size=64,
        min_clear=0.9,
        train_fraction=1,
        val_fraction=0,
        test_fraction=0,
    )
    index = build_pair_index(cube, config)
    ds = PairDataset(cube, index, "train", reference=truth)
    assert ds.augment
    raw = ds.load(0)
    # the reference is selected at the S2 day (2024-03-01 = index 2) on the cube's pixels
    np.testing.assert_allclose(raw["reference"], raw["target"] - 1.0 + 2.0, atol=1e-6)

    ops = [_augment(raw, op) for op in range(8)]
    assert len({o["input"].tobytes() for o in ops}) == 8
    torch.manual_seed(0)
    seen = set()
    for _ in range(24):
        s = ds[0]
        match = [op for op in range(8) if np.array_equal(ops[op]["input"], s["input"].numpy())]
        assert len(match) == 1
        o = ops[match[0]]
        seen.add(match[0])
        np.testing.assert_array_equal(s["target"].numpy(), o["target"])
        np.testing.assert_array_equal(s["valid"].numpy(), o["valid"])
        np.testing.assert_array_equal(s["reference"].numpy(), o["reference"])
        # the pixelwise relations survive the transform
        # (S2 is time index 1: +0.01, and carries the +1 offset)
        np.testing.assert_allclose(s["target"].numpy() - s["input"][:6].numpy(), 1.01, atol=1e-5)
        # the Landsat cloud moved with the pixels: valid is false exactly where it went
        cloud = np.zeros((ny, nx), bool)
        cloud[5:9, 40:50] = True
        np.testing.assert_array_equal(~s["valid"].numpy(), _augment({"m": cloud}, match[0])["m"])
    assert len(seen) >= 5
    assert not PairDataset(cube, index, "train", augment=False).augment


def test_zarr_cache_round_trip(tmp_path):
    reads = Reads()
    landsat, s2 = days(0, 16), days(0, 16)
    cube = make_cube(landsat, s2, 96, 96, reads=reads)
    config = PairConfig(
        patch_size=64, stride=32, block_size=64, train_fraction=1, val_fraction=0, test_fraction=0
    )
    index = build_pair_index(cube, config)
    plain = PairDataset(cube, index, augment=False)
    expected = [plain.load(i) for i in range(len(plain))]
    cached = cache_pairs(plain, tmp_path / "pairs.zarr", progress=False)
    reads.clear()
    # a fresh dataset on the same store reads every sample without touching the cube
    again = PairDataset(cube, index, augment=False, cache=tmp_path / "pairs.zarr")
    for a, i in zip(expected, range(len(again)), strict=True):
        b = again[i]
        for k in ("input", "target", "valid"):
            np.testing.assert_array_equal(a[k], b[k].numpy())
    assert reads.of() == set(), "the cached dataset read the cube"
    assert len(cached) == len(plain)
    # a store made for another index is rebuilt, not misread
    fewer = index.iloc[1:]
    other = PairDataset(cube, fewer, augment=False, cache=tmp_path / "pairs.zarr")
    np.testing.assert_array_equal(other[0]["input"].numpy(), plain.load(1)["input"])


def test_prefetch_reads_each_pair_once_and_resumes(tmp_path, monkeypatch):
    import harmonize.pairs.dataset as pairs_mod

    cube = make_cube(days(0, 16), days(0, 16), 96, 96)
    config = PairConfig(
        patch_size=32, stride=32, block_size=32, train_fraction=1, val_fraction=0, test_fraction=0
    )
    index = build_pair_index(cube, config)
    plain = PairDataset(cube, index, augment=False)
    n = len(plain)
    assert n >= 6
    calls = []
    compute = pairs_mod.dask.compute
    monkeypatch.setattr(pairs_mod.dask, "compute", lambda *a, **k: calls.append(len(a)) or compute(*a, **k))
    ds = PairDataset(cube, index, augment=False, cache=tmp_path / "p.zarr")
    ds.load(0)  # one sample already cached: prefetch does the rest
    calls.clear()
    assert ds.prefetch(batch_size=4) == n - 1
    # a pair's windows (more than 4 of them: never split) are one computation of one block per
    # array (7 Landsat bands + clear, 6 Sentinel-2 bands + clear), not one per window
    pairs = index[["landsat_time", "s2_time"]].drop_duplicates()
    assert len(pairs) >= 2 and index.groupby(["landsat_time", "s2_time"]).size().min() > 4
    assert calls == [8 + 7] * len(pairs)
    assert ds.prefetch() == 0  # nothing left
    monkeypatch.setattr(pairs_mod.dask, "compute", compute)
    for i in range(n):
        a, b = plain.load(i), ds.load(i)
        for k in ("input", "target", "valid"):
            np.testing.assert_array_equal(a[k], b[k])
    assert PairDataset(cube, index, augment=False).prefetch() == 0  # no cache: nothing to fill


def test_in_memory_cache_serves_the_stored_samples_without_the_store(tmp_path):
    cube = make_cube(days(0, 16), days(0, 16), 96, 96)
    config = PairConfig(
        patch_size=32, stride=32, block_size=32, train_fraction=1, val_fraction=0, test_fraction=0
    )
    index = build_pair_index(cube, config)
    stored = PairDataset(cube, index, augment=False, cache=tmp_path / "a.zarr")
    held = PairDataset(cube, index, augment=False, cache=tmp_path / "b.zarr", in_memory=True)
    assert held.prefetch() == len(held) and stored.prefetch() == len(stored)
    # a dataset opened on a filled store keeps what it reads
    reread = PairDataset(cube, index, augment=False, cache=tmp_path / "a.zarr", in_memory=True)
    first = [reread.load(i) for i in range(len(reread))]
    for p in ("a.zarr", "b.zarr"):  # later reads never touch a store: gone, they still serve
        shutil.rmtree(tmp_path / p)
    for i in range(len(held)):
        want = PairDataset(cube, index, augment=False).load(i)
        for got in (held.load(i), reread.load(i), first[i]):
            for k in ("input", "target", "valid"):
                assert got[k].dtype == want[k].dtype
                np.testing.assert_array_equal(got[k], want[k])
    held.load(0)["input"][:] = -1.0  # a caller's changes stay its own
    assert (held.load(0)["input"] != -1.0).any()


def test_cache_and_workers(tmp_path):
    landsat, s2 = days(0), days(0)
    cube = make_cube(landsat, s2, 96, 96)
    config = PairConfig(
        patch_size=32, stride=32, block_size=32, train_fraction=1, val_fraction=0, test_fraction=0
    )
    index = build_pair_index(cube, config)
    ds = PairDataset(cube, index, augment=False, cache=tmp_path / "c.zarr")
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    first = torch.cat([b["input"] for b in loader])
    second = torch.cat([b["input"] for b in loader])  # read back from the store the workers wrote
    assert first.shape == (9, 7, 32, 32)
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(
        first[4], torch.from_numpy(PairDataset(cube, index, augment=False).load(4)["input"])
    )


def test_empty_split_is_a_named_error():
    cube = make_cube(days(0), days(0), 64, 64)
    config = PairConfig(patch_size=64, stride=32, block_size=64)
    index = build_pair_index(cube, config)
    assert set(index["split"]) == {"train"}  # one block: it goes to the largest split
    with pytest.raises(EmptySearchError, match="no test windows"):
        PairDataset(cube, index, "test")


# --------------------------------------------------------------------------------------------
# integration: the simulated world through load_cube


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    """The shared tiny world when conftest provides one, else a private tiny world."""
    pytest.importorskip("harmonize.cube", reason="harmonize.cube.load_cube has not landed yet")
    from harmonize.world import WorldConfig, create_world, open_world

    try:
        w = request.getfixturevalue("tiny_world")
    except pytest.FixtureLookupError:
        w = create_world(tmp_path_factory.mktemp("pairs-world"), WorldConfig.tiny(), progress=False)
    return w if hasattr(w, "items") else open_world(w)


def test_tiny_world_patches_are_the_cubes_pixels(world):
    import pystac

    from harmonize.cube import load_cube

    items = [pystac.Item.from_dict(d) for d in world.items()]
    cube = load_cube(items, geobox=world.geobox, chunks={"time": 1, "y": 128, "x": 128})
    config = PairConfig(
        max_days=2, min_clear=0.0, patch_size=64, stride=32, block_size=64,
        train_fraction=1, val_fraction=0, test_fraction=0,
    )  # fmt: skip
    index = build_pair_index(cube, config)  # every window of every pair, clear or not
    pairs = match_pairs(cube, max_days=2)
    assert len(index) == len(pairs) * 9
    # the index's fractions are the cube's clear masks averaged over each window
    keys = list(zip(cube.time.values, cube.sensor.values, strict=True))
    needed = sorted({keys.index((np.datetime64(t), "landsat")) for t in pairs["landsat_time"]}
                    | {keys.index((np.datetime64(t), "sentinel-2")) for t in pairs["s2_time"]})  # fmt: skip
    clear = dict(zip(needed, cube["clear"].isel(time=needed).values, strict=True))
    pos = {k: i for i, k in enumerate(keys)}
    for r in index.itertuples():
        for t, sensor, frac in (
            (r.landsat_time, "landsat", r.clear_landsat),
            (r.s2_time, "sentinel-2", r.clear_s2),
        ):
            m = clear[pos[(np.datetime64(t), sensor)]][r.y0 : r.y0 + 64, r.x0 : r.x0 + 64]
            assert frac == pytest.approx(m.mean())
    ds = PairDataset(cube, index, "train", augment=False, reference=world.truth)
    best = int(np.argmax(np.minimum(ds.rows["clear_landsat"], ds.rows["clear_s2"])))
    row = ds.rows.iloc[best]
    sample = ds[best]
    win = cube.isel(y=slice(row.y0, row.y0 + 64), x=slice(row.x0, row.x0 + 64))
    ls = win.isel(time=int(np.flatnonzero((cube.time == row.landsat_time) & (cube.sensor == "landsat"))[0]))
    s2 = win.isel(time=int(np.flatnonzero((cube.time == row.s2_time) & (cube.sensor == "sentinel-2"))[0]))
    ls, s2 = ls.compute(), s2.compute()
    x = np.stack([ls[b].values for b in INPUT_BANDS])
    y = np.stack([s2[b].values for b in TARGET_BANDS])
    valid = ls["clear"].values & s2["clear"].values & np.isfinite(x).all(0) & np.isfinite(y).all(0)
    np.testing.assert_array_equal(sample["valid"].numpy(), valid)
    np.testing.assert_array_equal(sample["input"].numpy(), np.nan_to_num(x))
    np.testing.assert_array_equal(sample["target"].numpy(), np.nan_to_num(y))
    assert row.clear_s2 == pytest.approx(s2["clear"].values.mean())
    assert row.clear_landsat == pytest.approx(ls["clear"].values.mean())
    assert valid.sum() > 0
    # truth of the S2 date, on the same pixels: the S2 observation is truth plus sensor effects
    day = pd.Timestamp(row.s2_time).normalize()
    t = world.truth.sel(time=day, y=win.y, x=win.x)
    truth = np.stack([t[b].values for b in TARGET_BANDS]).astype(np.float32)
    np.testing.assert_allclose(sample["reference"].numpy(), truth, rtol=1e-6)
    err = np.abs(sample["target"].numpy() - truth)[:, valid]
    assert np.median(err) < 0.02, np.median(err)
    # the factory of `harmonize train` serves the same world
    from types import SimpleNamespace

    train, val = datasets_from_config(
        SimpleNamespace(dataset={"source": str(world.root), "chunks": {"time": 1, "y": 128, "x": 128},
                                 "pairs": config.model_dump()})
    )  # fmt: skip
    assert val is None and len(train) == len(ds) and train.augment
    np.testing.assert_array_equal(train.load(best)["target"], sample["target"].numpy())


def test_factory_derives_the_grid_and_serves_an_explicit_reference(world):
    """No world is opened: the grid comes from the Sentinel-2 footprints, the reference from a path."""
    import pystac

    from harmonize.cube import load_cube

    pairs = {"max_days": 2, "min_clear": 0.0, "patch_size": 32, "stride": 32, "block_size": 32,
             "train_fraction": 0.5, "val_fraction": 0.5, "test_fraction": 0.0}  # fmt: skip
    params = {"source": str(world.root), "chunks": {"time": 1, "y": 64, "x": 64}, "pairs": pairs}
    train, val = datasets_from_config({**params, "reference": str(world.root / "truth.zarr")})
    assert "reference" not in train.load(0) and val is not None
    items = [pystac.Item.from_dict(d) for d in world.items()]
    cube = load_cube(items, geobox=world.geobox, chunks={"time": 1, "y": 64, "x": 64})
    index = build_pair_index(cube, PairConfig(**pairs))
    want = PairDataset(cube, index, "val", reference=world.truth)
    assert len(val) == len(want)
    got, expected = val.load(len(val) - 1), want.load(len(want) - 1)
    for key in ("input", "target", "valid", "reference"):
        np.testing.assert_array_equal(got[key], expected[key])
    with pytest.raises(HarmonizeError, match="dataset.reference"):
        datasets_from_config({**params, "truth": True})


def test_building_an_index_imports_no_torch():
    code = (
        "import sys; import numpy as np, pandas as pd, xarray as xr;"
        "import harmonize.pairs as hp;"
        "t = pd.to_datetime(['2024-03-01T10:30', '2024-03-01T10:40']).values;"
        "ds = xr.Dataset({'clear': (('time', 'y', 'x'), np.ones((2, 64, 64), bool))},"
        " coords={'time': t, 'sensor': ('time', ['landsat', 'sentinel-2'])});"
        "cfg = hp.PairConfig(patch_size=32, stride=32, block_size=32);"
        "index = hp.build_pair_index(ds, cfg);"
        "assert len(index) == 4, index;"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_sharpened_targets_are_the_sharpened_cubes_pixels(world):
    """``sharpen_target`` serves each patch of ``sharpen_20m(cube)`` (the patch read with a halo)."""
    import pystac

    from harmonize.cube import load_cube
    from harmonize.sharpen import SHARPEN_BANDS, sharpen_20m

    items = [pystac.Item.from_dict(d) for d in world.items()]
    cube = load_cube(items, geobox=world.geobox, chunks={"time": 1, "y": 64, "x": 64})
    config = PairConfig(
        max_days=2, min_clear=0.0, patch_size=32, stride=32, block_size=64,
        train_fraction=1, val_fraction=0, test_fraction=0, sharpen_target=True,
    )  # fmt: skip
    index = build_pair_index(cube, config)
    assert index.attrs["config"]["sharpen_target"] is True
    ds = PairDataset(cube, index, "train", augment=False)  # the index's config turns it on
    plain = PairDataset(cube, index, "train", augment=False, sharpen_target=False)
    assert ds.sharpen_target and not plain.sharpen_target
    assert ds._fingerprint() != plain._fingerprint()  # a cache of raw targets is not reused
    sharp = sharpen_20m(cube).compute()
    rows = ds.rows
    # a corner window (the halo is clipped by the cube's edge) and an interior one
    picks = [
        int(np.flatnonzero((rows.y0 == 0) & (rows.x0 == 0))[0]),
        int(np.flatnonzero((rows.y0 == 32) & (rows.x0 == 64))[0]),
    ]
    for i in picks:
        r = rows.iloc[i]
        t = int(np.flatnonzero((cube.time == r.s2_time) & (cube.sensor == "sentinel-2"))[0])
        win = sharp.isel(time=t, y=slice(r.y0, r.y0 + 32), x=slice(r.x0, r.x0 + 32))
        got, raw = ds.load(i)["target"], plain.load(i)["target"]
        for k, b in enumerate(TARGET_BANDS):
            want = np.nan_to_num(win[b].values)
            if b in SHARPEN_BANDS:
                np.testing.assert_allclose(got[k], want, rtol=0, atol=1e-6)
                assert not np.allclose(got[k], raw[k])
            else:
                np.testing.assert_array_equal(got[k], raw[k])
