"""The offline interactive map (harmonize.webmap) in a real headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harmonize.errors import HarmonizeError
from harmonize.webmap import MapDate, class_image, ndvi_image, rgb_image, write_map

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _map(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    rgb = np.stack([0.05 + 0.2 * xx, 0.05 + 0.2 * yy, 0.1 + 0.05 * rng.random((64, 64))])
    dates = [
        MapDate(
            "2023-06-01",
            {"Landsat input": rgb_image(rgb), "Harmonized": rgb_image(rgb[::-1]), "NDVI": ndvi_image(xx)},
        ),
        MapDate("2023-07-01", {"Landsat input": rgb_image(rgb * 0.8), "Harmonized": rgb_image(rgb)}),
    ]
    crops = class_image((xx * 4).astype(int), {0: "#ff0000", 1: "#00ff00", 2: "#0000ff", 3: "#ffff00"})
    return write_map(
        tmp_path / "map.html",
        dates,
        (39.0, -97.0, 39.05, -96.95),
        overlays={"Crop type": crops},
        legends={"Crop type": {"maize": "#ff0000"}},
    )


def test_map_is_self_contained(tmp_path: Path) -> None:
    text = _map(tmp_path).read_text()
    assert "<script src=" not in text and "<link " not in text  # nothing fetched
    assert "L.imageOverlay" in text and text.count("data:image/png;base64,") == 6
    with pytest.raises(HarmonizeError):
        write_map(tmp_path / "x.html", [], (0, 0, 1, 1))


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={profile}",
        "--window-size=900,700",
        "--virtual-time-budget=4000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (scripts/setup.sh installs it as root with apt)"
)
def test_map_in_headless_chromium(tmp_path: Path) -> None:
    from PIL import Image

    page = _map(tmp_path).resolve().as_uri()
    dom = _chromium(tmp_path, "--dump-dom", page).stdout
    assert 'data-hz-ready="1"' in dom  # the script ran to its end
    assert 'id="hz-swipe"' in dom and 'id="hz-swipe-range"' in dom
    assert "hz-layer-landsat-input" in dom and "hz-layer-harmonized" in dom  # the swiped pair
    for name in ("Landsat input", "Harmonized", "NDVI", "Crop type"):
        assert f">{name}<" in dom  # offered to the swipe selects / layer control
    assert "2023-07-01" in dom  # the date selector
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", page)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[0] > 100 and img.std() > 10  # not blank
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200  # the imagery drew


def test_view_writes_the_map_of_a_tiny_demo(tiny_demo: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pipelines.cli import main

    out = Path(shutil.copytree(tiny_demo, tmp_path / "demo"))  # view writes report/map.html into it
    assert not (out / "report" / "map.html").exists()
    result = CliRunner().invoke(main, ["view", "--no-open", "--dates", "2", str(out)])
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip().splitlines()[-1])
    assert path == (out / "report" / "map.html").resolve()
    text = path.read_text()
    for name in (
        "Landsat input",
        "Harmonized",
        "Truth",
        "NDVI (gap-filled)",
        "Crop type (truth)",
        "Sentinel-2 (",
    ):
        assert name in text, name
    bad = CliRunner().invoke(main, ["view", "--no-open", str(tmp_path)])
    assert bad.exit_code == 2 and "harmonize demo" in bad.output
