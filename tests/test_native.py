"""Landsat stored at native resolution (30 m bands and ``clear``, 15 m pan) and its lazy 10 m view.

Truth used here: the ingest that stores Landsat resampled to 10 m (``native: false``, what every
stage read before) is the reference; the native store's view must give the same cube (grid,
coordinates and shifts, Sentinel-2 bit for bit) and the same Landsat pixels within the
tolerance of one more bilinear resampling, with the co-registration shift applied by the view
(a wrong sign or a forgotten shift moves edges by ~25 m and breaks the tolerance), and hold at
most a quarter of the bytes.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox

from harmonize.world import WorldConfig, create_world
from pipelines.core.ledger import Ledger
from pipelines.core.native import PAN_DIMS, is_native, native_grids
from pipelines.core.stores import open_cube
from pipelines.stages.ingest import IngestConfig, ingest

END = dt.date(2023, 5, 16)
REFLECTANCE = ("blue", "green", "red", "nir", "swir16", "swir22")


@pytest.fixture(scope="module")
def short_world(tmp_path_factory):
    """Two weeks of the tiny world: two Landsat scenes, one shifted by ~25 m (co-registered)."""
    return create_world(
        tmp_path_factory.mktemp("native-world") / "w", WorldConfig.tiny(end=END), progress=False
    )


@pytest.fixture(scope="module")
def both(short_world, tmp_path_factory):
    """The world ingested with Landsat at 10 m and at native resolution (co-registered)."""
    root = tmp_path_factory.mktemp("native")
    outs = {}
    for native in (False, True):
        outs[native] = root / f"native-{native}"
        ingest(
            IngestConfig(
                source=str(short_world.root), out=outs[native], scheduler="threads", chunk=64, native=native
            )
        )
    return outs


def test_the_native_grids_nest_in_the_10m_grid_nearest_the_landsat_grid():
    g10 = GeoBox((128, 128), Affine(10, 0, 552000, 0, -10, 4321000), "EPSG:32614")
    # WRS-2: 30 m and 15 m edges on odd multiples of 15 m, 5 or 15 m off the 10 m lattice
    g30, g15 = native_grids(g10, (551955.0, 4321035.0), (551955.0, 4321035.0))
    for g, res in ((g30, 30), (g15, 15)):
        x0, y0 = g.affine.c, g.affine.f
        assert g.resolution.x == res and x0 % 10 == 0 and y0 % 10 == 0  # on the 10 m lattice
        assert g.extent.contains(g10.extent)
        off = [abs((v - native + res / 2) % res - res / 2) for v, native in ((x0, 551955.0), (y0, 4321035.0))]
        assert max(off) <= 5.0  # the nearest the lattice allows
    assert (g15.affine.c - 551955.0) % 15 == 0  # the pan grid coincides with WRS-2's here


def test_landsat_is_stored_at_30m_and_15m(both):
    ledger = Ledger(both[True], "ingest")
    landsat = [n for n in ledger.units if n.startswith("scenes/landsat")]
    assert landsat
    raw = xr.open_zarr(ledger.unit_path(landsat[0]))
    assert is_native(raw)
    assert abs(float(raw.x[1] - raw.x[0])) == 30 and raw["pan"].dims[1:] == PAN_DIMS
    assert abs(float(raw[PAN_DIMS[1]][1] - raw[PAN_DIMS[1]][0])) == 15


def _nbytes(out, prefix: str) -> int:
    ledger = Ledger(out, "ingest")
    return sum(xr.open_zarr(ledger.unit_path(n)).nbytes for n in ledger.units if n.startswith(prefix))


def test_a_native_landsat_store_holds_at_most_a_quarter_of_the_bytes(both):
    ratio = _nbytes(both[True], "scenes/landsat") / _nbytes(both[False], "scenes/landsat")
    assert ratio <= 0.25, ratio


def test_the_10m_view_round_trips_to_the_10m_store(both, short_world):
    ten, nat = open_cube(both[False]), open_cube(both[True])
    assert nat.odc.geobox == ten.odc.geobox == short_world.geobox
    assert sorted(nat.data_vars) == sorted(ten.data_vars) and sorted(nat.coords) == sorted(ten.coords)
    assert nat["red"].chunks == ten["red"].chunks  # the view is chunked as the stores were
    ten, nat = ten.load(), nat.load()
    for c in ten.coords:  # the shifts too: measured alike, applied by the view
        if c != "spatial_ref":
            np.testing.assert_array_equal(nat[c].values, ten[c].values, err_msg=c)
    ls = np.asarray(ten["sensor"].values) == "landsat"
    assert np.abs(ten["shift_y"].values[ls]).max() > 10  # a shift the view has to apply
    for v in ten.data_vars:  # Sentinel-2 stores are not touched
        np.testing.assert_array_equal(nat[v].values[~ls], ten[v].values[~ls], err_msg=v)
    for band in REFLECTANCE:
        a, b = ten[band].values[ls], nat[band].values[ls]
        # along a no-data edge (a swath edge in the AOI) the footprint may move by one 10 m pixel
        assert (np.isnan(a) != np.isnan(b)).mean() < 0.005, band
        d = np.abs(a - b)[np.isfinite(a) & np.isfinite(b)]
        assert np.mean(d) < 0.006 and np.percentile(d, 99) < 0.05, (band, np.mean(d), np.percentile(d, 99))
    pan = np.abs(ten["pan"].values[ls] - nat["pan"].values[ls])
    assert np.nanmean(pan) < 0.001  # the 15 m grid coincides with the pan grid: one resampling
    assert (ten["clear"].values[ls] == nat["clear"].values[ls]).mean() > 0.95
