"""Fixtures of the unit tests that run a real `Lab` over `FakeHypervisor`."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from lab.settings import Settings
from tests.unit.fakelab import SHUTDOWN_TIMEOUT, make_image


@pytest.fixture(scope="module")
def image_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("images")
    make_image(cache, "tiny", disk=True)
    make_image(cache, "nodisk", disk=False)
    make_image(cache, "debian", disk=True, boot="disk")
    return cache


@pytest.fixture
def settings(tmp_path: Path, image_cache: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        image_cache=image_cache,
        images_dir=tmp_path / "recipes",
        libvirt_uri="test:///default",
        accel="qemu",
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        replay_bytes=4096,
    )


@pytest.fixture
def hv() -> FakeHypervisor:
    return FakeHypervisor()


@pytest.fixture
def lab(settings: Settings, hv: FakeHypervisor) -> Lab:
    return Lab(settings, hv)
