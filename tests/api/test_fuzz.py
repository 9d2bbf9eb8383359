"""The OpenAPI schema, fuzzed by schemathesis: no request, however odd, gets a 5xx, and every
response matches what the schema declares (status codes, content types, bodies, headers).

The app runs in-process in its production shape (API keys required, a real SQLite database in
a temporary folder) with no worker, and answers POST /generate at once with a 202
(``sync_timeout=0``), so a queued job never blocks a call. Requests carry a real key, and
schemathesis's ``ignored_auth`` check sends bad ones, which must get a 401. Hypothesis runs
derandomized with a bounded number of examples per operation: reproducible, about a minute.

The schema is loaded when this module is imported, schemathesis's primary way: each operation
becomes its own test item. Its other way, ``schemathesis.pytest.from_fixture``, renames pytest's
items through a private attribute that pytest 9.2 removed (``'Function' object has no attribute
'_nodeid'``), so the app, its database and the key are made here rather than in fixtures.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from api.openapi import SCHEME
from workers.db import get_database
from workers.db import keys as key_store
from workers.settings import Settings

EXAMPLES_PER_OPERATION = 50
# Not checked: "a schema-valid request is accepted". The schema documents types only; ranges
# and cross-field rules (a size that is a multiple of 8, an image for input_type "image") are
# the library's check_request, shared with the CLI, and answer 422 naming the field.
NOT_APPLICABLE = [positive_data_acceptance]


def _set_up() -> tuple[tempfile.TemporaryDirectory, Settings, str]:
    # Removed after this module's tests (the fixture below), or at exit when none of them runs.
    folder = tempfile.TemporaryDirectory(prefix="spec2fractal-fuzz-")
    settings = Settings(data_dir=Path(folder.name), auth="required", sync_timeout=0,
                        rate_limit="", max_jobs_per_key=10_000)
    database = get_database(settings.resolved_database_url)
    database.migrate()
    with database.session() as session:
        _, secret = key_store.create_key(session, "fuzz")
    return folder, settings, secret


_FOLDER, SETTINGS, SECRET = _set_up()
# The key as the schema's bearer scheme: schemathesis sends it, and leaves it out or spoils it
# where it tests that a route refuses a request without a valid key.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(SETTINGS, start_worker=False),
    config=SchemathesisConfig.from_dict({"auth": {"openapi": {SCHEME: {"bearer": SECRET}}}}),
    headers={"Authorization": f"Bearer {SECRET}"})
# schemathesis runs the app's lifespan itself, once, on the first call.


@pytest.fixture(scope="module", autouse=True)
def _remove_the_data_folder() -> Iterator[None]:
    yield
    _FOLDER.cleanup()


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_the_api_honours_its_schema(case) -> None:
    # Every other built-in check: not_a_server_error, status_code_conformance,
    # content_type_conformance, response_headers_conformance, response_schema_conformance,
    # negative_data_rejection, ignored_auth, unsupported_method, ...
    case.call_and_validate(excluded_checks=NOT_APPLICABLE)


def test_successful_answers_match_the_schema() -> None:
    """Random bodies rarely pass the library's checks, so the 2xx answers are also exercised
    with valid requests, through the same schema checks."""
    auth = {"Authorization": f"Bearer {SECRET}"}

    def call(path: str, method: str, **parts):
        case = schema[path][method].Case(headers=dict(auth), **parts)
        return case.call_and_validate(excluded_checks=NOT_APPLICABLE)

    created = call("/generate", "POST", media_type="application/json",
                   body={"input_type": "text", "content": "a quiet lake", "width": 64,
                         "height": 64, "steps": 2})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert call("/jobs/{job_id}", "GET", path_parameters={"job_id": job_id}).status_code == 200
    assert call("/jobs", "GET", query={"status": "queued"}).status_code == 200
    batch = call("/batches", "POST", media_type="application/json",
                 body={"items": [{"content": "a red fox"}, {"content": "a blue whale"}]})
    assert batch.status_code == 201, batch.text
    batch_id = batch.json()["id"]
    for path in ("/batches/{batch_id}", "/batches/{batch_id}/results"):
        assert call(path, "GET", path_parameters={"batch_id": batch_id}).status_code == 200
    assert call("/batches/{batch_id}/cancel", "POST",
                path_parameters={"batch_id": batch_id}).status_code in (200, 202)
    assert call("/jobs/{job_id}/cancel", "POST",
                path_parameters={"job_id": job_id}).status_code in (200, 202)
    assert call("/jobs/{job_id}", "GET", path_parameters={"job_id": job_id}).json()[
        "status"] == "cancelled"
