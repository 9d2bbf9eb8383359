"""The speed settings (issue #22) as GET /models shows them, and bad values refused at start
naming the setting."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.app import create_app
from workers.settings import Settings


def test_models_show_the_speed_options_of_diffusion_models(tmp_path: Path,
                                                          tiny_sd: Path) -> None:
    settings = Settings(data_dir=tmp_path, models=[str(tiny_sd)], compile="true",
                        channels_last=True, offload="auto", warmup_sizes="64x64,96x64",
                        dtype="bfloat16")
    with TestClient(create_app(settings, start_worker=False)) as client:
        listed = {model["id"]: model for model in client.get("/models").json()["models"]}
    speed = listed[tiny_sd.name]["speed"]
    assert speed == {"dtype": "bfloat16", "compile": "inductor", "channels_last": True,
                     "fuse_qkv": False, "vae": None, "step_cache": "none",
                     "step_cache_threshold": 0.05, "step_cache_interval": 3, "offload": "auto",
                     "warmup": [[64, 64], [96, 64]]}
    assert listed["fractal"]["speed"] is None  # the engine has none of these


@pytest.mark.parametrize(("setting", "value"), [
    ("offload", "gpu"), ("offload", ["auto"]), ("step_cache", "middle"),
    ("step_cache_threshold", math.nan), ("step_cache_threshold", math.inf),
    ("step_cache_threshold", 0), ("warmup_sizes", "64xbig"), ("warmup_sizes", "[[64, \"a\"]]"),
    ("channels_last", "maybe"), ("fuse_qkv", [1]), ("dtype", "int8"), ("dtype", "\ud800"),
    ("compile", 3), ("step_cache_interval", 1), ("step_cache_interval", 11),
    ("step_cache_interval", True), ("step_cache_interval", "2.5"),
])
def test_bad_speed_settings_name_the_setting(tmp_path: Path, setting: str, value: object) -> None:
    with pytest.raises(ValidationError, match=setting):
        Settings(data_dir=tmp_path, **{setting: value})


def test_a_worker_applies_its_speed_settings(monkeypatch: pytest.MonkeyPatch,
                                             tiny_sd: Path) -> None:
    # SPEC2FRACTAL_* → Settings.model_options → ModelCache → Spec2Fractal(speed=...).
    from fractal import read_record
    from workers.model_cache import ModelCache

    monkeypatch.setenv("SPEC2FRACTAL_COMPILE", "eager")
    monkeypatch.setenv("SPEC2FRACTAL_CHANNELS_LAST", "true")
    monkeypatch.setenv("SPEC2FRACTAL_OFFLOAD", "model")
    monkeypatch.setenv("SPEC2FRACTAL_WARMUP_SIZES", "64x64")
    monkeypatch.setenv("SPEC2FRACTAL_STEP_CACHE", "deep")
    monkeypatch.setenv("SPEC2FRACTAL_STEP_CACHE_INTERVAL", "2")
    model = ModelCache(1, options=Settings().model_options).get(str(tiny_sd))
    assert model.backend.compiler.graphs > 0  # compiled at load, by the warm-up
    image = model.generate_from_text("a boat", steps=4, seed=1, width=64, height=64)
    # The warm-up compiled both of the deep cache's paths: full steps and reused ones.
    assert model.backend.compiler.after_warmup == 0
    speed = read_record(image).speed
    assert (speed["compile"], speed["channels_last"], speed["offload"]) == \
        ("eager", True, "model -> none (cpu)")
    assert (speed["step_cache"], speed["step_cache_interval"]) == ("deep", 2)


def test_recompilations_reach_the_metrics_and_the_models_list(tmp_path: Path,
                                                             tiny_sd: Path) -> None:
    """A worker announces each loaded model's speed as applied, with torch.compile's graph
    counts; /metrics sums the recompilations (graphs made after the warm-up) per model."""
    from workers.db import Database
    from workers.model_cache import ModelCache
    from workers.presence import Presence

    # Dynamo remembers per code object, process-wide, which sizes it saw: after other tests
    # compiled these blocks at other sizes it would compile them size-generic from the start.
    # A worker's process starts afresh; so does this test.
    torch.compiler.reset()
    settings = Settings(data_dir=tmp_path, models=[str(tiny_sd)], compile="eager",
                        warmup_sizes="64x64")
    database = Database(settings.resolved_database_url)
    database.migrate()
    cache = ModelCache(1, options=settings.model_options)
    model = cache.get(str(tiny_sd))
    presence = Presence(database, cache, [str(tiny_sd)], interval=60, name="w1")
    warm = model.backend.compiler.graphs
    model.generate_from_text("a boat", steps=2, seed=1, width=64, height=64)  # warmed size
    presence.announce()
    with TestClient(create_app(settings, start_worker=False)) as client:
        metrics = client.get("/metrics").text
        assert f'spec2fractal_model_compiled_graphs{{model="tiny-sd"}} {warm:.1f}' in metrics
        assert 'spec2fractal_model_recompilations{model="tiny-sd"} 0.0' in metrics
        model.generate_from_text("a boat", steps=2, seed=1, width=96, height=64)  # a new size
        again = model.backend.compiler.after_warmup
        assert again > 0
        presence.announce()
        metrics = client.get("/metrics").text
        assert f'spec2fractal_model_recompilations{{model="tiny-sd"}} {again:.1f}' in metrics
        listed = {entry["id"]: entry for entry in client.get("/models").json()["models"]}
        [worker] = listed["tiny-sd"]["workers"]
        assert worker["name"] == "w1" and worker["loaded"]
        assert worker["speed"]["compile"] == "eager"
        assert (worker["speed"]["compiled_graphs"], worker["speed"]["recompilations"]) == (
            warm + again, again)
