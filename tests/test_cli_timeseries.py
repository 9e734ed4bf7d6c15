"""``harmonize timeseries`` from the command line: flags reach the gap filling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401 - .rio
import xarray as xr
from click.testing import CliRunner

from harmonize.cli import main
from harmonize.io import write_zarr


def _cube(sensor: str, times: pd.DatetimeIndex, seed: int) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    shape = (len(times), 8, 8)
    doy = times.day_of_year.to_numpy()[:, None, None]
    nir = 0.25 + 0.15 * np.sin(2 * np.pi * doy / 365) + rng.normal(0, 0.005, shape)
    red = np.full(shape, 0.05) + rng.normal(0, 0.002, shape)
    return xr.Dataset(
        {
            "red": (("time", "y", "x"), red.astype("float32")),
            "nir": (("time", "y", "x"), nir.astype("float32")),
            "clear": (("time", "y", "x"), rng.random(shape) > 0.3),
        },
        coords={
            "time": times,
            "y": 4_000_005.0 - 10 * np.arange(8),
            "x": 500_005.0 + 10 * np.arange(8),
            "sensor": ("time", [sensor] * len(times)),
        },
    ).rio.write_crs("EPSG:32633")


@pytest.fixture()
def stores(tmp_path):
    s2 = _cube("sentinel-2", pd.date_range("2023-03-01", periods=30, freq="5D"), 0)
    ls = _cube("landsat", pd.date_range("2023-03-03", periods=18, freq="8D"), 1)
    write_zarr(s2, tmp_path / "s2.zarr")  # as harmonize writes cubes: CRS carried
    write_zarr(ls, tmp_path / "ls.zarr")
    return tmp_path


@pytest.mark.parametrize("lmbda", ["gcv", "100"])
def test_lmbda_and_weights_flags(stores, lmbda):
    out = stores / f"ndvi-{lmbda}.zarr"
    args = ["timeseries", str(stores / "s2.zarr"), str(out), "--landsat", str(stores / "ls.zarr"),
            "--method", "whittaker", "--lmbda", lmbda, "--no-weights", "--no-sharpen-s2-nir"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    ndvi = xr.open_zarr(out)["ndvi"]
    assert np.isfinite(ndvi.values).mean() > 0.9
    # the value used is stored with the series (chosen in the graph under gcv: by default one
    # for pixels uniform at 30 m and one for edges, so a map of (at most two) values)
    assert ndvi.attrs["gap_fill_lmbda"] == ("gcv per group" if lmbda == "gcv" else 100.0)
    chosen = set(np.unique(ndvi["gap_fill_lmbda"].values).tolist())
    if lmbda == "gcv":
        from harmonize.gapfill import GCV_LMBDAS

        assert ndvi["gap_fill_lmbda"].dims == ("y", "x") and 1 <= len(chosen) <= 2
        assert chosen <= set(GCV_LMBDAS)
    else:
        assert chosen == {100.0}


def test_bad_lmbda_is_a_usage_error(stores):
    result = CliRunner().invoke(
        main, ["timeseries", str(stores / "s2.zarr"), str(stores / "x.zarr"), "--lmbda", "smooth"]
    )
    assert result.exit_code == 2
    assert "neither a number nor 'gcv'" in result.output
