"""Items parsed once: the Scene record of each provider's items, and the one pan-companion rule."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pystac
import pytest

from harmonize.errors import UnknownCollectionError
from harmonize.items import PAN_MATCH_TOLERANCE, Scene, is_pan_companion, parse_item, parse_items
from harmonize.testing import make_item

SHARED = Path(__file__).resolve().parents[2] / "shared" / "stac-items"
T0 = dt.datetime(2023, 10, 8, 17, 37, 26, tzinfo=dt.timezone.utc)


def _landsat(level: str, *, when: dt.datetime = T0, wrs=(33, 32), item_id: str | None = None) -> pystac.Item:
    provider = "earth-search" if level == "L2" else "usgs"
    return make_item(provider, "landsat", level=level, when=when, wrs_path_row=wrs, item_id=item_id)


def test_scene_records_what_every_later_step_needs() -> None:
    s2 = parse_item(make_item("earth-search", "sentinel-2", epsg=32613))
    assert (s2.sensor, s2.level, s2.platform, s2.collection) == (
        "sentinel-2",
        "L2",
        "sentinel-2a",
        "sentinel-2-l2a",
    )
    assert s2.crs == "EPSG:32613" and s2.shape == (8, 8) and s2.transform[0] == 10.0
    assert s2.scaling["red"].offset == pytest.approx(-0.1) and s2.scaling["qa"].nodata == 0
    assert s2.time.tzinfo is not None and s2.pan is None
    # the local solar day: 17:40 UTC at ~104 W is 10:42 local, the same date
    assert s2.solar_day == dt.date(2023, 10, 8)
    ls = parse_item(_landsat("L2"))
    assert (ls.sensor, ls.wrs, ls.mgrs_tile) == ("landsat", (33, 32), None)
    assert set(ls.bands) == {"blue", "green", "red", "nir", "swir16", "swir22"}


def test_unknown_collection_is_named() -> None:
    d = make_item("earth-search", "sentinel-2").to_dict()
    d["collection"] = "modis-09a1"
    with pytest.raises(UnknownCollectionError, match="modis-09a1"):
        parse_item(pystac.Item.from_dict(d))


def test_pan_companion_rule() -> None:
    l2 = parse_item(_landsat("L2"))
    same = parse_item(_landsat("L1"))
    assert same.platform == l2.platform == "landsat-8"  # USGS spells it LANDSAT_8
    assert is_pan_companion(same, l2)
    assert not is_pan_companion(parse_item(_landsat("L1", wrs=(33, 33))), l2)  # next row
    late = parse_item(_landsat("L1", when=T0 + PAN_MATCH_TOLERANCE + dt.timedelta(seconds=1)))
    assert not is_pan_companion(late, l2)
    assert not is_pan_companion(l2, same)  # the Level-1 scene must be the first argument


def test_parse_items_gives_each_l2_its_nearest_pan_once() -> None:
    l2a = _landsat("L2", item_id="LC08_A")
    l2b = _landsat("L2", item_id="LC08_B", when=T0 + dt.timedelta(seconds=90))
    near_a = _landsat("L1", item_id="L1_A", when=T0 + dt.timedelta(seconds=5))
    near_b = _landsat("L1", item_id="L1_B", when=T0 + dt.timedelta(seconds=88))
    s2 = make_item("earth-search", "sentinel-2")
    scenes = parse_items([s2, near_b, l2a, near_a, l2b])
    by_id = {s.id: s for s in scenes}
    assert [s.id for s in scenes] == [s2.id, "L1_B", "LC08_A", "L1_A", "LC08_B"]  # input order
    assert by_id["LC08_A"].pan.id == "L1_A" and by_id["LC08_B"].pan.id == "L1_B"
    assert by_id[s2.id].pan is None
    # scenes go through unchanged: parsing twice gives the same records
    again = parse_items(scenes)
    assert all(a is b for a, b in zip(again, scenes, strict=True))


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/stac-items (real provider documents) is absent")
@pytest.mark.parametrize(
    ("name", "sensor", "where"),
    [
        ("earthsearch-v1_sentinel-2-l2a_S2A_13TDE_20231008_0_L2A.json", "sentinel-2", "13TDE"),
        (
            "pc_sentinel-2-l2a_S2A_MSIL2A_20190101T000001_R116_T59VPE_20201007T214658.json",
            "sentinel-2",
            "59VPE",
        ),
        ("earthsearch-v1_landsat-c2-l2_LC08_L2SP_033032_20231008_02_T1.json", "landsat", (33, 32)),
        ("landsat-c2l2-sr-LC09_L2SR_086107_20240311_20240312_02_T2_SR.json", "landsat", (86, 107)),
    ],
)
def test_real_documents_parse(name: str, sensor: str, where) -> None:  # noqa: ANN001
    scene = parse_item(pystac.Item.from_dict(json.loads((SHARED / name).read_text())))
    assert isinstance(scene, Scene) and scene.sensor == sensor
    assert (scene.mgrs_tile if sensor == "sentinel-2" else scene.wrs) == where
    assert scene.crs is not None and scene.crs.startswith("EPSG:")
