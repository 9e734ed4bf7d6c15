"""The low-frequency constraint: 30 m means kept by construction, detail kept, old records read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harmonize.deep_harmonization import DeepHarmonizationUNet, DHConfig
from harmonize.errors import ModelError
from harmonize.lowfreq import block_mean, fit_bandpass, hls_oli_to_msi, lowfreq_project
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
