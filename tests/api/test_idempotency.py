"""Idempotency-Key on POST /generate and POST /batches: Stripe's semantics. On each job
database (``database_url``: SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from tests.api.auth_helpers import bearer, make_key, secured
from tests.api.helpers import README_BODY, SMALL, png_bytes
from workers.db import Batch, IdempotencyRecord, Job, get_database
from workers.settings import Settings

ASYNC = {"Prefer": "respond-async"}
BODY = {**README_BODY, **SMALL, "seed": 7}


def count(settings: Settings, table: type) -> int:
    database = get_database(settings.resolved_database_url)
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def attached(settings: Settings) -> bool:
    database = get_database(settings.resolved_database_url)
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(IdempotencyRecord)
                              .where(IdempotencyRecord.resource_id.is_not(None))) == 1


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return secured(tmp_path, database_url=database_url)


@pytest.fixture
def setup(settings: Settings) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    alice, bob = bearer(make_key(settings, "alice")), bearer(make_key(settings, "bob"))
    with TestClient(create_app(settings, start_worker=False)) as client:
        yield client, alice, bob


def test_a_retry_replays_the_first_response_and_makes_no_second_job(setup, settings) -> None:
    client, alice, _ = setup
    headers = {**alice, **ASYNC, "Idempotency-Key": "order-1"}
    first = client.post("/generate", json=BODY, headers=headers)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    # Same body, other key order and spacing: the same request.
    again = client.post("/generate", content='{"seed": 7, "width": 128, "height": 64,\n'
                        '"content": "A tropical island with crystal-clear water", '
                        '"input_type": "text"}',
                        headers={**headers, "Content-Type": "application/json"})
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["Location"] == first.headers["Location"]
    assert count(settings, Job) == 1


def test_the_same_key_with_another_body_is_422(setup, settings) -> None:
    client, alice, _ = setup
    headers = {**alice, **ASYNC, "Idempotency-Key": "order-2"}
    assert client.post("/generate", json=BODY, headers=headers).status_code == 202
    other = client.post("/generate", json={**BODY, "seed": 8}, headers=headers)
    assert other.status_code == 422
    assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert "different request" in other.json()["detail"][0]["msg"]
    assert count(settings, Job) == 1


def test_a_retry_while_the_first_is_in_flight_is_409(setup, settings) -> None:
    client, alice, _ = setup
    # No worker: the first request waits its full 3 s for an image that never comes.
    slow = {**alice, "Prefer": "wait=3", "Idempotency-Key": "order-3"}
    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(
        client.post("/generate", json=BODY, headers=slow).status_code))
    first.start()
    try:
        for _ in range(250):  # until the first has created its job and named it to the key
            if attached(settings):
                break
            threading.Event().wait(0.02)
        during = client.post("/generate", json=BODY, headers=slow)
        assert during.status_code == 409
        assert during.headers["Retry-After"] == "1"
        assert "in progress" in during.json()["detail"]
        assert during.json()["job_id"]
    finally:
        first.join()
    assert results == [202]  # still queued after 3 s
    after = client.post("/generate", json=BODY, headers=slow)
    assert after.status_code == 202 and after.headers["Idempotent-Replayed"] == "true"
    assert count(settings, Job) == 1


def test_concurrent_retries_create_exactly_one_job(setup, settings) -> None:
    client, alice, _ = setup
    headers = {**alice, **ASYNC, "Idempotency-Key": "burst"}
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(
        client.post("/generate", json=BODY, headers=headers).status_code)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(codes) <= {202, 409} and 202 in codes
    assert count(settings, Job) == 1


def test_a_refused_request_keeps_nothing(setup, settings) -> None:
    client, alice, _ = setup
    headers = {**alice, **ASYNC, "Idempotency-Key": "order-4"}
    bad = client.post("/generate", json={**BODY, "width": 7}, headers=headers)
    assert bad.status_code == 422
    fixed = client.post("/generate", json={**BODY, "width": 128}, headers=headers)
    assert fixed.status_code == 202 and "Idempotent-Replayed" not in fixed.headers
    too_long = client.post("/generate", json=BODY,
                           headers={**alice, "Idempotency-Key": "k" * 256})
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


def test_keys_are_per_caller(setup, settings) -> None:
    client, alice, bob = setup
    one = client.post("/generate", json=BODY, headers={**alice, **ASYNC,
                                                       "Idempotency-Key": "same"})
    two = client.post("/generate", json=BODY, headers={**bob, **ASYNC,
                                                     "Idempotency-Key": "same"})
    assert one.json()["id"] != two.json()["id"]
    assert "Idempotent-Replayed" not in two.headers


def test_multipart_retries_match_whatever_the_boundary(setup, settings) -> None:
    client, alice, _ = setup
    headers = {**alice, **ASYNC, "Idempotency-Key": "form"}
    fields = {"input_type": "image", "style": "Impressionist", "width": "64", "height": "48"}
    files = {"image": ("in.png", png_bytes(), "image/png")}
    first = client.post("/generate", data=fields, files=files, headers=headers)
    assert first.status_code == 202
    again = client.post("/generate", data=fields, files=files, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    other_image = {"image": ("in.png", png_bytes(color="red"), "image/png")}
    assert client.post("/generate", data=fields, files=other_image,
                       headers=headers).status_code == 422
    assert count(settings, Job) == 1


def test_batches_take_an_idempotency_key(setup, settings) -> None:
    client, alice, _ = setup
    body = {"items": [{"prompt": "a lake", **SMALL}, {"prompt": "a hill", **SMALL}]}
    headers = {**alice, "Idempotency-Key": "batch-1"}
    first = client.post("/batches", json=body, headers=headers)
    assert first.status_code == 201
    again = client.post("/batches", json=body, headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert client.post("/batches", json={"items": body["items"][:1]},
                       headers=headers).status_code == 422
    assert count(settings, Batch) == 1 and count(settings, Job) == 2
