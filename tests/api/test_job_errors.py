"""A failed job's error travels as data (workers.job_errors.JobError): one table chooses the
HTTP status by its code, a 422 names its field, and no message is read back to decide."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.errors import JOB_ERROR_STATUS
from api.generation import job_failure
from fractal import InvalidRequestError, ModelLoadError
from tests.api.conftest import UNLOADABLE_MODEL
from tests.api.helpers import README_BODY, SMALL
from workers import job_errors
from workers.db import Job
from workers.job_errors import JobError

CODES = [value for name, value in vars(job_errors).items()
         if name.isupper() and isinstance(value, str)]


def test_every_code_has_a_status() -> None:
    assert set(CODES) == set(JOB_ERROR_STATUS)


def _failed(error: JobError, model: str = "fractal") -> Job:
    return Job(id="j1", status="failed", model=model, request={}, error=error.message,
               error_detail=error.to_dict())


@pytest.mark.parametrize("code", CODES)
def test_the_status_comes_from_the_code_not_the_message(code: str) -> None:
    # A message that names no field and says nothing of its kind: only the data counts.
    error = JobError(code, "something went wrong", field="steps" if code.startswith(
        ("invalid", "input")) else None)
    answer = job_failure(_failed(error), "fractal", {})
    status, headers = JOB_ERROR_STATUS[code]
    assert answer.status == status and answer.headers == headers
    if status == 422:
        [entry] = answer.detail
        assert entry["loc"] == ["body", error.field] and entry["ctx"]["code"] == code
    else:
        assert answer.detail == "something went wrong" and answer.extra["code"] == code


def test_the_librarys_errors_become_data() -> None:
    error = JobError.of(InvalidRequestError("scheduler", "warp", "is not a known sampler",
                                            choices=["euler", "ddim"]))
    assert (error.code, error.field, error.value, error.choices, error.reason) == (
        "invalid_request", "scheduler", "warp", ["ddim", "euler"], "is not a known sampler")
    assert JobError.from_dict(error.to_dict()) == error
    assert JobError.of(ModelLoadError("gone")).code == "model_unavailable"
    huge = JobError.of(InvalidRequestError("image", "A" * 10_000, "is not valid base64"))
    assert huge.value == "<10000 characters>"  # a refused upload is not kept on the job


def test_a_model_the_caller_chose_that_cannot_load_is_the_callers_422() -> None:
    error = JobError(job_errors.MODEL_UNAVAILABLE, "model could not be loaded")
    answer = job_failure(_failed(error, model="/other"), "fractal", {})
    assert answer.status == 422 and answer.detail[0]["loc"] == ["body", "model"]
    # The server's own default failing to load is the server's fault.
    assert job_failure(_failed(error), "fractal", {}).status == 502


def test_a_failed_job_shows_its_error_as_data(rendering: TestClient) -> None:
    response = rendering.post("/generate", json={**README_BODY, **SMALL,
                                                 "model": UNLOADABLE_MODEL})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["ctx"]["code"] == "invalid_request"
    job = rendering.get(f"/jobs/{response.json()['job_id']}").json()
    assert job["status"] == "failed"
    assert job["error_detail"]["code"] == "model_unavailable"
    assert job["error_detail"]["message"] == job["error"]
    answer = rendering.post("/v1/images/generations", json={"prompt": "a lake",
                                                             "model": UNLOADABLE_MODEL})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "model"


def test_a_refused_request_carries_its_reason_and_choices(rendering: TestClient) -> None:
    response = rendering.post("/generate", json={**README_BODY, "scheduler": "warp"})
    [entry] = response.json()["detail"]
    assert entry["loc"] == ["body", "scheduler"] and entry["ctx"]["code"] == "invalid_request"
    assert entry["ctx"]["reason"] == "is not a known sampler"
    assert "euler" in entry["ctx"]["choices"]
