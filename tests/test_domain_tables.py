"""Bands, QA decoding and provider profiles: the domain facts everything else relies on."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pystac
import pytest

from harmonize import bands, qa
from harmonize.errors import MissingAssetError, UnknownBandError, UnknownCollectionError, UnknownProviderError
from harmonize.providers import (
    PROVIDERS,
    Scaling,
    asset_href,
    asset_key,
    band_scaling,
    get_provider,
    normalize_platform,
    profile_for_item,
)
from harmonize.testing import make_item

SHARED_ITEMS = Path(__file__).resolve().parents[2] / "shared" / "stac-items"


# ---------------------------------------------------------------- bands
def test_band_matches_follow_hls():
    assert bands.BANDS["nir"].sentinel2 == "B8A"  # the narrow NIR matches OLI B5, not B08
    assert bands.BANDS["nir"].landsat == "B5"
    assert [bands.BANDS[b].sentinel2 for b in bands.REFLECTANCE_BANDS] == [
        "B02",
        "B03",
        "B04",
        "B8A",
        "B11",
        "B12",
    ]
    assert bands.BANDS["swir16"].resolution("sentinel-2") == 20.0
    assert bands.BANDS["pan"].resolution("landsat") == 15.0


def test_hls_coefficients_and_platform_spellings():
    s2a = bands.bandpass_coefficients("Sentinel-2A")
    assert (s2a["red"].slope, s2a["red"].offset) == (0.9765, 0.0009)
    assert bands.bandpass_coefficients("S2B")["swir22"].slope == 0.9867
    assert bands.bandpass_coefficients("sentinel-2b")["blue"] == s2a["blue"]  # blue as S2A
    x = np.linspace(0, 0.6, 7)
    c = s2a["nir"]
    np.testing.assert_allclose(c.invert(c.apply(x)), x, atol=1e-12)
    with pytest.raises(UnknownBandError):
        bands.bandpass_coefficients("landsat-8")


def test_check_bands_rejects_unknown_names():
    assert bands.check_bands(None) == bands.REFLECTANCE_BANDS + ("pan",)
    with pytest.raises(UnknownBandError, match="nir08"):
        bands.check_bands(["red", "nir08"])


# ---------------------------------------------------------------- QA
@pytest.mark.parametrize(
    "value, expected",
    [
        (1, {"nodata"}),
        (21824, {"clear"}),  # clear land, low confidences: a value found in real scenes
        (21952, {"clear", "water"}),
        (22280, {"cloud"}),  # high-confidence cloud
        (23888, {"shadow"}),  # cloud shadow (the clear bit is set too, as USGS does)
        (54596, {"cirrus"}),  # cirrus, high cirrus confidence
        (30048, {"snow"}),
        (21826, {"cloud"}),  # dilated cloud counts as cloud by default
    ],
)
def test_landsat_qa_pixel_values(value, expected):
    masks = qa.landsat_masks(np.array([value], np.uint16))
    got = {k for k, v in masks.items() if bool(v[0])}
    assert got == expected


def test_landsat_flags_are_configurable():
    arr = np.array([21826], np.uint16)  # dilated cloud only
    assert not qa.landsat_masks(arr)["clear"][0]
    relaxed = qa.landsat_masks(arr, qa.LandsatQAFlags(cloud=("cloud",)))
    assert relaxed["clear"][0]


def test_scl_classes():
    scl = np.arange(12, dtype=np.uint8)
    m = qa.scl_masks(scl)
    assert np.flatnonzero(m["clear"]).tolist() == [2, 4, 5, 6, 7]
    assert np.flatnonzero(m["cloud"]).tolist() == [8, 9]
    assert np.flatnonzero(m["nodata"]).tolist() == [0, 1]
    strict = qa.scl_masks(scl, qa.SCLFlags(clear=(4, 5, 6)))
    assert np.flatnonzero(strict["clear"]).tolist() == [4, 5, 6]


def test_encoders_round_trip_random_masks():
    rng = np.random.default_rng(1)
    shape = (40, 50)
    m = {
        k: rng.random(shape) < 0.2
        for k in ("nodata", "cloud", "dilated", "cirrus", "shadow", "snow", "water")
    }
    q = qa.encode_landsat_qa(
        nodata=m["nodata"],
        cloud=m["cloud"],
        dilated_cloud=m["dilated"],
        cirrus=m["cirrus"],
        shadow=m["shadow"],
        snow=m["snow"],
        water=m["water"],
    )
    d = qa.landsat_masks(q)
    valid = ~m["nodata"]
    np.testing.assert_array_equal(d["nodata"], m["nodata"])
    np.testing.assert_array_equal(d["cloud"], (m["cloud"] | m["dilated"]) & valid)
    np.testing.assert_array_equal(d["cirrus"], m["cirrus"] & valid)
    np.testing.assert_array_equal(d["shadow"], m["shadow"] & ~m["cloud"] & valid)
    expected_clear = valid & ~(m["cloud"] | m["dilated"] | m["cirrus"] | m["shadow"] | m["snow"])
    np.testing.assert_array_equal(d["clear"], expected_clear)

    s = qa.encode_scl(
        nodata=m["nodata"],
        cloud_high=m["cloud"],
        cloud_medium=m["dilated"],
        cirrus=m["cirrus"],
        shadow=m["shadow"],
        snow=m["snow"],
        water=m["water"],
        vegetation=rng.random(shape) < 0.5,
    )
    ds = qa.scl_masks(s)
    np.testing.assert_array_equal(ds["nodata"], m["nodata"])
    np.testing.assert_array_equal(ds["cloud"], (m["cloud"] | m["dilated"]) & valid)
    np.testing.assert_array_equal(
        ds["clear"], valid & ~(m["cloud"] | m["dilated"] | m["cirrus"] | m["shadow"] | m["snow"])
    )


def test_qa_decoding_stays_lazy():
    da = pytest.importorskip("dask.array")
    lazy = da.from_array(np.array([21824, 22280, 1], np.uint16), chunks=1)
    clear = qa.landsat_masks(lazy)["clear"]
    assert isinstance(clear, da.Array)
    assert clear.compute().tolist() == [True, False, False]


# ---------------------------------------------------------------- scaling
def test_scaling_inverts_within_quantisation():
    s = Scaling(scale=2.75e-5, offset=-0.2, nodata=0)
    refl = np.array([0.0, 0.05, 0.3, 0.9])
    dn = s.invert(refl)
    assert dn.dtype == np.uint16 and (dn > 0).all()
    np.testing.assert_allclose(s.apply(dn), refl, atol=2.75e-5 / 2 + 1e-7)
    out = s.apply(np.array([0, dn[1]], np.uint16))
    assert np.isnan(out[0]) and abs(out[1] - 0.05) < 2e-5


# ---------------------------------------------------------------- providers (own fixtures)
@pytest.mark.parametrize(
    "provider, sensor, scale, offset",
    [
        ("earth-search", "sentinel-2", 1e-4, -0.1),
        ("earth-search", "landsat", 2.75e-5, -0.2),
        ("planetary-computer", "sentinel-2", 1e-4, -0.1),  # baseline 05.09, no raster:bands
        ("planetary-computer", "landsat", 2.75e-5, -0.2),
        ("usgs", "landsat", 2.75e-5, -0.2),
        ("local", "sentinel-2", 1e-4, -0.1),
    ],
)
def test_profiles_resolve_bands_and_scaling(provider, sensor, scale, offset):
    item = make_item(provider, sensor)
    profile = profile_for_item(item, provider)
    assert profile.sensor == sensor
    for band in bands.REFLECTANCE_BANDS:
        s = band_scaling(item, band)
        assert (s.scale, s.offset, s.nodata) == pytest.approx((scale, offset, 0))
    assert band_scaling(item, "qa").nodata == (1 if sensor == "landsat" else 0)


def test_planetary_computer_keys_are_band_numbers():
    item = make_item("planetary-computer", "sentinel-2")
    assert asset_key(item, "nir") == "B8A"
    assert asset_key(item, "qa") == "SCL"
    # The Earth Search item of the same collection id uses common names.
    assert asset_key(make_item("earth-search", "sentinel-2"), "nir") == "nir08"


def test_s2_offset_follows_processing_baseline_without_raster_bands():
    old = make_item("planetary-computer", "sentinel-2", processing_baseline="02.12")
    new = make_item("planetary-computer", "sentinel-2", processing_baseline="04.00")
    assert band_scaling(old, "red").offset == 0.0
    assert band_scaling(new, "red").offset == -0.1
    undated_old = make_item(
        "planetary-computer",
        "sentinel-2",
        processing_baseline=None,
        when=dt.datetime(2021, 6, 1, tzinfo=dt.timezone.utc),
    )
    assert band_scaling(undated_old, "red").offset == 0.0


def test_item_level_raster_bands_win_over_profile():
    item = make_item("earth-search", "sentinel-2")
    item.assets["red"].extra_fields["raster:bands"][0]["offset"] = 0.0
    assert band_scaling(item, "red").offset == 0.0


def test_usgs_prefers_requester_pays_s3_and_sets_gdal_env():
    item = make_item("usgs", "landsat")
    assert asset_href(item, "red", "usgs").startswith("s3://usgs-landsat/")
    assert get_provider("usgs").gdal_env() == {"AWS_REQUEST_PAYER": "requester"}
    pan_profile = get_provider("usgs").collection("landsat", "L1")
    assert pan_profile.collection == "landsat-c2l1" and pan_profile.assets["pan"] == "pan"
    pan = band_scaling(make_item("usgs", "landsat", level="L1"), "pan")
    assert (pan.scale, pan.offset) == (2.0e-5, -0.1)


def test_planetary_computer_signing_hook_is_applied():
    calls = []

    def sign(item: pystac.Item) -> pystac.Item:
        calls.append(item.id)
        signed = item.clone()
        for a in signed.assets.values():
            a.href += "?sig=token"
        return signed

    pc = get_provider("planetary-computer").with_signer(sign)
    href = asset_href(make_item("planetary-computer", "sentinel-2"), "red", pc)
    assert href.endswith("?sig=token") and calls


def test_provider_errors():
    with pytest.raises(UnknownProviderError, match="earth-search"):
        get_provider("earthsearch")
    item = make_item("earth-search", "sentinel-2")
    item.collection_id = "sentinel-1-grd"
    with pytest.raises(UnknownCollectionError, match="sentinel-1-grd"):
        profile_for_item(item)
    item = make_item("earth-search", "sentinel-2")
    del item.assets["swir22"]
    with pytest.raises(MissingAssetError, match="swir22"):
        asset_key(item, "swir22")
    with pytest.raises(UnknownBandError):
        asset_key(make_item("earth-search", "sentinel-2"), "pan")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("LANDSAT_9", "landsat-9"),
        ("landsat-8", "landsat-8"),
        ("Sentinel-2A", "sentinel-2a"),
        ("sentinel-2b", "sentinel-2b"),
    ],
)
def test_platform_names(raw, expected):
    assert normalize_platform(raw) == expected


def test_every_provider_has_a_landsat_l2_profile():
    for name, prov in PROVIDERS.items():
        assert prov.collection("landsat").sensor == "landsat", name


# ---------------------------------------------------------------- the real documents in ../shared
def _real(name: str) -> pystac.Item:
    if not SHARED_ITEMS.is_dir():
        pytest.skip(
            f"{SHARED_ITEMS} is absent (a user's clone): the real provider documents are not redistributed"
        )
    return pystac.Item.from_dict(json.loads((SHARED_ITEMS / name).read_text()))


@pytest.mark.parametrize(
    "name, provider, sensor, scale, offset, qa_nodata",
    [
        (
            "earthsearch-v1_sentinel-2-l2a_S2A_13TDE_20231008_0_L2A.json",
            "earth-search",
            "sentinel-2",
            1e-4,
            -0.1,
            0,
        ),
        (
            "earthsearch-v1_landsat-c2-l2_LC08_L2SP_033032_20231008_02_T1.json",
            "earth-search",
            "landsat",
            2.75e-5,
            -0.2,
            1,
        ),
        (
            "pc_sentinel-2-l2a_S2A_MSIL2A_20190101T000001_R116_T59VPE_20201007T214658.json",
            "planetary-computer",
            "sentinel-2",
            1e-4,
            0.0,
            0,  # baseline 02.12: no BOA offset
        ),
        (
            "pc_landsat-c2-l2_LC09_L2SP_084069_20250722_02_T2.json",
            "planetary-computer",
            "landsat",
            2.75e-5,
            -0.2,
            1,
        ),
        (
            "landsat-c2l2-sr-LC09_L2SR_086107_20240311_20240312_02_T2_SR.json",
            "usgs",
            "landsat",
            2.75e-5,
            -0.2,
            1,
        ),
    ],
)
def test_real_items_resolve(name, provider, sensor, scale, offset, qa_nodata):
    item = _real(name)
    profile = profile_for_item(item, provider)
    assert profile.sensor == sensor
    for band in bands.REFLECTANCE_BANDS:
        key = asset_key(item, band, profile)
        assert key in item.assets
        s = band_scaling(item, band, profile)
        assert (s.scale, s.offset, s.nodata, s.dtype) == (
            pytest.approx(scale),
            pytest.approx(offset),
            0,
            "uint16",
        )
    assert band_scaling(item, "qa", profile).nodata == qa_nodata
    # Without naming the provider, the same profile is found from the collection and asset keys.
    assert profile_for_item(item).collection == profile.collection
