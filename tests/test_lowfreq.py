"""The low-frequency constraint: 30 m means kept by construction, detail kept, old records read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harmonize.deep_harmonization import DeepHarmonizationUNet, DHConfig
from harmonize.errors import HarmonizeError, ModelError
from harmonize.lowfreq import (
    block_mean,
    current_phase,
    fit_bandpass,
    grid_phase,
    hls_oli_to_msi,
    landsat_grid,
    lowfreq_project,
)
from harmonize.model import UNetConfig, build_model, load_model_package, save_model_package
from harmonize.train.checkpoints import _same_config

torch.set_num_threads(1)


def _blur(x: torch.Tensor, k: int = 9) -> torch.Tensor:
    """A box blur far wider than a 30 m block: an output with the wrong block means by design."""
    return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, 1)


def test_projection_gives_the_inputs_30m_means_and_keeps_detail():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 6, 48, 48, generator=g) * 0.4
    out = _blur(ref) * 0.8 + 0.03 + 0.01 * torch.randn(2, 6, 48, 48, generator=g)
    assert (block_mean(out) - block_mean(ref)).abs().max() > 0.05  # far off before
    proj = lowfreq_project(out, ref)
    assert (block_mean(proj) - block_mean(ref)).abs().max() < 1e-5
    # within-block detail of the output is unchanged, the projection idempotent
    up = lambda a: a.repeat_interleave(3, -2).repeat_interleave(3, -1)  # noqa: E731
    torch.testing.assert_close(proj - up(block_mean(proj)), out - up(block_mean(out)), atol=1e-6, rtol=0)
    torch.testing.assert_close(lowfreq_project(proj, ref), proj, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="multiples of 3"):
        block_mean(ref[..., :47])


def _flat(**overrides) -> torch.nn.Module:
    """A UNet whose output is flat by design (zero head, no residual): all detail blurred away."""
    model = build_model("tiny", residual=False, **overrides).eval()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    model.set_normalization(output_offset=[0.1] * 6, output_scale=[1.0] * 6)
    return model


def test_unet_with_the_constraint_keeps_the_bandpass_adjusted_means():
    model = _flat(lowfreq_constraint=True)
    slope, offset = [0.9, 1.1, 1.0, 0.95, 1.05, 1.0], [0.01, -0.01, 0.0, 0.02, 0.0, -0.005]
    model.set_normalization(bandpass_slope=slope, bandpass_offset=offset)
    x = torch.rand(1, 7, 60, 54) * 0.4
    with torch.no_grad():
        y = model(x)
    want = (torch.tensor(slope)[:, None, None] * x[0, :6] + torch.tensor(offset)[:, None, None])[None]
    assert (block_mean(y) - block_mean(want)).abs().max() < 1e-5
    assert y[0, 0, :3, :3].std() < 1e-6  # the flat output's (absent) detail is all it adds
    assert model.size_multiple % 3 == 0 and model.receptive_halo % model.size_multiple == 0
    with torch.no_grad():
        assert (block_mean(_flat()(x)) - block_mean(want)).abs().max() > 0.05
    with pytest.raises(ModelError, match="lowfreq_constraint"):
        _flat().set_normalization(bandpass_slope=slope)


def _landsat_means(a: torch.Tensor, phase: tuple[int, int]) -> torch.Tensor:
    """Means over the whole 30 m Landsat pixels of a 10 m array whose blocks start at ``phase``."""
    r, c = phase
    h, w = (a.shape[-2] - r) // 3 * 3, (a.shape[-1] - c) // 3 * 3
    return block_mean(a[..., r : r + h, c : c + w])


def test_grid_phase_finds_where_the_landsat_pixels_start():
    from affine import Affine
    from odc.geo.geobox import GeoBox

    landsat = [30.0, 0.0, 400000.0, 0.0, -30.0, 4500000.0]  # a scene's proj:transform
    # the cube starts 10 m east and 20 m south of a Landsat corner: its column 2 and row 1 begin
    # the next Landsat pixels (left edge 400030, top edge 4499970)
    cube = GeoBox((60, 60), Affine(10.0, 0.0, 400010.0, 0.0, -10.0, 4499980.0), "EPSG:32633")
    assert grid_phase(cube, landsat) == (1, 2)
    assert grid_phase(cube.affine, Affine(*landsat)) == (1, 2)
    assert grid_phase(GeoBox((6, 6), Affine(10, 0, 400000 - 3000, 0, -10, 4500000 + 600), "EPSG:32633"),
                      landsat) == (0, 0)
    assert grid_phase(cube, [30.0, 0.0, 400004.0, 0.0, -30.0, 4499996.0]) == (1, 2)  # 4 m off rounds
    with pytest.raises(ValueError, match="not 3 fine pixels"):
        grid_phase(cube, [20.0, 0.0, 400000.0, 0.0, -20.0, 4500000.0])


@pytest.mark.parametrize("phase", [(1, 2), (2, 0)])
def test_the_constraint_keeps_the_means_of_the_landsat_pixels_when_the_cube_is_offset(phase):
    # a flat (all-blurred) output and a UNet built with the constraint, on a cube whose origin is
    # 10-20 m off the Landsat grid: the means over the Landsat pixels are the input's
    x = torch.rand(1, 7, 60, 57, generator=torch.Generator().manual_seed(1)) * 0.4
    with torch.no_grad():
        off_grid = _flat(lowfreq_constraint=True)(x)  # blocks from the cube's origin
        with landsat_grid(phase):
            assert current_phase() == phase
            y = _flat(lowfreq_constraint=True)(x)
    assert current_phase() == (0, 0)
    assert (_landsat_means(y, phase) - _landsat_means(x[:, :6], phase)).abs().max() < 1e-5
    assert (_landsat_means(off_grid, phase) - _landsat_means(x[:, :6], phase)).abs().max() > 0.02
    # the projection with an explicit phase: detail within each Landsat pixel kept, idempotent
    ref = x[:, :6]
    out = _blur(ref) * 0.8 + 0.03
    proj = lowfreq_project(out, ref, phase=phase)
    assert proj.shape == out.shape
    assert (_landsat_means(proj, phase) - _landsat_means(ref, phase)).abs().max() < 1e-5
    torch.testing.assert_close(lowfreq_project(proj, ref, phase=phase), proj, atol=1e-6, rtol=0)


def test_the_constraint_survives_the_package(tmp_path):
    model = build_model("tiny", lowfreq_constraint=True).eval()
    model.set_normalization(bandpass_slope=[1.1] * 6, bandpass_offset=[0.01] * 6)
    save_model_package(model, tmp_path / "pkg")
    loaded, doc = load_model_package(tmp_path / "pkg")
    assert doc["properties"]["harmonize:normalization"]["bandpass_slope"] == pytest.approx([1.1] * 6)
    x = torch.rand(1, 7, 48, 48) * 0.4
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        assert (block_mean(loaded(x)) - block_mean(1.1 * x[:, :6] + 0.01)).abs().max() < 1e-5


def test_deep_harmonization_constraint_uses_the_hls_adjustment():
    torch.manual_seed(0)
    model = DeepHarmonizationUNet(DHConfig(depth=2, growth_factor=2, lowfreq_constraint=True)).eval()
    x = torch.rand(1, 7, 36, 36) * 0.4
    with torch.no_grad():
        y = model(x)
    slope, offset = (torch.tensor(v)[:, None, None] for v in hls_oli_to_msi(model.output_bands))
    assert (block_mean(y) - block_mean((slope * x[0, :6] + offset)[None])).abs().max() < 1e-5
    assert not torch.allclose(slope, torch.ones_like(slope))  # a real OLI -> MSI adjustment
    # on a cube 10 m off the Landsat grid, the means over its pixels are kept
    with torch.no_grad(), landsat_grid((2, 1)):
        y = model(x)
    want = (slope * x[0, :6] + offset)[None]
    assert y.shape == (1, 6, 36, 36)
    assert (_landsat_means(y, (2, 1)) - _landsat_means(want, (2, 1))).abs().max() < 1e-5


def test_fit_bandpass_recovers_a_known_linear_relation():
    rng = np.random.default_rng(0)
    a, c = np.array([0.9, 1.05, 1.0, 0.97, 1.1, 0.92]), np.array([0.01, -0.004, 0.0, 0.02, -0.01, 0.005])
    samples = []
    for _ in range(6):
        x = rng.uniform(0.0, 0.4, (7, 24, 24)).astype("float32")
        y = (a[:, None, None] * x[:6] + c[:, None, None]).astype("float32")
        y[:, :3, :3] = np.nan  # an invalid block is left out
        samples.append({"input": x, "target": y})
    slope, offset = fit_bandpass(samples, n=6)
    np.testing.assert_allclose(slope, a, atol=1e-4)
    np.testing.assert_allclose(offset, c, atol=1e-4)


def test_records_written_before_the_constraint_still_load(tmp_path):
    # a checkpoint's state.json and a package's mlm.json from before the field existed
    old = UNetConfig().model_dump(mode="json")
    del old["lowfreq_constraint"]
    assert _same_config(old, UNetConfig())
    assert not _same_config(old, UNetConfig(lowfreq_constraint=True))
    assert not _same_config({"depth": "x"}, UNetConfig())
    model = build_model("tiny").eval()
    save_model_package(model, tmp_path / "pkg")
    doc = json.loads((tmp_path / "pkg" / "mlm.json").read_text())
    del doc["properties"]["harmonize:architecture"]
    del doc["properties"]["harmonize:config"]["lowfreq_constraint"]
    (tmp_path / "pkg" / "mlm.json").write_text(json.dumps(doc))
    loaded, _ = load_model_package(tmp_path / "pkg")
    assert loaded.config == model.config


def _offset_cube(x: np.ndarray, chunk: int):
    """A cube of ``x`` [T, 7, H, W] on a 10 m grid, chunked ``chunk`` (the Landsat grid is not
    in it: its phase is what the caller passes)."""
    import dask.array as da
    import pandas as pd
    import rioxarray  # noqa: F401
    import xarray as xr

    t, _, h, w = x.shape
    bands = ("blue", "green", "red", "nir", "swir16", "swir22", "pan")
    ds = xr.Dataset(
        {b: (("time", "y", "x"), da.from_array(x[:, i], chunks=(1, chunk, chunk)))
         for i, b in enumerate(bands)},
        coords={"time": pd.date_range("2024-05-01T10:00", periods=t, freq="8D"),
                "y": 4_000_000 - 5 - 10 * np.arange(h), "x": 500_000 + 5 + 10 * np.arange(w),
                "sensor": ("time", ["landsat"] * t)},
    )
    return ds.rio.write_crs("EPSG:32633")


def test_super_resolve_constrains_each_date_on_its_own_landsat_grid():
    # chunked inference over a cube whose Landsat pixels start at row 1, column 2 (first date)
    # and row 2, column 0 (second): with the phases passed, every chunk's output keeps the
    # bandpass-adjusted input's mean over each true Landsat pixel; without them it does not
    from harmonize.infer import predict_array, super_resolve

    model = _flat(lowfreq_constraint=True)
    slope, offset = [0.9, 1.1, 1.0, 0.95, 1.05, 1.0], [0.01, -0.01, 0.0, 0.02, 0.0, -0.005]
    model.set_normalization(bandpass_slope=slope, bandpass_offset=offset)
    x = np.random.default_rng(3).uniform(0.0, 0.4, (2, 7, 96, 84)).astype("float32")
    want = torch.from_numpy(np.asarray(slope, "float32")[:, None, None] * x[:, :6]
                            + np.asarray(offset, "float32")[:, None, None])
    phases = [(1, 2), (2, 0)]
    cube = _offset_cube(x, 48)
    out = super_resolve(cube, model, chunks=48, landsat_phase=phases, device="cpu")
    assert len(out["blue"].chunks[1]) > 1 and len(out["blue"].chunks[2]) > 1  # several chunks
    bands = ["blue", "green", "red", "nir", "swir16", "swir22"]
    out = out.compute()  # once: each band's .values alone would run the whole graph again
    got = torch.from_numpy(np.stack([out[b].values for b in bands], axis=1))
    blind = super_resolve(cube, model, chunks=48, device="cpu").compute()
    off = torch.from_numpy(np.stack([blind[b].values for b in bands], axis=1))
    whole = torch.from_numpy(predict_array(x, model, landsat_phase=phases, device="cpu"))
    for t, phase in enumerate(phases):
        assert (_landsat_means(got[t], phase) - _landsat_means(want[t], phase)).abs().max() < 1e-5
        assert (_landsat_means(off[t], phase) - _landsat_means(want[t], phase)).abs().max() > 0.02
        assert (_landsat_means(whole[t], phase) - _landsat_means(want[t], phase)).abs().max() < 1e-5
    torch.testing.assert_close(got, whole, atol=1e-5, rtol=0)  # chunks equal the whole image
    with pytest.raises(HarmonizeError, match="landsat_phase"):
        super_resolve(cube, model, landsat_phase=[(0, 0)] * 3)


def test_grid_phase_carries_a_coregistration_shift():
    from affine import Affine

    cube = Affine(10.0, 0.0, 400000.0, 0.0, -10.0, 4500000.0)
    landsat = [30.0, 0.0, 399900.0, 0.0, -30.0, 4500090.0]  # 100 m west, 90 m north: phase (0, 2)
    assert grid_phase(cube, landsat) == (0, 2)
    # shifted 23.4 m west and 26.5 m south: corners 123.4 m west (12 px: col 0), 63.5 m north (6 px: row 0)
    assert grid_phase(cube, landsat, shift=(-23.4, -26.5)) == (0, 0)
    # 21.9 m east and 21.3 m north: 78.1 m west (8 px: col 1), 111.3 m north (11 px: row 1)
    assert grid_phase(cube, landsat, shift=(21.9, 21.3)) == (1, 1)
