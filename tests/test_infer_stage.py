"""The infer stage searching a catalog: search -> load -> super-resolve -> per-date Zarr + COGs +
STAC items; its config's checks; and writing in stripes (bounded memory) equal to one graph."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402
from test_infer import EPSG, INPUTS, make_cube, random_model, stacked, whole_image  # noqa: E402

from harmonize import infer  # noqa: E402
from harmonize.bands import REFLECTANCE_BANDS  # noqa: E402
from harmonize.model import build_model, save_model_package  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return random_model(0)


def test_infer_stage_searching_the_tiny_world(tiny_world, tmp_path):
    """The infer stage with ``source: search``: search -> load_cube -> super_resolve -> one Zarr
    store per date + COGs + STAC items, on the simulated archive.

    The untrained tiny model is the identity on the six reflectance bands (its head starts at
    zero), so the written product must equal the Landsat reflectance load_cube reads, pixel for
    pixel where clear and NaN elsewhere: any mix-up of bands, dates or grid shows."""
    import pystac
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    from harmonize.catalog import search
    from harmonize.cube import load_cube
    from pipelines.core.stores import open_harmonized
    from pipelines.stages.infer import InferStageConfig, infer_stage

    package = tmp_path / "identity"
    save_model_package(build_model("tiny"), package)
    config = InferStageConfig(
        source="search",
        catalog=str(tiny_world.items_path),
        bbox=tiny_world.bbox,
        model=str(package),
        device="cpu",
        cogs=True,
        out=tmp_path / "out",
        scheduler="threads",
    )
    report = infer_stage(config)

    items = list(
        search(str(tiny_world.items_path), sensors=("landsat",), bbox=tiny_world.bbox, include_pan=True)
    )
    cube = load_cube(items, bbox=tiny_world.bbox)
    landsat = cube.sel(time=cube["sensor"] == "landsat").compute()
    assert report["items_found"] == len(items)
    assert report["dates"] == landsat.sizes["time"] == len(report["cogs"]) == len(report["stac_items"])
    assert len(report["committed"]) == report["dates"]

    written = open_harmonized(tmp_path / "out")
    np.testing.assert_array_equal(written["time"].values, landsat["time"].values)
    assert written.rio.crs == cube.rio.crs and written.rio.transform() == cube.rio.transform()
    clear = landsat["clear"].values & np.isfinite(np.stack([landsat[b].values for b in INPUTS])).all(0)
    np.testing.assert_array_equal(written["clear"].values, clear)
    assert 0.1 < clear.mean() < 1.0  # the world has clouds on some Landsat dates
    for b in REFLECTANCE_BANDS:
        expected = np.where(clear, landsat[b].values, np.nan)
        np.testing.assert_allclose(written[b].values, expected, atol=1e-6)

    for i, (cog, item_path) in enumerate(zip(report["cogs"], report["stac_items"], strict=True)):
        assert cog_validate(cog)[0]
        with rasterio.open(cog) as src:
            np.testing.assert_allclose(src.read(3), written["red"].values[i], atol=0)
        item = pystac.Item.from_file(item_path)
        sources = {link.title for link in item.get_links("derived_from")}
        l2 = str(landsat["item_id"].values[i])
        assert l2 in sources and any("L1" in s for s in sources), sources
        assert item.properties["processing:software"]["harmonize"]

    again = infer_stage(config)  # incremental: every date is done
    assert again["new"] == again["committed"] == [] and again["dates"] == report["dates"]


def test_infer_config_says_what_its_source_needs():
    from harmonize.errors import HarmonizeError
    from pipelines.run import parse_config

    with pytest.raises(HarmonizeError, match="source: search needs catalog and bbox"):
        parse_config({"stage": "infer", "source": "search", "model": "m", "out": "o"})
    with pytest.raises(HarmonizeError, match="source: cube needs cube"):
        parse_config({"stage": "infer", "model": "m", "out": "o"})
    cfg = parse_config(
        {"stage": "infer", "source": "search", "catalog": "c", "bbox": [0, 1, 2, 3], "model": "m", "out": "o"}
    )
    assert cfg.bbox == (0, 1, 2, 3) and cfg.cube is None


def test_writing_in_stripes_equals_one_graph(model, tmp_path):
    from harmonize.io import write_zarr_in_stripes

    cube = make_cube(100, 72, n_time=2, chunk=32)
    out = infer.super_resolve(cube, model, chunks=32, device="cpu")
    regions = infer.stripes(out)
    assert [(r["y"].start, r["y"].stop) for r in regions] == [(0, 32), (32, 64), (64, 100)]  # 36-px last
    assert all(r["x"] == slice(0, 72) and r["time"] == slice(0, 2) for r in regions)
    path = write_zarr_in_stripes(out, tmp_path / "sr.zarr")
    back = xr.open_zarr(path)
    assert back.rio.crs.to_epsg() == EPSG
    np.testing.assert_allclose(stacked(back), whole_image(model, cube, model.receptive_halo), atol=1e-5)
    np.testing.assert_array_equal(back["clear"].values, np.ones((2, 100, 72), bool))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr.zarr"]
