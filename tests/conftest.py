"""Shared fixtures: small simulated worlds, built once per test session."""

from __future__ import annotations

import pytest

from harmonize.world import World, WorldConfig, create_world


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A 1.28 km world over six weeks (10 Sentinel-2 and 6 Landsat scenes), built in seconds.

    ``WorldConfig.tiny()`` with seed 0: it holds cloud-free and cloudy scenes of both sensors,
    Landsat scenes with known shifts (``world.manifest``) and the truth they came from.
    """
    return create_world(tmp_path_factory.mktemp("tiny-world") / "world", WorldConfig.tiny(), progress=False)
