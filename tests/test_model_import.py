"""Deep-Harmonization import: key layout round trip, refused mismatches, input conventions, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import save_file
from torch import nn

from harmonize.deep_harmonization import DH_PRESETS, DHConfig, key_map
from harmonize.errors import ModelError
from harmonize.model import build_model, load_model_package
from harmonize.model_import import KeyMismatchError, import_model

torch.set_num_threads(1)


# -- an independent reconstruction of the hub models' layout (AUNet with attention off) -------
class _Conv2(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.PReLU(),
                                   nn.Conv2d(cout, cout, 3, 1, 1), nn.PReLU())

    def forward(self, x):
        return self.block(x)


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int, mode: str) -> None:
        super().__init__()
        if mode == "upsample":
            self.Upsize = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                        nn.Conv2d(cin, cout, 1))
        else:
            self.Upsize = nn.Sequential(nn.Conv2d(cin, 4 * cout, 3, 1, 1), nn.PReLU(), nn.PixelShuffle(2),
                                        nn.Conv2d(cout, cout, 3, 1, 1))
        self.conv = _Conv2(cin, cout)

    def forward(self, x, skip):
        x = F.interpolate(self.Upsize(x), size=skip.shape[2:], mode="bilinear")
        return self.conv(torch.cat([x, skip], 1))


class _Net(nn.Module):
    def __init__(self, depth: int, growth: int, mode: str) -> None:
        super().__init__()
        ch = [2 ** (growth + i) for i in range(depth)]
        self.encoding_module = nn.ModuleList(_Conv2(a, b) for a, b in zip([7, *ch[:-1]], ch, strict=True))
        self.decoding_module = nn.ModuleList(_Up(ch[i + 1], ch[i], mode) for i in reversed(range(depth - 1)))
        self.final = nn.Conv2d(ch[0], 6, 1)

    def forward(self, ms, pan):
        x, skips = torch.cat([ms, pan], 1), []
        for i, enc in enumerate(self.encoding_module):
            x = enc(x)
            if i < len(self.encoding_module) - 1:
                skips.append(x)
                x = F.avg_pool2d(x, 2)
        for i, dec in enumerate(self.decoding_module):
            x = dec(x, skips[-i - 1])
        return self.final(x)


class _Hub(nn.Module):
    """The hub wrapper: the network under ``model``."""

    def __init__(self, depth: int, growth: int, mode: str) -> None:
        super().__init__()
        self.model = _Net(depth, growth, mode)

    def forward(self, ms, pan):
        return self.model(ms, pan)


def _reconstruction(mode: str, depth: int = 3, growth: int = 3, seed: int = 0) -> _Hub:
    torch.manual_seed(seed)
    net = _Hub(depth, growth, mode)
    with torch.no_grad():
        for p in net.parameters():  # non-trivial PReLU slopes too
            if p.numel() == 1:
                p.uniform_(0.05, 0.4)
    return net.eval()


def _l8(n: int = 1, h30: int = 16, w30: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """30 m reflectance (6 bands) and a 10 m pan."""
    g = torch.Generator().manual_seed(seed)
    ms30 = torch.rand(n, 6, h30, w30, generator=g) * 0.4
    pan = torch.rand(n, 1, 3 * h30, 3 * w30, generator=g) * 0.3
    return ms30, pan


@pytest.mark.parametrize("mode", ["upsample", "shuffle"])
def test_import_round_trip_equals_the_reconstruction(tmp_path, mode):
    ref = _reconstruction(mode)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("{}")  # a snapshot also carries other files
    doc = import_model(tmp_path, tmp_path / "pkg", pre_interpolation="none")
    model, item = load_model_package(tmp_path / "pkg")
    props = item["properties"]
    assert props["harmonize:config"]["up_mode"] == mode and props["harmonize:config"]["depth"] == 3
    assert props["mlm:input"][0]["bands"] == ["blue", "green", "red", "nir", "swir16", "swir22", "pan"]
    text = props["mlm:input"][0]["description"]
    assert "C2 L2 bottom-of-atmosphere" in text and "L1 top-of-atmosphere pan" in text
    assert doc.name == "mlm.json"
    ms30, pan = _l8()
    ms = F.interpolate(ms30, scale_factor=3, mode="bicubic", align_corners=False)
    with torch.no_grad():
        expected = ref(ms, pan)
        got = model(torch.cat([ms, pan], 1))
    assert expected.abs().mean() > 1e-2  # random weights: a real output to compare
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_package_redoes_the_papers_bicubic_pre_interpolation(tmp_path):
    # a cube loaded with nearest resampling carries each 30 m value on its 3 x 3 block; the
    # package must feed the network what the paper fed it: bicubic x3 of the 30 m bands
    ref = _reconstruction("upsample", seed=1)
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    import_model(tmp_path / "pytorch_model.bin", tmp_path / "pkg")
    model, _ = load_model_package(tmp_path / "pkg")
    ms30, pan = _l8(seed=2)
    nearest = ms30.repeat_interleave(3, -2).repeat_interleave(3, -1)
    with torch.no_grad():
        expected = ref(F.interpolate(ms30, scale_factor=3, mode="bicubic", align_corners=False), pan)
        got = model(torch.cat([nearest, pan], 1))
        as_loaded = ref(nearest, pan)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    assert (as_loaded - expected).abs().max() > 1e-3  # the pre-interpolation matters


@pytest.mark.parametrize("name", list(DH_PRESETS))
def test_presets_have_the_published_keys_and_shapes(name):
    # depth and width of the four hub models; built on the meta device (no memory)
    cfg = DH_PRESETS[name]
    with torch.device("meta"):
        ref = _Hub(cfg.depth, 6, cfg.up_mode)
        ours = build_model(name)
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    mine = ours.state_dict()
    mapping = key_map(cfg, "model.")
    assert set(mapping) == set(theirs)
    assert all(theirs[k] == tuple(mine[v].shape) for k, v in mapping.items())
    assert theirs["model.encoding_module.0.block.0.weight"] == (64, 7, 3, 3)
    assert theirs[f"model.encoding_module.{cfg.depth - 1}.block.2.weight"][0] == 2 ** (5 + cfg.depth)


def _write(tmp_path, state):
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_mismatched_keys_are_refused_with_their_names(tmp_path):
    state = dict(_reconstruction("upsample").state_dict())
    dropped = "model.decoding_module.1.conv.block.2.bias"
    del state[dropped]
    state["model.extra.weight"] = torch.zeros(3)
    state["model.final.weight"] = torch.zeros(6, 9, 1, 1)
    with pytest.raises(KeyMismatchError) as err:
        import_model(_write(tmp_path, state), tmp_path / "pkg")
    e = err.value
    assert e.unmatched == ["model.extra.weight"]
    assert e.missing == [dropped]
    assert e.misshaped == [("model.final.weight", (6, 9, 1, 1), (6, 8, 1, 1))]
    msg = str(e)
    assert "model.extra.weight" in msg and dropped in msg and "model.final.weight" in msg
    assert "--preset" in msg
    assert not (tmp_path / "pkg").exists()  # nothing written from a partial model


def test_named_preset_of_another_layout_is_refused(tmp_path):
    # a shuffle checkpoint named as an upsample preset: every up-sampling key differs
    path = _write(tmp_path, _reconstruction("shuffle", depth=5, growth=1).state_dict())
    with pytest.raises(KeyMismatchError) as err:
        import_model(path, tmp_path / "pkg", preset="UNet-5depth-upsample")
    assert any("Upsize.3.weight" in k for k in err.value.unmatched)
    assert any("Upsize.1.bias" in k for k in err.value.missing)
    assert err.value.misshaped  # the widths differ too (growth 1 vs 6)


def test_pickled_code_is_never_loaded(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": _reconstruction("upsample").state_dict(), "cfg": DHConfig()}, path)
    with pytest.raises(ModelError, match="weights_only"):
        import_model(path, tmp_path / "pkg")
    with pytest.raises(ModelError, match="does not exist"):
        import_model(tmp_path / "nowhere" / "x", tmp_path / "pkg")


def test_cli_imports_a_snapshot(tmp_path):
    from harmonize.cli import main

    _write(tmp_path, _reconstruction("shuffle").state_dict())
    res = CliRunner().invoke(main, ["model", "import", str(tmp_path), str(tmp_path / "pkg"), "--lowfreq"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "pkg" / "mlm.json").read_text())
    assert doc["properties"]["harmonize:architecture"] == "deep-harmonization"
    assert doc["properties"]["harmonize:config"]["lowfreq_constraint"] is True
    bad = CliRunner().invoke(main, ["model", "import", str(tmp_path), str(tmp_path / "p2"),
                                    "--preset", "UNet-6depth-upsample"])
    assert bad.exit_code == 2 and "mis-shaped keys" in bad.output


def test_super_resolve_feeds_the_imported_package(tmp_path):
    import dask.array as da
    import pandas as pd
    import rioxarray  # noqa: F401
    import xarray as xr

    from harmonize.bands import PAN, REFLECTANCE_BANDS
    from harmonize.infer import super_resolve

    _write(tmp_path, _reconstruction("upsample", seed=3).state_dict())
    import_model(tmp_path, tmp_path / "pkg")
    model, _ = load_model_package(tmp_path / "pkg")
    ms30, pan = _l8(h30=24, w30=24, seed=4)
    x = torch.cat([ms30.repeat_interleave(3, -2).repeat_interleave(3, -1), pan], 1)[0].numpy()
    bands = (*REFLECTANCE_BANDS, PAN)
    cube = xr.Dataset(
        {b: (("time", "y", "x"), da.from_array(x[None, i], chunks=(1, 36, 36))) for i, b in enumerate(bands)},
        coords={"time": pd.date_range("2024-05-01", periods=1), "y": 4e6 - 5 - 10 * np.arange(72),
                "x": 5e5 + 5 + 10 * np.arange(72), "sensor": ("time", ["landsat"])},
    ).rio.write_crs("EPSG:32633")
    out = super_resolve(cube, str(tmp_path / "pkg"), chunks=36, device="cpu").compute()
    got = np.stack([out[b].values[0] for b in REFLECTANCE_BANDS])
    halo = model.receptive_halo
    padded = np.pad(x, ((0, 0), (halo, halo), (halo, halo)), mode="symmetric")
    with torch.no_grad():
        whole = model(torch.from_numpy(padded)[None])[0, :, halo:-halo, halo:-halo].numpy()
    np.testing.assert_allclose(got, whole, atol=1e-5)
