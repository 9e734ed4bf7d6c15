"""The fast aligned-grid reader against GDAL's warper (odc-loader's ``rio_read``).

Truth here is GDAL: for every case the fast path must report the same region and the same
no-data pattern as ``rio_read``, nearest-neighbour values exactly, and bilinear/cubic values
within 1 DN on uint16 (GDAL computes pixel positions through its transformer, so a value that is
exactly x.5 may round either way) and within 1e-4 of the data range on float32. Edges follow
GDAL: a destination pixel is written only if its centre falls on a valid source pixel inside the
image; taps off the image or on no data are dropped and the weights renormalised; cubic falls
back to bilinear where its 4 x 4 support is incomplete.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.loader._rio import rio_read
from odc.loader.types import RasterLoadParams, RasterSource

from harmonize import cube as cube_mod
from harmonize import fastread
from harmonize.errors import AssetReadError

CRS = "EPSG:32614"
X0, Y0 = 552000.0, 4321000.0


def _write(path: Path, arr: np.ndarray, res: float, x0: float, y0: float, nodata: float | None, crs: str = CRS) -> str:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[1],
        height=arr.shape[0],
        count=1,
        dtype=arr.dtype,
        crs=crs,
        transform=Affine(res, 0, x0, 0, -res, y0),
        nodata=nodata,
    ) as f:
        f.write(arr, 1)
    return str(path)


def _source(tmp_path: Path, res: float, shape: tuple[int, int], dx: float, dy: float, *, dtype: str = "uint16",
            holes: bool = False, seed: int = 0) -> tuple[str, float | None]:
    rng = np.random.default_rng(seed)
    nodata: float | None = 0 if dtype == "uint16" else float("nan")
    arr = rng.integers(1, 10000, shape).astype(dtype)
    if holes:  # a block of no data inside and a no-data swath edge
        arr[5:9, 3:12] = nodata
        arr[:, -3:] = nodata
    return _write(tmp_path / "src.tif", arr, res, X0 + dx, Y0 + dy, nodata), nodata


def _grid(shape: tuple[int, int] = (60, 60), res: float = 10.0, dx: float = 0.0, dy: float = 0.0) -> GeoBox:
    return GeoBox(shape, Affine(res, 0, X0 + dx, 0, -res, Y0 + dy), CRS)


def _both(uri: str, gbox: GeoBox, kind: str, dtype: str, nodata: float | None):  # noqa: ANN202
    src = RasterSource(uri, band=1)
    cfg = RasterLoadParams(dtype=dtype, fill_value=nodata, resampling=kind)
    slow = rio_read(src, cfg, gbox)
    fast = fastread.read(src, cfg, gbox)
    assert fast is not None, "the fast path should apply to an aligned grid in the same CRS"
    return slow, fast


def _unrounded(uri: str, gbox: GeoBox, kind: str) -> np.ndarray:
    """The fast path's values before rounding to uint16 (float64 output, no-data NaN)."""
    cfg = RasterLoadParams(dtype="float64", resampling=kind)
    result = fastread.read(RasterSource(uri, band=1), cfg, gbox)
    assert result is not None
    return result[1]


def _on_centre(res: float, dx: float, dy: float, shape: tuple[int, int] = (60, 60)) -> np.ndarray:
    """Grid pixels whose centre is exactly on a source pixel centre along y or x.

    There GDAL's cubic kernel checks a 4 x 4 support whose side depends on rounding in its
    coordinate transformer, so next to no data or the edge it may use cubic or bilinear.
    """
    def on(n: int, off: float) -> np.ndarray:
        pos = ((np.arange(n) + 0.5) * 10.0 - off) / res - 0.5
        return np.abs(pos - np.round(pos)) < 1e-9

    return np.add.outer(on(shape[0], -dy), on(shape[1], dx)) > 0


def _assert_matches(slow, fast, kind: str, dtype: str, exact: np.ndarray | None = None,  # noqa: ANN001
                    ambiguous: np.ndarray | None = None) -> None:
    """``exact``: the fast path's unrounded values, where GDAL may round an exact half down;
    ``ambiguous``: pixels left out of the value comparison (see :func:`_on_centre`)."""
    (roi_a, a), (roi_b, b) = slow, fast
    if ambiguous is not None:
        keep = ~ambiguous[roi_a]
        gone = 0 if dtype == "uint16" else np.nan
        a, b = np.where(keep, a, gone).astype(a.dtype), np.where(keep, b, gone).astype(b.dtype)
        exact = None if exact is None else np.where(keep, exact, 0.0)
    assert roi_a == roi_b
    assert a.shape == b.shape and a.dtype == b.dtype
    if dtype == "uint16":
        missing_a, missing_b = a == 0, b == 0
    else:
        missing_a, missing_b = np.isnan(a), np.isnan(b)
    np.testing.assert_array_equal(missing_a, missing_b)
    assert (~missing_a).sum() > 0.3 * a.size, "the case should have plenty of data"
    va, vb = a[~missing_a].astype(float), b[~missing_b].astype(float)
    if kind == "nearest":
        np.testing.assert_array_equal(va, vb)
    elif dtype == "uint16":
        assert np.abs(va - vb).max() <= 1
        assert exact is not None
        halves = np.abs(exact[~missing_a] % 1 - 0.5) < 1e-6
        assert not (va != vb)[~halves].any(), "values off by one that are not exact halves"
    else:
        assert np.abs(va - vb).max() <= 1e-4 * 10000


# (source resolution, source shape, source origin offset dx, dy) against a 10 m, 60 x 60 grid
CASES = {
    "landsat-30m-5m-offset": (30.0, (30, 30), -5.0, 5.0),
    "landsat-30m-aligned": (30.0, (30, 30), 0.0, 0.0),
    "pan-15m-5m-offset": (15.0, (50, 50), -5.0, 5.0),
    "s2-20m": (20.0, (35, 35), 0.0, 0.0),
    "same-grid-fractional-offset": (10.0, (70, 70), -3.0, 4.0),
    "partial-overlap": (30.0, (14, 12), 125.0, -95.0),
}


@pytest.mark.parametrize("kind", ["nearest", "bilinear", "cubic"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("holes", [False, True], ids=["full", "nodata"])
def test_fast_path_equals_gdal(tmp_path: Path, case: str, kind: str, holes: bool) -> None:
    res, shape, dx, dy = CASES[case]
    uri, nodata = _source(tmp_path, res, shape, dx, dy, holes=holes)
    slow, fast = _both(uri, _grid(), kind, "uint16", nodata)
    ambiguous = _on_centre(res, dx, dy) if kind == "cubic" and holes else None
    if ambiguous is not None:
        assert ambiguous.mean() < 0.6  # most pixels are still compared
    _assert_matches(slow, fast, kind, "uint16", _unrounded(uri, _grid(), kind), ambiguous)


@pytest.mark.parametrize("kind", ["nearest", "bilinear", "cubic"])
def test_float32_with_nan_nodata(tmp_path: Path, kind: str) -> None:
    uri, nodata = _source(tmp_path, 30.0, (30, 30), -5.0, 5.0, dtype="float32", holes=True)
    slow, fast = _both(uri, _grid(), kind, "float32", nodata)
    _assert_matches(slow, fast, kind, "float32")


@pytest.mark.parametrize("kind", ["nearest", "bilinear", "cubic"])
def test_shifted_vrt_path(tmp_path: Path, kind: str) -> None:
    """A ``vrt://...?a_gt=`` path (how shift_item moves a scene) is read at the shifted place."""
    uri, nodata = _source(tmp_path, 30.0, (25, 25), 0.0, 0.0, holes=True)
    gt = (X0 + 7.3, 30.0, 0.0, Y0 - 2.1, 0.0, -30.0)
    vrt = f"vrt://{uri}?a_gt={','.join(repr(v) for v in gt)}"
    slow, fast = _both(vrt, _grid(), kind, "uint16", nodata)
    _assert_matches(slow, fast, kind, "uint16", _unrounded(vrt, _grid(), kind))
    _, unshifted = _both(uri, _grid(), kind, "uint16", nodata)[1]
    assert not np.array_equal(unshifted, fast[1])


def test_dst_and_window_of_a_chunk(tmp_path: Path) -> None:
    """Writing into a given ``dst`` on a chunk of the grid (what odc-stac does per dask chunk)."""
    uri, nodata = _source(tmp_path, 30.0, (30, 30), -5.0, 5.0, holes=True)
    chunk = _grid()[20:50, 10:45]
    src = RasterSource(uri, band=1)
    cfg = RasterLoadParams(dtype="uint16", fill_value=nodata, resampling="bilinear")
    roi_a, a = rio_read(src, cfg, chunk)
    dst = np.full(chunk.shape.yx, 7, np.uint16)
    result = fastread.read(src, cfg, chunk, dst=dst)
    assert result is not None
    roi_b, b = result
    assert roi_a == roi_b and np.shares_memory(b, dst)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_axis_weights_are_gdal_rules() -> None:
    """Interior rows are partitions of unity; the first half pixel snaps onto pixel 0."""
    pos = (np.arange(9) + 0.5) / 3  # 30 m -> 10 m
    w = fastread.axis_weights(pos, 3, "cubic")
    assert w.lo == 0 and w.size == 3
    np.testing.assert_allclose(w.linear.sum(axis=1)[:7], 1.0)
    np.testing.assert_allclose(w.linear[0], [1.0, 0.0, 0.0])
    assert w.linear[-1, -1] == pytest.approx(1 - (pos[-1] - 2.5))  # the tap past the edge is dropped
    assert not w.full.any()  # 3 pixels never hold a 4-tap support
    nearest = fastread.axis_weights(np.array([-0.1, 0.0, 2.0 - 1e-12, 2.999, 3.0]), 3, "nearest")
    np.testing.assert_array_equal(nearest.inside, [False, True, True, True, False])
    np.testing.assert_array_equal(nearest.nearest.argmax(axis=1)[1:4], [0, 2, 2])


# ---------------------------------------------------------------------------------------------
# Through the cube's reader


def _reader(uri: str, strict: bool = True) -> cube_mod._Reader:
    return cube_mod._Reader(RasterSource(uri, band=1), None, strict)


def test_reader_takes_fast_path_when_aligned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri, nodata = _source(tmp_path, 30.0, (30, 30), -5.0, 5.0)
    cfg = RasterLoadParams(dtype="uint16", fill_value=nodata, resampling="bilinear")
    expected = rio_read(RasterSource(uri, band=1), cfg, _grid())

    def no_gdal(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("rio_read should not be called on an aligned grid")

    monkeypatch.setattr(cube_mod, "rio_read", no_gdal)
    roi, pix = _reader(uri).read(cfg, _grid())
    assert roi == expected[0] and np.abs(pix.astype(int) - expected[1].astype(int)).max() <= 1


def test_reader_uses_gdal_for_reprojection_and_when_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(1, 10000, (40, 40)).astype("uint16")
    # the same place in UTM zone 15: a rotated grid relative to zone 14
    other = _write(tmp_path / "utm15.tif", arr, 30.0, 34000.0, 4335000.0, 0, crs="EPSG:32615")
    aligned, _ = _source(tmp_path, 30.0, (30, 30), -5.0, 5.0)
    cfg = RasterLoadParams(dtype="uint16", fill_value=0, resampling="bilinear")
    assert fastread.read(RasterSource(other, band=1), cfg, _grid()) is None

    calls: list[str] = []
    real = cube_mod.rio_read

    def counting(src, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(src.uri)
        return real(src, *args, **kwargs)

    monkeypatch.setattr(cube_mod, "rio_read", counting)
    _reader(other).read(cfg, _grid())
    _reader(aligned).read(cfg, _grid())
    assert calls == [other]
    with fastread.disabled():
        assert not fastread.enabled()
        _reader(aligned).read(cfg, _grid())
    assert fastread.enabled() and calls == [other, aligned]
    # kernels the fast path does not implement go to GDAL too
    assert fastread.read(RasterSource(aligned, band=1), cfg.patch(resampling="average"), _grid()) is None


def test_reader_names_the_href_strict_and_lenient(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.tif")
    cfg = RasterLoadParams(dtype="uint16", fill_value=0, resampling="bilinear")
    with pytest.raises(AssetReadError, match="nope.tif"):
        _reader(missing).read(cfg, _grid())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        roi, pix = _reader(f"vrt://{missing}?a_gt=0,30,0,0,0,-30", strict=False).read(cfg, _grid())
    assert pix.size == 0
    assert any(issubclass(w.category, cube_mod.AssetReadWarning) and "nope.tif" in str(w.message) for w in caught)
