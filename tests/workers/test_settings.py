"""Settings read from the environment the way operators write them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from workers.settings import Settings


def test_lists_read_json_or_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEC2FRACTAL_MODELS", "stabilityai/sd-turbo, /models/mine")
    monkeypatch.setenv("SPEC2FRACTAL_CORS_ORIGINS", '["https://app.example"]')
    settings = Settings()
    assert settings.models == ["stabilityai/sd-turbo", "/models/mine"]
    assert settings.cors_origins == ["https://app.example"]
    monkeypatch.setenv("SPEC2FRACTAL_MODELS", "[not json")
    with pytest.raises(ValidationError, match="models"):
        Settings()


def test_lowering_the_hard_time_limit_lowers_the_soft_one() -> None:
    # Celery drops a retried task whose soft limit is above its hard one.
    assert Settings(task_time_limit=30).task_soft_time_limit == 30
    assert Settings(task_time_limit=30, task_soft_time_limit=20).task_soft_time_limit == 20


def test_bad_values_name_the_setting() -> None:
    with pytest.raises(ValidationError, match="auth"):
        Settings(auth="sometimes")
    with pytest.raises(ValidationError, match="max_jobs_per_key"):
        Settings(max_jobs_per_key=0)


def test_co_rendering_settings_keep_their_former_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEC2FRACTAL_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("SPEC2FRACTAL_BATCH_WAIT_MS", "20")
    settings = Settings()
    assert (settings.max_corender_size, settings.corender_wait_ms) == (7, 20)
    monkeypatch.setenv("SPEC2FRACTAL_MAX_CORENDER_SIZE", "2")  # the new name wins
    assert Settings().max_corender_size == 2
    assert Settings(max_corender_size=3).max_corender_size == 3


def test_lora_settings_reach_the_workers_models(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path) -> None:  # type: ignore[no-untyped-def]
    from workers.model_cache import ModelCache

    monkeypatch.setenv("SPEC2FRACTAL_LORA_DIR", str(tmp_path))
    monkeypatch.setenv("SPEC2FRACTAL_LORA_UPLOAD_MAX_BYTES", "2GiB")
    monkeypatch.setenv("SPEC2FRACTAL_LORA_HUB", "true")
    settings = Settings()
    assert settings.lora_dir == tmp_path and settings.lora_hub is True
    assert settings.lora_upload_max_bytes == 2 * 1024 ** 3
    assert settings.max_styles_per_key == 200
    model = ModelCache(1, options=settings.model_options).get("fractal")
    assert model.lora_dir == tmp_path
    monkeypatch.delenv("SPEC2FRACTAL_LORA_DIR")
    monkeypatch.delenv("SPEC2FRACTAL_LORA_HUB")
    assert Settings().lora_dir is None and Settings().lora_hub is False
