"""The public numpy helpers of harmonize.gapfill: day conversion and linear interpolation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from harmonize.gapfill import TimeSeriesError, as_days, gap_fill, interpolate_linear, to_days


def test_to_days_counts_fractional_days_from_the_origin():
    origin = np.datetime64("2021-01-01T00:00", "ns")
    t = np.array(["2021-01-01T00:00", "2021-01-02T12:00", "2020-12-31T00:00"], dtype="datetime64[ns]")
    np.testing.assert_array_equal(to_days(t, origin), [0.0, 1.5, -1.0])


def test_as_days_reads_numbers_strings_and_timedeltas():
    assert as_days(45) == 45.0
    assert as_days(2.5) == 2.5
    assert as_days("45D") == 45.0
    assert as_days("12h") == 0.5
    assert as_days(pd.Timedelta("3D")) == 3.0
    assert as_days(np.timedelta64(2, "D")) == 2.0
    with pytest.raises(TimeSeriesError, match="as a duration"):
        as_days("soon")


def test_interpolate_linear_bridges_short_gaps_only():
    t_obs = np.array([0.0, 10.0, 50.0])
    values = np.array([[0.0, 1.0, 5.0], [0.0, np.nan, 5.0]])
    valid = np.isfinite(values)
    t_out = np.array([-5.0, 0.0, 5.0, 30.0, 55.0, 70.0])
    out = interpolate_linear(values, valid, t_obs, t_out, max_gap=45.0)
    # series 0: all gaps <= 45 days; ends held within max_gap / 2 = 22.5 days, NaN beyond
    np.testing.assert_allclose(out[0], [0.0, 0.0, 0.5, 3.0, 5.0, 5.0])
    # series 1: 0 -> 50 is more than 45 days apart, so only the observations' own days and the
    # ends are filled
    np.testing.assert_allclose(out[1], [0.0, 0.0, np.nan, np.nan, 5.0, 5.0])
    out = interpolate_linear(values, valid, t_obs, np.array([75.0]), max_gap=45.0)
    assert np.isnan(out).all()


def test_interpolate_linear_is_gap_fills_linear_kernel():
    rng = np.random.default_rng(3)
    times = pd.date_range("2021-01-01", periods=30, freq="6D")
    data = rng.random((30, 4, 5)).astype(np.float32)
    data[rng.random(data.shape) < 0.5] = np.nan
    obs = xr.DataArray(data, dims=("time", "y", "x"), coords={"time": times})
    filled = gap_fill(obs, method="linear", freq="5D", max_gap="20D")
    origin = np.datetime64(filled["time"].values[0], "ns")
    flat = data.reshape(30, -1).T
    out = interpolate_linear(
        flat, np.isfinite(flat), to_days(times, origin), to_days(filled["time"].values, origin), max_gap=20.0
    )
    expected = filled.transpose("y", "x", "time").values.reshape(20, -1)
    np.testing.assert_array_equal(out.astype(np.float32), expected)
