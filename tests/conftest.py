from __future__ import annotations

import os
from pathlib import Path

import pytest

# Real services (redis-server, SeaweedFS, Celery workers) as fixtures for the whole suite.
pytest_plugins = ["tests.service_fixtures"]

# Tests never reach a model hub: a model that is not on disk must fail, not download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import build_tiny_sd

    root = tmp_path_factory.mktemp("models")
    return build_tiny_sd(root / "tiny-sd", root)


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import build_tiny_sdxl

    root = tmp_path_factory.mktemp("models")
    return build_tiny_sdxl(root / "tiny-sdxl", root)


@pytest.fixture(scope="session")
def sd_model(tiny_sd: Path):
    """One loaded tiny pipeline, shared: loading once per process is what users do too."""
    from fractal import Spec2Fractal

    return Spec2Fractal(str(tiny_sd))


@pytest.fixture(scope="session")
def engine_model():
    from fractal import Spec2Fractal

    return Spec2Fractal()


@pytest.fixture(scope="session")
def tiny_adapters(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny adapters for tiny_sd, saved as an operator's are (tests/tiny_adapters.py)."""
    from tests.tiny_adapters import build_adapters

    return build_adapters(tiny_sd, tmp_path_factory.mktemp("adapters"))


@pytest.fixture(scope="session")
def adapted_sd(tiny_sd: Path, tiny_adapters: dict[str, Path]):
    """tiny_sd with an IP-Adapter (its encoder in a folder of its own) and two ControlNets."""
    from fractal import Spec2Fractal
    from tests.tiny_adapters import adapters_config

    return Spec2Fractal(str(tiny_sd), adapters=adapters_config(tiny_adapters))


@pytest.fixture(scope="session")
def tiny_sd_inpaint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dedicated inpainting checkpoint: a 9-channel UNet (tests/tiny_inpaint.py)."""
    from tests.tiny_inpaint import build_tiny_sd_inpaint

    root = tmp_path_factory.mktemp("models")
    return build_tiny_sd_inpaint(root / "tiny-sd-inpaint", root)


@pytest.fixture(scope="session")
def inpaint_model(tiny_sd_inpaint: Path):
    from fractal import Spec2Fractal

    return Spec2Fractal(str(tiny_sd_inpaint))
