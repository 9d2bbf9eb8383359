"""POST /batches and friends: grid expansion, limits, results, cancel, and priority below
interactive jobs with the real embedded worker on the queue in its database.
Without a worker (``offline`` here), on each job database: SQLite and PostgreSQL; with the
embedded worker, on the embedded shape's SQLite."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from api.batching import expand_grid, grid_size
from tests.api.auth_helpers import bearer, make_key, secured
from tests.api.conftest import UNLOADABLE_MODEL
from tests.api.helpers import README_BODY, data_url, decode, png_bytes
from workers.db import get_database
from workers.db.models import Job, QueueMessage
from workers.settings import Settings
from workers.task_queue import RENDER_TASK
from workers.webhooks import DELIVER_TASK

TINY = {"width": 64, "height": 64}
ACTIVE = {"queued", "running"}


@pytest.fixture
def offline(offline_on_each_database: TestClient) -> TestClient:
    return offline_on_each_database


def _items(count: int, **extra: object) -> list[dict]:
    return [{**README_BODY, **TINY, "seed": index, **extra} for index in range(count)]


def _wait_batch(client: TestClient, batch_id: str, done, timeout: float = 40) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.get(f"/batches/{batch_id}").json()
        if done(batch) or time.monotonic() > deadline:
            return batch
        time.sleep(0.05)


def _lines(client: TestClient, batch_id: str) -> list[dict]:
    response = client.get(f"/batches/{batch_id}/results")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app with its own embedded worker, exactly as ``spec2fractal serve`` runs it."""
    data_dir = tmp_path_factory.mktemp("batches")
    # One worker, so the order of takes shows in the order of finishes (interactive first):
    # two would finish most tiny batch items before the interactive job is even sent.
    app = create_app(Settings(data_dir=data_dir, sync_timeout=30, models=[UNLOADABLE_MODEL],
                              embedded_workers=1), start_worker=True)
    with TestClient(app) as client:
        # Warm: the worker is up and its model loaded before timings matter.
        assert client.post("/generate", json={**README_BODY, **TINY}).status_code == 200
        yield client


# ------------------------------------------------------------------ grid, checks and limits


def test_grid_expands_in_key_order_with_overrides() -> None:
    grid = {"content": ["a", "b"], "seed": [1, 2, 3], "style": ["Watercolor", "Cinematic"]}
    items = list(expand_grid({"prompt": "template", "seed": 9, "width": 64}, grid))
    assert grid_size(grid) == len(items) == 12
    assert items[0] == {"width": 64, "content": "a", "seed": 1, "style": "Watercolor"}
    assert [(item["content"], item["seed"], item["style"]) for item in items[:3]] == [
        ("a", 1, "Watercolor"), ("a", 1, "Cinematic"), ("a", 2, "Watercolor")]
    assert items[-1] == {"width": 64, "content": "b", "seed": 3, "style": "Cinematic"}
    assert grid_size({"seed": list(range(1000)), "width": list(range(1000))}) == 10**6


def test_grid_batch_is_created_with_one_job_per_item(offline: TestClient) -> None:
    body = {"name": "sweep", "output_format": "webp", "template": {**README_BODY, **TINY},
            "grid": {"seed": [1, 2, 3], "style": ["Watercolor", "Cinematic"]}}
    response = offline.post("/batches", json=body)
    assert response.status_code == 201, response.text
    batch = response.json()
    assert response.headers["location"] == batch["links"]["self"]
    assert batch["name"] == "sweep" and batch["total"] == 6 and batch["status"] == "running"
    assert batch["counts"]["queued"] == 6 and batch["progress"] == 0.0
    assert batch["eta_seconds"] is None and batch["images"] == 0
    lines = _lines(offline, batch["id"])
    assert [line["index"] for line in lines] == list(range(6))
    assert [(line["parameters"]["seed"], line["parameters"]["style"]) for line in lines] == [
        (1, "Watercolor"), (1, "Cinematic"), (2, "Watercolor"), (2, "Cinematic"),
        (3, "Watercolor"), (3, "Cinematic")]
    assert all(line["parameters"]["prompt"] == README_BODY["content"] for line in lines)
    job = offline.get(lines[0]["job_url"]).json()
    assert job["status"] == "queued" and job["output_format"] == "webp"


@pytest.mark.parametrize(("body", "loc"), [
    ({"items": [{**README_BODY}] * 3 + [{**README_BODY, "width": 100000}]},
     ["body", "items", 3, "width"]),
    ({"items": [README_BODY, {**README_BODY, "steps": "many"}]}, ["body", "items", 1, "steps"]),
    ({"template": README_BODY, "grid": {"style": ["Watercolor", "No such style"]}},
     ["body", "grid", "style"]),
    ({"template": {**README_BODY, "height": 5}, "grid": {"seed": [1, 2]}},
     ["body", "template", "height"]),
    ({"template": README_BODY, "grid": {"style": []}}, ["body", "grid", "style"]),
    ({"template": README_BODY, "grid": {"shoe_size": [1]}}, ["body", "grid", "shoe_size"]),
    ({"items": []}, ["body", "items"]),
    ({"name": "nothing"}, ["body"]),
    ({"items": [{**README_BODY, "image": "data:image/png;base64,AAAA"}]},
     ["body", "items", 0, "image"]),
])
def test_a_bad_item_is_a_422_naming_it_and_nothing_is_created(
        offline: TestClient, body: dict, loc: list) -> None:
    response = offline.post("/batches", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert offline.get("/batches").json()["batches"] == []
    assert offline.get("/jobs").json()["jobs"] == []


def test_item_limits_are_checked_before_expanding(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, max_batch_items=10), start_worker=False)
    with TestClient(app) as client:
        too_many = client.post("/batches", json={"items": _items(11)})
        assert too_many.status_code == 422
        assert too_many.json()["detail"][0]["loc"] == ["body", "items"]
        huge = {"template": README_BODY,
                "grid": {"seed": list(range(2000)), "width": list(range(64, 2064))}}
        started = time.monotonic()
        product = client.post("/batches", json=huge)  # 4 000 000 items: never made
        assert time.monotonic() - started < 2
        assert product.status_code == 422
        detail = product.json()["detail"][0]
        assert detail["loc"] == ["body", "grid"] and "4000000" in detail["msg"]
        assert client.post("/batches", json={"items": _items(10)}).status_code == 201


def test_one_key_cannot_fill_the_queue_with_batches(tmp_path: Path) -> None:
    """The reproduction: one key queued 30,000 jobs with three POST /batches. Now its
    batch items count against its quota of batch work (429 naming the limit, at the
    defaults), another key's batches are still taken, and all keys together against the
    batch queue's limit (503)."""
    settings = secured(tmp_path)
    alice, bob = bearer(make_key(settings, "alice")), bearer(make_key(settings, "bob"))
    grid = {"template": {**README_BODY, **TINY}, "grid": {"seed": list(range(10_000))}}
    with TestClient(create_app(settings, start_worker=False)) as client:
        first = client.post("/batches", json=grid, headers=alice)
        assert first.status_code == 201, first.text
        for _ in range(2):
            refused = client.post("/batches", json=grid, headers=alice)
            assert refused.status_code == 429, refused.text
            body = refused.json()
            assert body["limit"] == "max_batch_items_per_key" and body["quota"] == 10_000
            assert body["unfinished"] == 10_000 and "max_batch_items_per_key" in body["detail"]
            assert int(refused.headers["Retry-After"]) > 0
        assert client.post("/batches", json={"items": _items(1)},
                           headers=alice).status_code == 429  # not even one more
        assert client.post("/batches", json=grid, headers=bob).status_code == 201
        # All keys together: 20,000 batch items wait, the batch queue's default limit.
        carol = bearer(make_key(settings, "carol"))
        full = client.post("/batches", json={"items": _items(1)}, headers=carol)
        assert full.status_code == 503, full.text
        assert full.json()["limit"] == "max_queued_batch_items"
        assert full.json()["queued"] == 20_000 and int(full.headers["Retry-After"]) > 0
        # Cancelling gives the room back.
        assert client.post(f"/batches/{first.json()['id']}/cancel",
                           headers=alice).status_code == 200
        assert client.post("/batches", json={"items": _items(2)},
                           headers=alice).status_code == 201
        with get_database(settings.resolved_database_url).session() as session:
            assert session.scalar(select(func.count()).select_from(Job)
                                  .where(Job.status == "queued")) == 10_002


def test_a_batch_larger_than_its_quota_is_a_422_naming_the_limit(tmp_path: Path) -> None:
    settings = secured(tmp_path, max_batch_items_per_key=5, max_queued_batch_items=8)
    key = bearer(make_key(settings, "alice"))
    with TestClient(create_app(settings, start_worker=False)) as client:
        response = client.post("/batches", json={"items": _items(6)}, headers=key)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "items"] and "max_batch_items_per_key" in detail["msg"]
        grid = client.post("/batches", json={"template": README_BODY,
                                             "grid": {"seed": list(range(6))}}, headers=key)
        assert grid.status_code == 422 and "at most 5" in grid.json()["detail"][0]["msg"]
    # With auth off there is no key, so no quota; the queue's limit still bounds a batch.
    open_settings = Settings(data_dir=tmp_path / "open", max_batch_items_per_key=5,
                             max_queued_batch_items=8)
    with TestClient(create_app(open_settings, start_worker=False)) as client:
        assert client.post("/batches", json={"items": _items(6)}).status_code == 201
        too_big = client.post("/batches", json={"items": _items(9)})
        assert too_big.status_code == 422
        assert "max_queued_batch_items" in too_big.json()["detail"][0]["msg"]
        assert client.post("/batches", json={"items": _items(3)}).status_code == 503


def test_one_keys_batches_sent_at_once_are_admitted_one_after_another(tmp_path: Path) -> None:
    settings = secured(tmp_path, max_batch_items_per_key=10, rate_limit="")
    key = bearer(make_key(settings, "alice"))
    with TestClient(create_app(settings, start_worker=False)) as client, \
            ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: client.post(
            "/batches", json={"items": _items(6)}, headers=key).status_code, range(6)))
    assert sorted(statuses) == [201, 429, 429, 429, 429, 429], statuses


def test_cancel_without_a_worker_cancels_every_item(offline: TestClient) -> None:
    batch = offline.post("/batches", json={"items": _items(5)}).json()
    response = offline.post(f"/batches/{batch['id']}/cancel")
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and cancelled["cancel_requested"]
    assert cancelled["counts"]["cancelled"] == 5 and cancelled["progress"] == 1.0
    assert cancelled["eta_seconds"] == 0
    for line in _lines(offline, batch["id"]):
        assert line["status"] == "cancelled" and line["urls"] == []
        job = offline.get(line["job_url"]).json()
        assert job["cancel_requested"] and job["timings"]["started_at"] is None
    assert offline.post(f"/batches/{batch['id']}/cancel").status_code == 200  # idempotent


def _messages(settings: Settings) -> list[tuple[str, dict]]:
    database = get_database(settings.resolved_database_url)
    with database.session() as session:
        return [(task, kwargs) for task, kwargs in session.execute(
            select(QueueMessage.task, QueueMessage.kwargs).order_by(QueueMessage.id))]


def test_cancel_takes_the_batch_off_the_queue_and_sends_its_webhook(tmp_path: Path) -> None:
    """Embedded: a cancelled batch's messages leave the queue table with it, so no worker
    takes thousands of them only to skip each; and with nothing left running, its
    batch.completed is scheduled by the cancel itself."""
    settings = Settings(data_dir=tmp_path, webhook_allow_private=True)
    with TestClient(create_app(settings, start_worker=False)) as client:
        lone = client.post("/generate", json={**README_BODY, **TINY},
                           headers={"Prefer": "respond-async"}).json()["id"]
        keep = client.post("/batches", json={"items": _items(3)}).json()["id"]
        batch = client.post("/batches", json={"items": _items(500),
                                              "webhook": "http://127.0.0.1:9/hook"}).json()
        assert len(_messages(settings)) == 504
        response = client.post(f"/batches/{batch['id']}/cancel")
        assert response.status_code == 200 and response.json()["counts"]["cancelled"] == 500
        left = _messages(settings)
        renders = [kwargs["job_id"] for task, kwargs in left if task == RENDER_TASK]
        kept = [line["job_id"] for line in _lines(client, keep)]
        assert renders == [lone, *kept]  # the other work is untouched
        [(task, event)] = [(task, kwargs) for task, kwargs in left if task != RENDER_TASK]
        assert task == DELIVER_TASK and event["type"] == "batch.completed"
        assert json.loads(event["body"])["data"]["counts"]["cancelled"] == 500
        # Once: a second cancel, or a worker meeting an item, sends nothing more.
        assert client.post(f"/batches/{batch['id']}/cancel").status_code == 200
        assert _messages(settings) == left


def test_pagination_and_unknown_ids(offline: TestClient) -> None:
    ids = [offline.post("/batches", json={"name": f"b{n}", "items": _items(1)}).json()["id"]
           for n in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = offline.get("/batches", params=params).json()
        pages += 1
        seen += [batch["id"] for batch in page["batches"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == list(reversed(ids))  # newest first, each once
    assert offline.get("/batches", params={"cursor": "nonsense"}).status_code == 422
    for path in ("/batches/nope", "/batches/nope/results"):
        assert offline.get(path).status_code == 404
    assert offline.post("/batches/nope/cancel").status_code == 404


# ------------------------------------------------------------------ with the real worker


def test_interactive_jobs_run_before_batch_items(embedded: TestClient) -> None:
    batch = embedded.post("/batches", json={"items": _items(20)}).json()
    interactive = embedded.post("/generate", json={**README_BODY, **TINY})
    assert interactive.status_code == 200, interactive.text
    done_at = datetime.fromisoformat(interactive.json()["job"]["timings"]["finished_at"])
    seen_eta = None
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        state = embedded.get(f"/batches/{batch['id']}").json()
        if state["finished"] and state["status"] == "running" and seen_eta is None:
            seen_eta = state["eta_seconds"]
            remaining = state["counts"]["queued"] + state["counts"]["running"]
            assert seen_eta is not None and 0 < seen_eta < 60 * remaining
        if state["status"] == "finished":
            break
        time.sleep(0.05)
    assert state["status"] == "finished" and state["counts"]["succeeded"] == 20
    finished = [datetime.fromisoformat(embedded.get(line["job_url"]).json()
                                       ["timings"]["finished_at"])
                for line in _lines(embedded, batch["id"])]
    after = sum(moment > done_at for moment in finished)
    assert after >= 15, f"only {after} of 20 batch items finished after the interactive job"


def test_a_batch_renders_with_one_failed_item(embedded: TestClient) -> None:
    items = [*_items(3), {**README_BODY, **TINY, "input_type": "hybrid", "strength": 0.5,
                          "image": data_url(png_bytes(64, 64)), "output_format": "webp"},
             {**README_BODY, **TINY, "model": UNLOADABLE_MODEL}]
    batch = embedded.post("/batches", json={"name": "mixed", "items": items}).json()
    state = _wait_batch(embedded, batch["id"], lambda b: b["status"] != "running", 60)
    assert state["status"] == "finished", state
    assert state["counts"] == {"queued": 0, "running": 0, "succeeded": 4, "failed": 1,
                               "cancelled": 0}
    assert state["progress"] == 1.0 and state["images"] == 4 and state["eta_seconds"] == 0
    lines = _lines(embedded, batch["id"])
    assert [line["status"] for line in lines] == ["succeeded"] * 4 + ["failed"]
    assert "could not be loaded" in lines[4]["error"] and lines[4]["urls"] == []
    assert [line["seed"] for line in lines[:3]] == [0, 1, 2]
    for line in lines[:4]:
        image = decode(embedded.get(line["urls"][0]).content)
        assert image.size == (64, 64)
    assert decode(embedded.get(lines[3]["urls"][0]).content).format == "WEBP"

    response = embedded.get(f"/batches/{batch['id']}/results", params={"format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["index"] for row in rows] == ["0", "1", "2", "3", "4"]
    assert rows[0]["urls"].split(" ")[0].startswith("http")
    assert embedded.get(rows[0]["urls"].split(" ")[0]).status_code == 200
    assert json.loads(rows[1]["parameters"])["seed"] == 1 and rows[4]["status"] == "failed"
    assert embedded.post(f"/batches/{batch['id']}/cancel").status_code == 409


def test_cancel_while_running_keeps_finished_images(embedded: TestClient) -> None:
    batch = embedded.post("/batches", json={"items": _items(30)}).json()
    _wait_batch(embedded, batch["id"], lambda b: b["counts"]["succeeded"] >= 2)
    response = embedded.post(f"/batches/{batch['id']}/cancel")
    assert response.status_code in (200, 202)
    at_cancel = response.json()["counts"]
    # Every queued item is cancelled at once; how many had finished by then depends on the
    # machine's load, so the bounds come from the cancel's own answer, not a guess.
    assert at_cancel["queued"] == 0 and at_cancel["cancelled"] > 0
    state = _wait_batch(embedded, batch["id"],
                        lambda b: b["counts"]["queued"] + b["counts"]["running"] == 0)
    counts = state["counts"]
    assert state["status"] == "cancelled" and counts["failed"] == 0
    assert counts["succeeded"] >= max(2, at_cancel["succeeded"])
    assert counts["succeeded"] <= at_cancel["succeeded"] + at_cancel["running"]
    assert counts["cancelled"] >= at_cancel["cancelled"]
    assert counts["succeeded"] + counts["cancelled"] == 30
    lines = _lines(embedded, batch["id"])
    done = [line for line in lines if line["status"] == "succeeded"]
    assert len(done) == counts["succeeded"]
    assert embedded.get(done[0]["urls"][0]).status_code == 200
    time.sleep(0.5)  # nothing cancelled ever starts
    assert embedded.get(f"/batches/{batch['id']}").json()["counts"] == counts
