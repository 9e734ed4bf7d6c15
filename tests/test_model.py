"""The UNet: shapes, presets, residual identity, receptive halo, tiling, MC-dropout, packages."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from harmonize.errors import ModelError
from harmonize.model import (
    METADATA_FILE,
    PRESETS,
    WEIGHTS_FILE,
    UNetConfig,
    build_model,
    count_parameters,
    load_model_package,
    save_model_package,
)

torch.set_num_threads(1)


def _reflectance(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 7, h, w, generator=g) * 0.4).float()


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised head (and batch-norm statistics) non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=g) * 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _conv_params(cin: int, cout: int, k: int, bias: bool) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def _expected_paper_parameters() -> int:
    """Count the 5-level, 64-base, PReLU, batch-norm UNet by hand from its description."""
    chans = [64 * 2**i for i in range(5)]
    total, cin = 0, 7
    for c in chans:  # encoder: two 3x3 conv (no bias) + BN (2c) + PReLU (c) each
        total += _conv_params(cin, c, 3, False) + _conv_params(c, c, 3, False) + 2 * (2 * c + c)
        cin = c
    for i in range(3, -1, -1):  # decoder: bilinear + 1x1 conv halving channels, then block
        c = chans[i]
        total += _conv_params(chans[i + 1], c, 1, True)
        total += _conv_params(2 * c, c, 3, False) + _conv_params(c, c, 3, False) + 2 * (3 * c)
    total += _conv_params(64, 6, 1, True)
    return total


def test_presets_shapes_and_parameter_counts():
    x = _reflectance(2, 32, 32)
    counts = {}
    for name in ("tiny", "base", "paper-5depth"):
        m = build_model(name).eval()
        counts[name] = count_parameters(m)
        if name != "paper-5depth":
            with torch.no_grad():
                assert m(x).shape == (2, 6, 32, 32)
        assert m.input_bands == ("blue", "green", "red", "nir", "swir16", "swir22", "pan")
        assert m.output_bands == m.input_bands[:6]
        assert m.receptive_halo >= 32 and m.receptive_halo % m.size_multiple == 0
    assert counts["tiny"] < counts["base"] < counts["paper-5depth"]
    # The published Deep-Harmonization 5-depth UNet has about 29 M parameters.
    assert abs(counts["paper-5depth"] - 29e6) / 29e6 < 0.10
    assert counts["paper-5depth"] == _expected_paper_parameters()


def test_untrained_model_is_identity_on_reflectance_bands():
    for up in ("bilinear", "pixelshuffle"):
        m = build_model("tiny", upsample=up, activation="prelu", norm="group").eval()
        x = _reflectance(1, 24, 40)
        with torch.no_grad():
            y = m(x)
        assert torch.equal(y, x[:, :6])


def test_odd_sizes_are_padded_and_cropped():
    m = _randomised(build_model("tiny")).eval()
    x = _reflectance(1, 37, 53)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (1, 6, 37, 53)
    assert torch.isfinite(y).all()
    assert not torch.equal(y, x[:, :6])


def test_nan_input_and_wrong_bands_are_refused():
    m = build_model("tiny").eval()
    x = _reflectance(1, 16, 16)
    x[0, 2, 3, 3] = float("nan")
    with pytest.raises(ModelError, match="fill no-data"):
        m(x)
    with pytest.raises(ModelError, match="expected input"):
        m(torch.zeros(1, 6, 16, 16))
    with pytest.raises(ModelError, match="unknown model preset"):
        build_model("huge")
    with pytest.raises(ValueError):
        UNetConfig(output_bands=("red",))  # residual model: outputs must lead the inputs


@pytest.mark.parametrize("preset,size", [("tiny", 96), ("base", 144)])
def test_receptive_halo_bounds_the_measured_receptive_field(preset, size):
    m = _randomised(build_model(preset, dropout=0.0)).eval()
    reach = 0
    for c in range(size // 2, size // 2 + m.size_multiple):  # every phase of the pooling grid
        x = _reflectance(1, size, size).requires_grad_(True)
        m(x)[0, :, c, c].sum().backward()
        nz = (x.grad.abs().sum((0, 1)) > 0).nonzero()
        reach = max(reach, int((c - nz.min()).item()), int((nz.max() - c).item()))
    assert 0 < reach <= m.receptive_halo
    assert reach <= m.receptive_field // 2


def test_tiles_with_halo_reproduce_whole_image():
    m = _randomised(build_model("tiny")).eval()
    halo = m.receptive_halo
    x = _reflectance(1, 160, 160, seed=3)
    with torch.no_grad():
        whole = m(x)
        # a 32x32 tile at (64, 96): crop with halo (origins on multiples of size_multiple)
        y0, x0 = 64, 96
        tile = x[..., y0 - halo : y0 + 32 + halo, x0 - halo : min(160, x0 + 32 + halo)]
        part = m(tile)[..., halo : halo + 32, halo : halo + 32]
    assert torch.allclose(part, whole[..., y0 : y0 + 32, x0 : x0 + 32], atol=1e-5)
    assert build_model("tiny", norm="instance").tile_invariant is False


def test_mc_dropout_samples_differ_and_eval_is_deterministic():
    m = _randomised(build_model("tiny", dropout=0.3))
    x = _reflectance(1, 32, 32)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))
        m.enable_mc_dropout()
        a, b = m(x), m(x)
    assert not torch.equal(a, b)
    assert not any(mod.training for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d))


def test_normalization_buffers_do_not_change_identity_but_scale_correction():
    m = _randomised(build_model("tiny")).eval()
    x = _reflectance(1, 32, 32)
    with torch.no_grad():
        y1 = m(x) - x[:, :6]
        m.set_normalization(m.input_mean, m.input_std, output_scale=m.output_scale * 2,
                            output_offset=torch.full((6,), 0.01))
        y2 = m(x) - x[:, :6]
    assert torch.allclose(y2, 2 * y1 + 0.01, atol=1e-6)
    with pytest.raises(ModelError):
        m.set_normalization([0.1] * 3, [0.1] * 7)


def test_package_round_trip_identical_and_pickle_free(tmp_path):
    m = _randomised(build_model("tiny", activation="prelu", dropout=0.1)).eval()
    m.set_normalization([0.05] * 7, [0.1] * 7, output_scale=[0.03] * 6)
    doc_path = save_model_package(
        m, tmp_path / "pkg", metadata={"metrics": {"psnr": 40.1}, "training_data": {"pairs": 3}}
    )
    loaded, doc = load_model_package(tmp_path / "pkg")
    x = _reflectance(2, 40, 40)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
    props = doc["properties"]
    assert props["mlm:framework"] == "pytorch"
    assert props["mlm:total_parameters"] == count_parameters(m)
    assert props["mlm:input"][0]["bands"] == list(m.input_bands)
    assert props["mlm:output"][0]["bands"] == list(m.output_bands)
    assert [s["mean"] for s in props["mlm:input"][0]["value_scaling"]] == pytest.approx([0.05] * 7)
    assert props["harmonize:metrics"] == {"psnr": 40.1}
    assert json.loads(doc_path.read_text()) == doc
    # Weights are safetensors (a JSON header), not a pickle or a torch zip archive.
    raw = (tmp_path / "pkg" / WEIGHTS_FILE).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert "head.weight" in header and "input_mean" in header
    assert not zipfile.is_zipfile(tmp_path / "pkg" / WEIGHTS_FILE)
    assert b"\x80\x04" not in raw[:2] and b"\x80\x02" not in raw[:2]


def test_package_errors_are_named(tmp_path):
    with pytest.raises(ModelError, match="no model package"):
        load_model_package(tmp_path / "missing")
    save_model_package(build_model("tiny"), tmp_path / "pkg")
    (tmp_path / "pkg" / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot read weights"):
        load_model_package(tmp_path / "pkg" / METADATA_FILE)


def test_presets_are_configs():
    assert set(PRESETS) >= {"tiny", "base", "paper-5depth"}
    cfg = PRESETS["paper-5depth"]
    assert (cfg.depth, cfg.base_channels, cfg.activation) == (5, 64, "prelu")
    assert build_model(cfg.model_dump()).config == cfg
