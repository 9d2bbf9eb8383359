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
