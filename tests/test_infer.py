"""super_resolve: seamless chunking, nothing invented, lazy, one model load, uncertainty."""

from __future__ import annotations

import os
import pickle

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import rioxarray  # noqa: E402,F401 - registers .rio
import torch  # noqa: E402
import xarray as xr  # noqa: E402

from harmonize import infer  # noqa: E402
from harmonize.bands import PAN, REFLECTANCE_BANDS  # noqa: E402
from harmonize.errors import HarmonizeError, ModelError, UnknownBandError  # noqa: E402
from harmonize.model import build_model, save_model_package  # noqa: E402

INPUTS = (*REFLECTANCE_BANDS, PAN)
EPSG = 32633

torch.set_num_threads(1)


def random_model(seed: int = 0, preset: str = "tiny", **overrides) -> torch.nn.Module:
    """A preset (tiny unless named) with fixed-seed random weights, including a non-zero head (the preset's
    zero head would make the model the identity, which any tiling reproduces trivially).

    Kaiming-normal convolutions keep the signal from fading with depth, so pixels up to the
    receptive radius (26 px for tiny) really influence the output and a short halo shows."""
    torch.manual_seed(seed)
    model = build_model(preset, **overrides)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.1)
            if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics too
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def make_cube(
    height: int = 136,
    width: int = 120,
    n_time: int = 1,
    chunk: int = 64,
    seed: int = 0,
    sensors: list[str] | None = None,
    source: np.ndarray | None = None,
) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    arr = (
        rng.uniform(0.0, 0.45, (n_time, len(INPUTS), height, width)).astype("float32")
        if source is None
        else source
    )
    sensors = sensors or ["landsat"] * n_time
    ds = xr.Dataset(
        {
            b: (("time", "y", "x"), da.from_array(arr[:, i], chunks=(1, chunk, chunk)))
            for i, b in enumerate(INPUTS)
        },
        coords={
            "time": pd.date_range("2024-05-01T10:00", periods=n_time, freq="8D"),
            "y": 4_000_000 - 5 - 10 * np.arange(height),
            "x": 500_000 + 5 + 10 * np.arange(width),
            "sensor": ("time", sensors),
            "item_id": ("time", [f"scene-{i}" for i in range(n_time)]),
        },
    )
    ds["clear"] = (("time", "y", "x"), da.ones((n_time, height, width), dtype=bool, chunks=(1, chunk, chunk)))
    return ds.rio.write_crs(f"EPSG:{EPSG}")


def whole_image(model: torch.nn.Module, cube: xr.Dataset, halo: int) -> np.ndarray:
    """Independent reference: one forward pass over the whole mirror-padded image, no data
    filled with the input mean, cloudy pixels passed as observed, both NaN in the output."""
    x = np.stack([cube[b].values for b in INPUTS], axis=1)
    finite = np.isfinite(x).all(axis=1, keepdims=True)
    valid = finite & cube["clear"].values[:, None]
    x = np.where(finite, x, model.input_mean.numpy()[None, :, None, None])
    pad = np.pad(x, ((0, 0), (0, 0), (halo, halo), (halo, halo)), mode="symmetric")
    with torch.inference_mode():
        y = model(torch.from_numpy(pad)).numpy()
    y = y[:, :, halo:-halo, halo:-halo]
    return np.where(valid, y, np.nan)


def stacked(out: xr.Dataset, suffix: str = "") -> np.ndarray:
    return np.stack([out[f"{b}{suffix}"].values for b in REFLECTANCE_BANDS], axis=1)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return random_model(0)


def test_chunked_inference_equals_whole_image(model):
    # 136 x 120 pixels in 64-pixel chunks: 3 x 2 chunks, ragged last row and column
    cube = make_cube(136, 120, n_time=2)
    ref = whole_image(model, cube, model.receptive_halo)
    # the model must actually change its input, or equality would prove nothing
    assert np.nanmean(np.abs(ref - np.stack([cube[b].values for b in REFLECTANCE_BANDS], 1))) > 1e-2
    for kwargs in ({"chunks": 64}, {"chunks": 64, "tile": 32, "batch_size": 3}, {"chunks": 48}):
        out = infer.super_resolve(cube, model, device="cpu", **kwargs)
        assert out["blue"].data.numblocks[1:] == tuple(len(c) for c in out["blue"].chunks[1:])
        assert out["blue"].data.npartitions > 1
        got = stacked(out.compute(scheduler="threads"))
        # 1e-5, tighter than the 1e-4 asked for: a 24-pixel halo (short of tiny's 26-pixel
        # receptive radius) already misses by 7e-5 while the full halo matches to 2e-7
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0, err_msg=str(kwargs))


def test_too_small_halo_shows_seams(model):
    """Negative control: the equality above depends on the halo covering the receptive field."""
    cube = make_cube(128, 128)
    ref = whole_image(model, cube, 16)
    out = infer.super_resolve(cube, model, chunks=64, halo=16, device="cpu")
    assert np.nanmax(np.abs(stacked(out.compute()) - ref)) > 1e-3


def test_scene_smaller_than_halo(model):
    cube = make_cube(20, 44, chunk=16)
    ref = whole_image(model, cube, model.receptive_halo)
    np.testing.assert_allclose(
        stacked(infer.super_resolve(cube, model, device="cpu").compute()), ref, atol=1e-4
    )


def test_nothing_invented_where_input_is_missing_or_cloudy(model):
    cube = make_cube(96, 96, n_time=2)
    red = cube["red"].values.copy()
    red[0, 10:20, 30:45] = np.nan  # one band missing
    clear = np.ones(red.shape, bool)
    clear[1, 60:70, 5:25] = False  # a cloud
    cube["red"] = (("time", "y", "x"), da.from_array(red, chunks=(1, 64, 64)))
    cube["clear"] = (("time", "y", "x"), da.from_array(clear, chunks=(1, 64, 64)))
    out = infer.super_resolve(cube, model, chunks=64, device="cpu").compute()
    expected_invalid = np.isnan(red) | ~clear
    for b in REFLECTANCE_BANDS:
        np.testing.assert_array_equal(np.isnan(out[b].values), expected_invalid)
    np.testing.assert_array_equal(out["clear"].values, ~expected_invalid)
    # the filled pixels must not leak NaN into their neighbours either, and match the reference
    np.testing.assert_allclose(stacked(out), whole_image(model, cube, model.receptive_halo), atol=1e-4)


def test_all_cloudy_tiles_are_not_run_and_the_rest_is_unchanged(model, monkeypatch):
    """A tile that is cloud or no data everywhere is skipped (cloudy scenes cost nothing), and
    skipping never changes a valid pixel: tiles carry their own halo."""
    cube = make_cube(128, 128, n_time=2)
    clear = np.ones((2, 128, 128), bool)
    clear[0] = False  # a wholly cloudy scene
    clear[1, :64, :64] = False  # one cloudy chunk of the other
    clear[1, 70:80, 70:90] = False  # and a small cloud
    cube["clear"] = (("time", "y", "x"), da.from_array(clear, chunks=(1, 64, 64)))
    tiles = []
    forward = infer._forward

    def counting(models, batch, spec, halo, phase=(0, 0)):
        tiles.append(len(batch))
        return forward(models, batch, spec, halo, phase)

    monkeypatch.setattr(infer, "_forward", counting)
    out = infer.super_resolve(cube, model, chunks=64, device="cpu").compute(scheduler="synchronous")
    assert sum(tiles) == 3  # 8 chunk-tiles, 5 of them all cloud
    for b in REFLECTANCE_BANDS:
        np.testing.assert_array_equal(np.isnan(out[b].values), ~clear)
    np.testing.assert_allclose(stacked(out), whole_image(model, cube, model.receptive_halo), atol=1e-5)


def test_lazy_crs_and_coordinates_carried(model, tmp_path):
    calls = []

    def source(block: np.ndarray, block_info=None) -> np.ndarray:
        calls.append(1)
        return np.full(block.shape, 0.2, "float32")

    cube = make_cube(64, 64, n_time=3, sensors=["landsat", "sentinel-2", "landsat"])
    lazy = da.map_blocks(
        source,
        da.zeros((3, 64, 64), "float32", chunks=(1, 32, 32)),
        dtype="float32",
        meta=np.empty((0, 0, 0), "float32"),
    )
    cube["nir"] = (("time", "y", "x"), lazy)
    out = infer.super_resolve(cube, model, device="cpu")
    assert calls == [], "super_resolve computed input data before being asked"
    assert all(isinstance(out[v].data, da.Array) for v in out.data_vars)
    assert out.rio.crs.to_epsg() == EPSG
    assert out.rio.transform() == cube.rio.transform()
    assert list(out["item_id"].values) == ["scene-0", "scene-2"]  # Landsat dates only
    assert set(out.data_vars) == {*REFLECTANCE_BANDS, "clear"}
    assert all(out[b].dtype == np.float32 for b in REFLECTANCE_BANDS)
    out["nir"].compute()
    assert calls


def test_model_loaded_once_per_process_and_not_shipped_in_tasks(tmp_path):
    package = tmp_path / "pkg"
    save_model_package(random_model(1), package, metadata={"name": "t"})
    before = infer.load_count()
    cube = make_cube(96, 96, n_time=2, chunk=32)
    out = infer.super_resolve(cube, str(package), chunks=32, device="cpu")
    assert out["red"].data.npartitions == 18
    with dask.config.set(scheduler="threads", num_workers=2):
        out.compute()
        infer.super_resolve(cube, str(package), chunks=32, device="cpu")["red"].compute()
    assert infer.load_count() - before == 1

    class NoModules(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, torch.nn.Module):
                raise AssertionError("a torch module travels inside the dask graph")
            return NotImplemented

    import io

    graph = dict(out["red"].data.__dask_graph__())
    NoModules(io.BytesIO()).dump(graph)
    # an in-memory module is also turned into a package path, not shipped
    out2 = infer.super_resolve(cube, random_model(1), device="cpu")
    NoModules(io.BytesIO()).dump(dict(out2["red"].data.__dask_graph__()))


def test_mc_dropout_spread(tmp_path):
    cube = make_cube(64, 64)
    with_dropout = random_model(2, dropout=0.3)
    out = infer.super_resolve(
        cube, with_dropout, uncertainty="mc_dropout", mc_passes=4, device="cpu"
    ).compute()
    std = stacked(out, "_std")
    assert std.shape == (1, 6, 64, 64)
    assert np.all(std > 0)
    # the mean of the passes stays near the deterministic prediction
    det = whole_image(with_dropout, cube, with_dropout.receptive_halo)
    assert np.nanmean(np.abs(stacked(out) - det)) < 5 * np.nanmean(std) + 1e-3
    no_dropout = random_model(2, dropout=0.0)
    out0 = infer.super_resolve(
        cube, no_dropout, uncertainty="mc_dropout", mc_passes=3, device="cpu"
    ).compute()
    assert np.all(stacked(out0, "_std") == 0)
    np.testing.assert_allclose(
        stacked(out0), whole_image(no_dropout, cube, no_dropout.receptive_halo), atol=1e-4
    )


def test_ensemble_mean_and_spread(tmp_path):
    a, b = random_model(3), random_model(4)
    pa, pb = tmp_path / "a", tmp_path / "b"
    save_model_package(a, pa)
    save_model_package(b, pb)
    cube = make_cube(96, 80)
    ra, rb = whole_image(a, cube, 32), whole_image(b, cube, 32)
    out = infer.super_resolve(cube, [pa, pb], chunks=48, device="cpu").compute()
    np.testing.assert_allclose(stacked(out), (ra + rb) / 2, atol=1e-4)
    np.testing.assert_allclose(stacked(out, "_std"), np.abs(ra - rb) / 2, atol=1e-4)
    assert out.attrs["harmonize:uncertainty"] == "ensemble"


def test_predict_array_is_the_whole_image_reference(model):
    cube = make_cube(72, 72)
    x = np.stack([cube[b].values for b in INPUTS], axis=1)
    np.testing.assert_allclose(
        infer.predict_array(x, model, device="cpu"), whole_image(model, cube, 32), atol=1e-5
    )


def test_bad_inputs_raise_named_errors(model, tmp_path):
    cube = make_cube(64, 64, n_time=2, sensors=["sentinel-2", "sentinel-2"])
    with pytest.raises(HarmonizeError, match="no Landsat dates"):
        infer.super_resolve(cube, model, device="cpu")
    with pytest.raises(UnknownBandError, match="pan"):
        infer.super_resolve(make_cube(64, 64).drop_vars("pan"), model, device="cpu")
    with pytest.raises(ModelError):
        infer.super_resolve(make_cube(64, 64), tmp_path / "missing", device="cpu")
    with pytest.raises(ModelError):
        infer.super_resolve(make_cube(64, 64), model, uncertainty="ensemble", device="cpu")


def test_two_results_in_one_graph_keep_their_own_keys_and_values(tmp_path):
    """Two models on one cube, and one model on two cubes, computed together: no shared keys."""
    a, b = random_model(5), random_model(6)
    pa, pb = tmp_path / "a", tmp_path / "b"
    save_model_package(a, pa)
    save_model_package(b, pb)
    cube, other = make_cube(64, 64, seed=0), make_cube(64, 64, seed=1)
    out_a = infer.super_resolve(cube, str(pa), chunks=64, device="cpu")
    out_b = infer.super_resolve(cube, str(pb), chunks=64, device="cpu")
    out_o = infer.super_resolve(other, str(pa), chunks=64, device="cpu")
    outs = (out_a, out_b, out_o)
    assert len({o["red"].data.name for o in outs}) == 3
    prefix = "harmonize-super-resolve"
    model_layers = [{name for name in o["red"].data.dask.layers if name.startswith(prefix)} for o in outs]
    assert all(len(layers) == 1 for layers in model_layers)
    assert len(set.union(*model_layers)) == 3
    got_a, got_b, got_o = dask.compute(out_a, out_b, out_o, scheduler="synchronous")
    np.testing.assert_allclose(stacked(got_a), whole_image(a, cube, 32), atol=1e-4)
    np.testing.assert_allclose(stacked(got_b), whole_image(b, cube, 32), atol=1e-4)
    np.testing.assert_allclose(stacked(got_o), whole_image(a, other, 32), atol=1e-4)
    # the same call twice is the same graph (deterministic keys), so it is computed once
    again = infer.super_resolve(cube, str(pa), chunks=64, device="cpu")
    assert again["red"].data.name == out_a["red"].data.name


def test_regions_are_bounded_and_writing_them_equals_the_whole_image(model, tmp_path):
    from harmonize.io import write_zarr_in_stripes

    # 4 chunks wide (32-px chunks, 130 px: 32, 32, 32, 34) and 3 high: 2 x 3 regions
    cube = make_cube(96, 130, n_time=2, chunk=32)
    out = infer.super_resolve(cube, model, chunks=32, device="cpu")
    regions = infer.stripes(out)
    assert [(r["y"].start, r["y"].stop, r["x"].start, r["x"].stop) for r in regions] == [
        (y0, y0 + 32, x0, x1) for y0 in (0, 32, 64) for x0, x1 in ((0, 64), (64, 130))
    ]
    cover = np.zeros((96, 130), int)
    for r in regions:
        cover[r["y"], r["x"]] += 1
    assert (cover == 1).all()  # every pixel in exactly one region
    assert len(infer.stripes(out, cols=None)) == 3  # full-width stripes on request
    path = write_zarr_in_stripes(out, tmp_path / "sr.zarr")
    back = xr.open_zarr(path)
    np.testing.assert_allclose(stacked(back), whole_image(model, cube, model.receptive_halo), atol=1e-5)
    np.testing.assert_array_equal(back["clear"].values, np.ones((2, 96, 130), bool))


@pytest.mark.parametrize(
    "preset, overrides",
    [
        ("tiny", {}),
        ("base", {}),  # PReLU, depth 4
        ("tiny", {"upsample": "pixelshuffle"}),
        ("tiny", {"norm": "none"}),
    ],
)
def test_cropped_forward_equals_the_whole_tile_forward_for_any_halo(preset, overrides):
    """Each layer computed only where the core needs it gives the whole-tile forward's core, for
    halos at, below and far below the receptive field and sizes off the pooling grid: the
    windows stop at the tile's edge exactly where the whole-tile forward zero-pads."""
    model = random_model(1, preset, **overrides)
    assert infer._cropped_forward_ok(model)
    folded = infer._fold_batchnorm(pickle.loads(pickle.dumps(model)))
    for h, w, halo in [(160, 144, model.receptive_halo), (75, 130, 8), (64, 72, 0)]:
        x = torch.rand(2, 7, h, w) * 0.4
        core = (slice(halo, h - halo), slice(halo, w - halo))
        with torch.inference_mode():
            ref = model(x)[..., core[0], core[1]]
            got = infer._cropped_forward(model, x, core)
            got_folded = infer._cropped_forward(folded, x.contiguous(memory_format=torch.channels_last), core)
        assert got.shape == ref.shape
        assert float(ref.std()) > 0.05  # a model that changes its input
        np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=2e-6, rtol=0)
        np.testing.assert_allclose(got_folded.numpy(), ref.numpy(), atol=1e-5, rtol=0)


def test_models_the_cropped_forward_does_not_know_run_their_own_forward():
    """Per-tile normalisation and the 30 m block constraint run the model's whole-tile forward."""
    assert not infer._cropped_forward_ok(build_model("tiny", norm="group").eval())
    assert not infer._cropped_forward_ok(build_model("tiny", lowfreq_constraint=True).eval())
    assert not infer._cropped_forward_ok(build_model("tiny").train())
    assert infer._cropped_forward_ok(build_model("base").enable_mc_dropout())


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_models_loaded_for_inference_run_the_cropped_forward(tmp_path, preset):
    """A package loaded for inference (batch norm folded, with or without MC-dropout) takes the
    cropped path: the identity left where a batch norm was folded is in eval mode too."""
    save_model_package(random_model(2, preset), tmp_path / "pkg")
    for mc in (False, True):
        model = infer.load_cached(tmp_path / "pkg", "cpu", mc_dropout=mc)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # folded
        assert infer._cropped_forward_ok(model)


@pytest.mark.filterwarnings("ignore::UserWarning")  # zarr: fixed-width strings have no v3 spec
def test_the_stage_finds_each_dates_landsat_grid_with_its_shift(tmp_path):
    """The infer stage's per-date phases: the 30 m grid an ingested store records, moved by the
    date's co-registration shift, against the cube's 10 m grid; (0, 0) where no grid is known."""
    import zarr

    from pipelines.core.native import NATIVE_ATTR
    from pipelines.stages.infer import InferStageConfig, landsat_phases

    cube = make_cube(30, 30, n_time=3)  # 10 m pixel corners at x 500000, y 4000000
    cube = cube.assign_coords(shift_x=("time", [0.0, 21.9, 0.0]), shift_y=("time", [0.0, 21.3, 0.0]))
    ms = {"crs": f"EPSG:{EPSG}", "transform": [30.0, 0.0, 499900.0, 0.0, -30.0, 4000090.0], "shape": [12, 12]}
    for i in (0, 1):  # scene-2 was stored at 10 m: no grid
        group = zarr.open_group(str(tmp_path / "cube" / "scenes" / f"landsat_{i}.zarr"), mode="w")
        group.attrs[NATIVE_ATTR] = {"ms": ms}
        group.create_array("item_id", data=np.array([f"scene-{i}"]))
    cfg = InferStageConfig(cube=tmp_path / "cube", model="m", out=tmp_path / "out")
    # 100 m west and 90 m north: column 2, row 0; shifted 21.9 m east, 21.3 m north: 1, 1
    assert landsat_phases(cfg, cube, {}) == [(0, 2), (1, 1), (0, 0)]
