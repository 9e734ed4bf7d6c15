"""The crop-type classifier (harmonize.classify + the classify stage) on the tiny world.

Truth: the simulator's land cover and field crops (pipelines.evaluation.landclasses). The
stage must beat the majority class on blocks it never trained on, write a valid class COG and
STAC item (classification extension), and resume after dying midway.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

from harmonize.classify import (
    block_split,
    confusion_matrix,
    period_edges,
    period_sums,
    scores,
    train_mask,
)
from harmonize.classify.features import _fill_time  # noqa: PLC2701 (the helper's own test)

#: Fast settings for a 128-pixel, six-week world.
TINY = {
    "freq": "10D",
    "block_size": 32,
    "test_fraction": 0.25,
    "guard": 4,
    "classifier": {"width": 16, "steps": 60, "batch_size": 8, "patch": 32, "lr": 0.01},
    "scheduler": "threads",
}


@pytest.fixture(scope="module")
def inputs(tiny_world, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny world ingested, and its Landsat dates through the untrained (identity) model."""
    from harmonize.model import build_model, save_model_package
    from pipelines.stages.infer import InferStageConfig, infer_stage
    from pipelines.stages.ingest import IngestConfig, ingest

    root = tmp_path_factory.mktemp("classify")
    cube, hz = root / "cube", root / "harmonized"
    ingest(IngestConfig(source=str(tiny_world.root), out=cube, scheduler="threads", chunk=64))
    model = save_model_package(build_model("tiny"), root / "identity")
    infer_stage(InferStageConfig(cube=cube, model=str(model), out=hz, device="cpu", scheduler="threads"))
    return {"cube": cube, "harmonized": hz, "labels": tiny_world.truth_path}


@pytest.fixture(scope="module")
def run(inputs, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    from pipelines.stages.classify import ClassifyStageConfig, classify_stage

    out = tmp_path_factory.mktemp("classify-out") / "classify"
    cfg = ClassifyStageConfig(**inputs, out=out, variants=["fused", "s2"], **TINY)
    return classify_stage(cfg), out


def test_classifier_beats_the_majority_class_on_held_out_blocks(run) -> None:
    report, out = run
    metrics = json.loads((out / "metrics.json").read_text())
    for variant in ("fused", "s2"):
        res = metrics["variants"][variant]
        majority = res["majority_baseline"]["overall_accuracy"]
        assert res["test_pixels"] > 2000
        assert res["overall_accuracy"] > majority + 0.2, (variant, res["overall_accuracy"], majority)
        assert res["kappa"] > 0.4
        cm = np.asarray(res["confusion"])
        assert cm.sum() == res["test_pixels"]
        assert np.trace(cm) / cm.sum() == pytest.approx(res["overall_accuracy"])
    assert {r["variant"] for r in metrics["table"]} == {"fused", "s2"}
    assert report["variants"]["fused"] == pytest.approx(
        metrics["variants"]["fused"]["overall_accuracy"], abs=1e-4
    )


def test_class_cog_and_stac_item_are_valid(run, inputs) -> None:
    import pystac
    from pystac.extensions.classification import ClassificationExtension

    from pipelines.core.stores import open_cube
    from pipelines.evaluation.landclasses import CLASSES

    _, out = run
    item = pystac.Item.from_file(out / "classes.json")
    assert "https://stac-extensions.github.io/classification/v2.0.0/schema.json" in item.stac_extensions
    asset = item.assets["classes"]
    assert asset.media_type == pystac.MediaType.COG
    assert Path(asset.get_absolute_href().removeprefix("file://")) == (out / "classes.tif").resolve()
    classes = ClassificationExtension.ext(asset).classes
    values = {c.value for c in classes}
    assert all(
        c.name == CLASSES[c.value][0] and c.color_hint == CLASSES[c.value][1][1:].upper() for c in classes
    )
    cube = open_cube(inputs["cube"])
    with rasterio.open(out / "classes.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.dtypes == ("uint8",) and src.nodata == 0
        assert src.crs.to_epsg() == cube.rio.crs.to_epsg()
        assert src.shape == (cube.sizes["y"], cube.sizes["x"])
        x, y = cube["x"].values, cube["y"].values
        assert tuple(src.transform)[:6] == (10.0, 0.0, x[0] - 5, 0.0, -10.0, y[0] + 5)
        data = src.read(1)
    assert set(np.unique(data)) <= values | {0}
    assert item.properties["proj:code"] == f"EPSG:{cube.rio.crs.to_epsg()}"
    bands = item.assets["probabilities"].extra_fields["raster:bands"]
    with rasterio.open(out / "probabilities.tif") as src:
        assert src.count == len(bands) == len(classes)
        prob = src.read().astype(float) * bands[0]["scale"]
    # probabilities sum to one (percent rounding) and the class is the most probable one
    assert np.abs(prob.sum(0) - 1).max() < 0.06
    codes = np.array([int(b["name"][2:]) for b in bands])
    assert (codes[prob.argmax(0)] == data).mean() > 0.98


def test_stage_resumes_after_dying_and_keeps_a_finished_run(inputs, tmp_path, monkeypatch) -> None:
    import pipelines.stages.classify as stage

    cfg = stage.ClassifyStageConfig(
        **inputs, out=tmp_path / "c", variants=["s2", "fused"], map_variant="s2", **TINY
    )

    def dies(*args, **kwargs):
        raise RuntimeError("killed")

    real = stage._train_and_score
    calls: list[str] = []

    def second_dies(config, ledger, variant, items, keep=None):
        calls.append(variant)
        if variant == "fused":
            dies()
        return real(config, ledger, variant, items, keep)

    monkeypatch.setattr(stage, "_train_and_score", second_dies)
    with pytest.raises(RuntimeError):
        stage.classify_stage(cfg)
    monkeypatch.setattr(stage, "_train_and_score", real)
    s2_model = (tmp_path / "c" / "model-s2" / "classifier.safetensors").stat().st_mtime_ns
    again = stage.classify_stage(cfg)
    # the sums and the s2 model survived; only what was missing was made
    assert again["made"] == ["model-fused", "scores-fused.json", *stage.MAP_FILES, "metrics.json"]
    assert (tmp_path / "c" / "model-s2" / "classifier.safetensors").stat().st_mtime_ns == s2_model
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "c").iterdir())
    done = stage.classify_stage(cfg)
    assert done["up_to_date"] and "made" not in done
    # a changed setting starts over
    moved = stage.classify_stage(cfg.model_copy(update={"split_seed": 1}))
    assert moved["made"][0] == "sums-s2.zarr" and "metrics.json" in moved["made"]


def test_block_split_and_training_mask_keep_test_blocks_out() -> None:
    test = block_split((100, 130), block=20, test_fraction=0.3, seed=3)
    assert test.shape == (100, 130)
    blocks = test[::20, ::20]
    assert 0 < blocks.sum() < blocks.size
    # whole blocks: every 20x20 block is all test or all train
    for by in range(0, 100, 20):
        for bx in range(0, 130, 20):
            b = test[by : by + 20, bx : bx + 20]
            assert b.all() or not b.any()
    labels = np.ones((100, 130), np.uint8)
    train = train_mask(labels, test, guard=3)
    from scipy import ndimage

    dist = ndimage.distance_transform_cdt(~test, metric="chessboard")
    assert not (train & (dist <= 3)).any() and train[dist > 3].all()


def test_composites_are_means_of_clear_observations_with_gaps_filled() -> None:
    rng = np.random.default_rng(0)
    times = pd.to_datetime(["2023-01-05", "2023-01-20", "2023-03-02", "2023-03-09"])
    values = rng.uniform(0.05, 0.4, (4, 3, 3)).astype(np.float32)
    clear = np.ones((4, 3, 3), bool)
    clear[1, 0, 0] = False
    da = xr.DataArray(values, dims=("time", "y", "x"), coords={"time": times, "y": [2, 1, 0], "x": [0, 1, 2]})
    cube = xr.Dataset({"red": da, "nir": da * 2, "clear": da.copy(data=clear)})
    sums = period_sums(cube, period_edges("2023-01-01", "2023-03-31"), bands=["red", "nir"])
    assert list(sums["count"][:, 0, 0].values) == [1, 0, 2]
    mean = (sums["red"] / sums["count"]).values
    assert mean[0, 0, 0] == pytest.approx(values[0, 0, 0])
    assert mean[0, 1, 1] == pytest.approx(values[:2, 1, 1].mean())
    assert mean[2, 2, 2] == pytest.approx(values[2:, 2, 2].mean())
    filled = _fill_time(mean)  # February has no observation: halfway between January and March
    assert filled[1, 0, 0] == pytest.approx((mean[0, 0, 0] + mean[2, 0, 0]) / 2)
    edge = _fill_time(np.array([np.nan, 1.0, np.nan, 3.0, np.nan]))
    assert list(edge) == [1.0, 1.0, 2.0, 3.0, 3.0]


def test_ndvi_composites_are_means_of_the_ndvi_of_clear_observations() -> None:
    from harmonize.classify import composite_features, ndvi_observations

    times = pd.to_datetime(["2023-01-05", "2023-01-20", "2023-02-02", "2023-03-09"])
    red = np.array([0.1, 0.2, 0.1, 0.05], np.float32)[:, None, None] * np.ones((4, 2, 2), np.float32)
    nir = np.array([0.3, 0.2, 0.5, 0.45], np.float32)[:, None, None] * np.ones((4, 2, 2), np.float32)
    clear = np.ones((4, 2, 2), bool)
    clear[1, 0, 0] = False  # the second January look is cloudy at (0, 0)
    coords = {"time": times, "y": [1, 0], "x": [0, 1]}
    dims = ("time", "y", "x")
    cube = xr.Dataset({"red": (dims, red), "nir": (dims, nir), "clear": (dims, clear)}, coords=coords)
    obs = ndvi_observations(cube)
    assert np.isnan(obs["ndvi"].values[1, 0, 0])
    ndvi = (nir - red) / (nir + red)
    feats = composite_features(period_sums(obs, period_edges("2023-01-01", "2023-03-31"), bands=("ndvi",)))
    assert list(feats["feature"].values[:3]) == ["ndvi_2023-01-01", "ndvi_2023-02-01", "ndvi_2023-03-01"]
    assert feats.sel(feature="ndvi_2023-01-01").values[0, 0] == pytest.approx(ndvi[0, 0, 0])
    assert feats.sel(feature="ndvi_2023-01-01").values[1, 1] == pytest.approx(ndvi[:2, 1, 1].mean())
    assert feats.sel(feature="ndvi_2023-03-01").values[0, 1] == pytest.approx(ndvi[3, 0, 1])
    assert feats.sizes["feature"] == 3 + 6  # three months of NDVI and the phenology


def test_scores_of_a_known_confusion() -> None:
    truth = np.array([1, 1, 1, 1, 2, 2, 5, 5, 5, 5])
    pred = np.array([1, 1, 1, 2, 2, 2, 5, 5, 1, 1])
    cm = confusion_matrix(truth, pred, [1, 2, 5])
    assert cm.tolist() == [[3, 1, 0], [0, 2, 0], [2, 0, 2]]
    s = scores(cm, [1, 2, 5], {1: "maize", 2: "soybean", 5: "forest"})
    assert s["overall_accuracy"] == pytest.approx(0.7)
    f1 = {c["name"]: c["f1"] for c in s["classes"]}
    assert f1["maize"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert f1["soybean"] == pytest.approx(0.8)
    assert f1["forest"] == pytest.approx(2 / 3)


def test_harmonize_classify_command_dry_run_names_every_unit(inputs, tmp_path) -> None:
    from click.testing import CliRunner

    from pipelines.cli import main

    args = ["classify", str(inputs["cube"]), "--labels", str(inputs["labels"]), "--out", str(tmp_path / "c")]
    result = CliRunner().invoke(main, [*args, "--harmonized", str(inputs["harmonized"]), "--dry-run"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dry_run"] and not (tmp_path / "c" / "ledger.json").exists()
    assert report["would_make"][:3] == [
        "sums-s2.zarr",
        "sums-landsat_harmonized.zarr",
        "sums-landsat_raw.zarr",
    ]
    assert "classes.tif" in report["would_make"]
    # without harmonized dates the fused variant cannot run: a one-line error
    bad = CliRunner().invoke(main, [*args, "--variant", "fused"])
    assert bad.exit_code == 2 and "harmonized" in bad.output


def test_report_section_shows_the_comparison_the_matrix_and_the_map(run) -> None:
    from pipelines.demo.classification import classification_section

    _, out = run
    metrics = json.loads((out / "metrics.json").read_text())
    md = classification_section(out.parent)
    assert "| Sentinel-2 + harmonized Landsat | " in md and "| Sentinel-2 only | " in md
    fused = metrics["variants"]["fused"]
    assert f"**{fused['overall_accuracy']:.3f}**" in md
    assert "true \\ predicted" in md and "![crop-type map](classification.png)" in md
    assert (out.parent / "report" / "classification.png").stat().st_size > 10_000
    assert classification_section(out.parent / "nowhere") == ""


def test_fill_sums_takes_the_filler_only_where_the_primary_saw_nothing() -> None:
    from harmonize.classify import fill_sums

    times = pd.to_datetime(["2023-01-05", "2023-02-10", "2023-03-02"])
    yx = {"y": [1, 0], "x": [0, 1]}
    s2 = np.full((3, 2, 2), 0.2, np.float32)
    ls = np.full((3, 2, 2), 0.6, np.float32)
    clear_s2 = np.ones((3, 2, 2), bool)
    clear_s2[1] = False  # February: clouds over every pixel for Sentinel-2
    clear_s2[2, 0, 0] = False  # March: one pixel
    edges = period_edges("2023-01-01", "2023-03-31")

    def cube(v, clear):
        da = xr.DataArray(v, dims=("time", "y", "x"), coords={"time": times, **yx})
        return xr.Dataset({"red": da, "nir": da, "clear": da.copy(data=clear)})

    a = period_sums(cube(s2, clear_s2), edges, bands=["red", "nir"])
    b = period_sums(cube(ls, np.ones((3, 2, 2), bool)), edges, bands=["red", "nir"])
    mean = (lambda d: (d["red"] / d["count"]).values)(fill_sums(a, b))
    assert np.allclose(mean[0], 0.2) and np.allclose(mean[1], 0.6)  # the gap month filled
    assert mean[2, 0, 0] == pytest.approx(0.6) and np.allclose(mean[2].ravel()[1:], 0.2)
    assert fill_sums(a, b)["count"].dtype == a["count"].dtype
