"""Checks with real weights: they run only where SPEC2FRACTAL_TEST_MODEL names a local model
folder (no weights can be downloaded in CI), e.g. SPEC2FRACTAL_TEST_MODEL=~/models/sd-turbo."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fractal import Spec2Fractal, read_record

MODEL = os.environ.get("SPEC2FRACTAL_TEST_MODEL")
pytestmark = pytest.mark.skipif(not MODEL, reason="SPEC2FRACTAL_TEST_MODEL names no model folder")


@pytest.fixture(scope="module")
def real_model() -> Spec2Fractal:
    assert MODEL is not None
    return Spec2Fractal(str(Path(MODEL).expanduser()))


def test_real_model_renders_text_and_image(real_model: Spec2Fractal) -> None:
    image = real_model.generate_from_text("A serene lake surrounded by mountains during sunrise",
                                          seed=1)
    assert image.size == (real_model.defaults.width, real_model.defaults.height)
    assert np.asarray(image).std() > 10  # a picture, not a flat or black frame
    again = real_model.generate_from_image(image, style="Impressionist", seed=1)
    assert again.size == image.size
    assert read_record(again).style == "Impressionist"
