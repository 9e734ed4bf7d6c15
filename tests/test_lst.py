"""Land surface temperature (issue 16): the simulated ST_B10/ST_QA, loading it in kelvin, and
sharpening it to 10 m against the simulator's truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
import xarray as xr
from odc.geo.geobox import GeoBox

from harmonize.bands import REFLECTANCE_BANDS
from harmonize.cube import load_cube
from harmonize.errors import HarmonizeError, MissingAssetError
from harmonize.lst import block_mean, fit_lst_model, nested, predict_lst, resample_lst, sharpen_lst
from harmonize.qa import lst_mask

SHARED = Path(__file__).resolve().parents[2] / "shared" / "stac-items"


def _landsat_items(world) -> list[pystac.Item]:
    return [pystac.Item.from_dict(d) for d in world.items() if d["collection"] == "landsat-c2-l2"]


@pytest.fixture(scope="module")
def lst30(tiny_world) -> xr.Dataset:
    """The tiny world's Landsat LST on the 10 m grid zoomed out by 3, co-registered with the
    known shifts, computed."""
    shifts = {s["id"]: tuple(s["shift"]) for s in tiny_world.scenes if s["sensor"] == "landsat"}
    items = _landsat_items(tiny_world)
    return load_cube(items, bands=["lst"], geobox=tiny_world.geobox.zoom_out(3), shifts=shifts).compute()


def test_st_decodes_as_dn_times_scale_plus_offset(tiny_world) -> None:
    item = _landsat_items(tiny_world)[1]
    lw, qa = item.assets["lwir11"], item.assets["qa"]
    with rasterio.open(lw.href) as src:
        dn = src.read(1)
        native = GeoBox(dn.shape, src.transform, src.crs)
    with rasterio.open(qa.href) as src:
        dn_qa = src.read(1)
    cube = load_cube([item], bands=["lst"], geobox=native, resampling="nearest").isel(time=0).compute()
    rows, cols = [3, 10, 20, 30], [5, 12, 25, 40]
    expected = dn[rows, cols].astype(np.float64) * 0.00341802 + 149.0
    np.testing.assert_allclose(cube["lst"].values[rows, cols], expected, atol=1e-4)
    np.testing.assert_allclose(cube["lst_qa"].values[rows, cols], dn_qa[rows, cols] * 0.01, atol=1e-5)
    assert cube["lst"].attrs["units"] == "K" and cube["lst_qa"].attrs["units"] == "K"
    assert np.isnan(cube["lst"].values[dn == 0]).all()


def test_st_assets_are_shaped_like_the_providers(tiny_world) -> None:
    item = _landsat_items(tiny_world)[0].to_dict()
    for name in ("earthsearch-v1_landsat-c2-l2_LC08_L2SP_033032_20231008_02_T1.json",):
        if not (SHARED / name).exists():
            pytest.skip(f"{SHARED / name} absent: the real provider items live outside the repo")
        real = json.loads((SHARED / name).read_text())["assets"]
        for key in ("lwir11", "qa"):
            ours, theirs = item["assets"][key], real[key]
            assert ours["raster:bands"][0] | {"spatial_resolution": 30} == {
                k: v for k, v in theirs["raster:bands"][0].items()
            }
            assert ours.get("eo:bands") == theirs.get("eo:bands")
            assert ours["title"] == theirs["title"]


def test_simulated_st_follows_the_truth_through_a_100m_footprint(tiny_world, lst30) -> None:
    truth = tiny_world.truth
    i = int(np.argmin(np.isnan(lst30["lst"].where(lst30["clear"])).mean(("y", "x")).values))
    day = pd.Timestamp(lst30.time.values[i]).normalize()
    lst, tt = nested(lst30["lst"].isel(time=i), truth.sel(time=day))
    blocks = block_mean(tt["lst"].values, 3)
    ok = lst_mask(lst30["lst_qa"].isel(time=i), lst30["clear"].isel(time=i)).values[
        : lst.sizes["y"], : lst.sizes["x"]
    ]
    a, b = lst.values[ok], blocks[ok]
    assert np.corrcoef(a, b)[0, 1] > 0.8
    assert abs(np.median(a - b)) < 1.0  # retrieval bias and noise are small; blur is unbiased
    # ...and the 100 m footprint smooths: the product varies less than the 30 m truth blocks.
    assert a.std() < b.std()


def _scores(world, lst30, methods) -> dict[str, float]:
    """Mean land RMSE (K) against the 10 m truth over Landsat dates with >= 30 % usable LST."""
    truth = world.truth
    rng = np.random.default_rng(0)
    errs: dict[str, list[float]] = {m: [] for m in methods}
    for i in range(lst30.sizes["time"]):
        day = pd.Timestamp(lst30.time.values[i]).normalize()
        cov = lst30.isel(time=i)
        lst = cov["lst"].where(lst_mask(cov["lst_qa"], cov["clear"]))
        # The date's reflectance at 10 m (truth plus sensor-like noise stands in for harmonized Landsat)
        refl = truth.sel(time=day)[list(REFLECTANCE_BANDS)].compute()
        refl = refl + xr.DataArray(rng.normal(0, 0.004, refl["red"].shape), dims=("y", "x"))
        lst, refl = nested(lst, refl)
        if np.isfinite(lst.values).mean() < 0.3:
            continue
        tt = truth.sel(time=day).isel(y=slice(0, refl.sizes["y"]), x=slice(0, refl.sizes["x"]))
        land = tt["landcover"].values != 4
        for m in methods:
            if m == "bicubic":
                out = resample_lst(lst, refl)
            elif m == "footprint":
                out = sharpen_lst(lst, refl, keep="footprint")
            else:
                out = sharpen_lst(lst, refl, method=m)
            errs[m].append(float(np.sqrt(np.nanmean((out.values - tt["lst"].values)[land] ** 2))))
    assert errs["bicubic"], "no Landsat date clear enough to score"
    return {m: float(np.mean(v)) for m, v in errs.items()}


def test_sharpening_beats_bicubic_against_truth(tiny_world, lst30) -> None:
    scores = _scores(tiny_world, lst30, ("bicubic", "local", "tsharp", "footprint"))
    assert scores["local"] < 0.93 * scores["bicubic"], scores
    assert scores["local"] < scores["tsharp"], scores
    # Consistent through the thermal footprint rather than the blurred 30 m blocks: closer still.
    assert scores["footprint"] < scores["local"], scores


def test_sharpened_block_means_equal_the_input(tiny_world, lst30) -> None:
    cov = lst30.isel(
        time=int(np.argmin(np.isnan(lst30["lst"].where(lst30["clear"])).mean(("y", "x")).values))
    )
    day = pd.Timestamp(cov.time.values).normalize()
    refl = tiny_world.truth.sel(time=day)[list(REFLECTANCE_BANDS)].compute()
    lst, refl = nested(cov["lst"].where(cov["clear"]), refl)
    for method in ("local", "global", "tsharp"):
        out = sharpen_lst(lst, refl, method=method)
        means = block_mean(out.values.astype(np.float64), 3)
        ok = np.isfinite(lst.values)
        assert ok.mean() > 0.5
        np.testing.assert_allclose(means[ok], lst.values[ok], atol=0.01)
        assert np.isnan(means[~ok]).all()


def test_grids_that_do_not_nest_are_a_named_error(tiny_world, lst30) -> None:
    refl = tiny_world.truth.isel(time=0)[list(REFLECTANCE_BANDS)]
    with pytest.raises(HarmonizeError, match="zoom_out"):
        sharpen_lst(lst30["lst"].isel(time=0), refl.isel(y=slice(0, 90), x=slice(0, 90)))


def test_lst_from_reflectance_alone_misses_the_weather(tiny_world, lst30) -> None:
    truth = tiny_world.truth
    ok = [
        i
        for i in range(lst30.sizes["time"])
        if np.isfinite(lst30["lst"].isel(time=i).where(lst30["clear"].isel(time=i))).mean() > 0.3
    ]
    lst = lst30["lst"].where(lst_mask(lst30["lst_qa"], lst30["clear"])).isel(time=ok)
    days = [pd.Timestamp(t).normalize() for t in lst.time.values]
    refl = truth.sel(time=days)[list(REFLECTANCE_BANDS)].compute()
    lst, refl = nested(lst, refl)
    model = fit_lst_model(lst, refl)
    s2_days = [t for t, s2 in zip(truth.time.values, truth["sentinel2"].values, strict=True) if s2]
    errors = []
    for t in s2_days:
        r = truth.sel(time=t)[list(REFLECTANCE_BANDS)].compute()
        est = predict_lst(model, r, t)
        errors.append(float(np.nanmean(est.values - truth["lst"].sel(time=t).values)))
    # Its scene-mean error follows the day's weather offset (3 K standard deviation): kelvins.
    assert np.std(errors) > 1.0
    assert np.isfinite(errors).all()


def test_lst_needs_the_thermal_assets(tiny_world) -> None:
    item = _landsat_items(tiny_world)[0]
    d = item.to_dict()
    d["assets"].pop("lwir11")
    with pytest.raises(MissingAssetError, match="lwir11"):
        load_cube([pystac.Item.from_dict(d)], bands=["lst"])


def test_demo_scores_every_method_by_class_and_writes_the_section(tiny_world, lst30, tmp_path) -> None:
    from pipelines.demo.lst import _sharpen_all, lst_section

    truth = tiny_world.truth
    days = [pd.Timestamp(t).normalize() for t in lst30.time.values]
    # Truth reflectance on the Landsat times stands in for the harmonized dates.
    harmonized = truth.sel(time=days)[list(REFLECTANCE_BANDS)].assign_coords(time=lst30.time.values)
    product, scores, best = _sharpen_all(lst30, harmonized, truth, "local")
    assert product.sizes["time"] == lst30.sizes["time"] and best is not None
    table = scores.table()
    assert set(table.index) == {"bicubic", "tsharp", "global", "local", "local, footprint"}
    assert {"land", "cropland", "road"} <= set(table.columns)
    assert table.loc["local", "land"] < table.loc["bicubic", "land"]
    (tmp_path / "lst").mkdir()
    metrics = {"method": "local", "landsat_dates": 6, "scored_dates": len(scores.dates)}
    metrics["rmse_k"] = table.to_dict(orient="index")
    (tmp_path / "lst" / "metrics.json").write_text(json.dumps(metrics))
    md = lst_section(tmp_path)
    assert "## Land surface temperature" in md and "| local |" in md
    assert lst_section(tmp_path / "nothing") == ""


def test_raw_lst_scales_like_the_other_bands(tiny_world) -> None:
    from harmonize.cube import to_reflectance

    items = _landsat_items(tiny_world)[:2]
    gbox = tiny_world.geobox.zoom_out(3)
    raw = load_cube(items, bands=["red", "lst"], geobox=gbox, reflectance=False)
    assert raw["lst"].dtype == np.uint16 and raw["lst_qa"].dtype == np.int16
    assert (
        raw["lst_scale"].values.tolist() == [0.00341802] * 2
        and raw["lst_offset"].values.tolist() == [149.0] * 2
    )
    scaled = to_reflectance(raw).compute()
    direct = load_cube(items, bands=["red", "lst"], geobox=gbox).compute()
    for v in ("red", "lst", "lst_qa"):
        np.testing.assert_array_equal(scaled[v].values, direct[v].values)
    assert "lst_scale" not in scaled.coords
    assert "lst" not in load_cube(items, geobox=gbox).data_vars  # only when asked for
