"""Webhooks: signing, one delivery attempt against a real receiver on 127.0.0.1, the retry
schedule, once-only batch events, and deliveries through a real Celery worker."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from api.app import create_app
from workers import webhooks
from workers.db import ApiKey, Batch, Database, JobStatus, get_database
from workers.db import batches as batch_store
from workers.db import jobs as job_store
from workers.db.batches import NewItem
from workers.db.models import utcnow
from workers.job_errors import RENDER_FAILED, JobError
from workers.settings import Settings
from workers.webhooks import Outcome

# --------------------------------------------------------------------------- a receiver


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Records every POST; answers each path with its scripted statuses in turn (the last
    one repeats), 200 for a path with no script."""

    base: str
    deliveries: list[Delivery] = field(default_factory=list)
    scripts: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str) -> int:
        with self.lock:
            script = self.scripts.get(path)
            if not script:
                return 200
            return script.pop(0) if len(script) > 1 else script[0]

    def at(self, path: str) -> list[Delivery]:
        with self.lock:
            return [delivery for delivery in self.deliveries if delivery.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 60) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.at(path)) < count:
            assert time.monotonic() < deadline, f"{path}: {len(self.at(path))} deliveries, " \
                                                f"wanted {count}"
            time.sleep(0.05)
        return self.at(path)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            recorded = state["receiver"]
            with recorded.lock:
                recorded.deliveries.append(Delivery(self.path, dict(self.headers.items()),
                                                    body, time.monotonic()))
            status = recorded.answer(self.path)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state["receiver"] = Receiver(f"http://127.0.0.1:{httpd.server_address[1]}")
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield state["receiver"]
    httpd.shutdown()
    httpd.server_close()


SECRET = webhooks.new_webhook_secret()


def _event(url: str, message_id: str = "msg_test") -> webhooks.Event:
    body = json.dumps({"type": "job.succeeded", "timestamp": "2026-01-01T00:00:00Z",
                       "data": {"id": "abc"}})
    return {"message_id": message_id, "url": url, "owner": None, "type": "job.succeeded",
            "body": body}


def _verify(delivery: Delivery, secret: str = SECRET) -> dict:
    headers = {name.lower(): value for name, value in delivery.headers.items()}
    return Webhook(secret).verify(delivery.body, headers)


# --------------------------------------------------------------------------- secrets


def test_new_secrets_are_standard_webhooks_secrets() -> None:
    secrets = {webhooks.new_webhook_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert secret.startswith("whsec_") and len(secret) <= 64  # ApiKey.webhook_secret
        Webhook(secret)


def test_the_server_secret_is_stable_and_follows_the_secret_key(tmp_path: Path) -> None:
    one = webhooks.server_webhook_secret(Settings(data_dir=tmp_path, secret_key="a"))
    assert one == webhooks.server_webhook_secret(Settings(data_dir=tmp_path, secret_key="a"))
    assert one != webhooks.server_webhook_secret(Settings(data_dir=tmp_path, secret_key="b"))
    from_file = webhooks.server_webhook_secret(Settings(data_dir=tmp_path))
    assert from_file == webhooks.server_webhook_secret(Settings(data_dir=tmp_path))
    assert one.startswith("whsec_")
    Webhook(from_file)


# --------------------------------------------------------------------------- one attempt


def test_a_delivery_is_signed_and_verifiable(receiver: Receiver) -> None:
    event = _event(receiver.base + "/signed")
    outcome, detail, _ = webhooks.deliver_once(event, SECRET, timeout=2, allow_private=True)
    assert (outcome, detail) == (Outcome.DELIVERED, "answered 200")
    [delivery] = receiver.at("/signed")
    assert delivery.headers["webhook-id"] == "msg_test"
    assert delivery.headers["Content-Type"] == "application/json"
    assert abs(int(delivery.headers["webhook-timestamp"]) - time.time()) < 10
    assert _verify(delivery)["data"] == {"id": "abc"}
    with pytest.raises(Exception, match="signature"):
        _verify(delivery, webhooks.new_webhook_secret())  # another key's secret fails


@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.DELIVERED), (204, Outcome.DELIVERED), (500, Outcome.RETRY),
    (503, Outcome.RETRY), (408, Outcome.RETRY), (429, Outcome.RETRY), (302, Outcome.RETRY),
    (400, Outcome.GIVE_UP), (401, Outcome.GIVE_UP), (404, Outcome.GIVE_UP),
    (410, Outcome.GIVE_UP),
])
def test_the_answer_decides_the_outcome(receiver: Receiver, status: int,
                                        outcome: Outcome) -> None:
    path = f"/status-{status}"
    receiver.scripts[path] = [status]
    got, detail, _ = webhooks.deliver_once(_event(receiver.base + path), SECRET, timeout=2,
                                           allow_private=True)
    assert (got, detail) == (outcome, f"answered {status}")


def test_private_receivers_are_refused_by_default(receiver: Receiver) -> None:
    outcome, detail, _ = webhooks.deliver_once(_event(receiver.base + "/private"), SECRET,
                                               timeout=2, allow_private=False)
    assert outcome is Outcome.GIVE_UP and "not a public address" in detail
    outcome, detail, _ = webhooks.deliver_once(
        _event("http://169.254.169.254/latest/meta-data/"), SECRET, timeout=2,
        allow_private=True)
    assert outcome is Outcome.GIVE_UP and "metadata" in detail
    assert receiver.at("/private") == []


def test_an_unreachable_receiver_is_retried() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        outcome, detail, _ = webhooks.deliver_once(_event(url), SECRET, timeout=2,
                                                   allow_private=True)
    assert outcome is Outcome.RETRY and "could not connect" in detail


def test_the_retry_schedule_doubles_with_jitter() -> None:
    for attempt in range(1, 8):
        delays = [webhooks.retry_delay(attempt, 2.0) for _ in range(200)]
        base = 2.0 * 2 ** (attempt - 1)
        assert all(0.5 * base <= delay < 1.5 * base for delay in delays)
        assert len(set(delays)) > 100  # jitter: receivers that failed together spread out
    assert webhooks.retry_delay(1, 2.0, retry_after=30) >= 30  # the receiver's Retry-After
    assert webhooks.retry_delay(30, 2.0) == webhooks.MAX_DELAY


# --------------------------------------------------------------------------- scheduling


@pytest.fixture
def database(database_url: str) -> Database:
    """The job store, on SQLite and on PostgreSQL."""
    database = get_database(database_url)
    database.migrate()
    return database


def _job(database: Database, webhook_url: str | None, owner: str | None = None) -> str:
    job_id = job_store.new_job_id()
    with database.session() as session:
        job_store.create_job(session, job_id=job_id, model="fractal", request={"prompt": "x"},
                             owner=owner, webhook_url=webhook_url)
    return job_id


def _finish(database: Database, job_id: str, status: JobStatus, *, ran: bool = True) -> None:
    with database.session() as session:
        if ran:
            job_store.start_job(session, job_id)
        job_store.finish_job(session, job_id, status,
                             outputs=[{"index": 0, "key": f"renders/{job_id}/0.png",
                                       "record_key": f"renders/{job_id}/0.json", "seed": 7,
                                       "width": 8, "height": 8, "format": "png",
                                       "record": {"seed": 7}}]
                             if status is JobStatus.SUCCEEDED else None,
                             error=JobError(RENDER_FAILED, "boom")
                             if status is JobStatus.FAILED else None)


def test_a_finished_job_schedules_its_event(database: Database, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, public_url="https://fractals.example")
    sent: list[webhooks.Event] = []
    job_id = _job(database, "https://hooks.example/x")
    assert webhooks.schedule_job_events(database, job_id, settings, send=sent.append) == 0
    _finish(database, job_id, JobStatus.SUCCEEDED)
    assert webhooks.schedule_job_events(database, job_id, settings, send=sent.append) == 1
    [event] = sent
    assert event["type"] == "job.succeeded" and event["url"] == "https://hooks.example/x"
    assert event["message_id"] == f"msg_{job_id}_succeeded"
    payload = json.loads(event["body"])
    assert payload["type"] == "job.succeeded" and payload["timestamp"].endswith("Z")
    data = payload["data"]
    assert data["id"] == job_id and data["status"] == "succeeded" and data["error"] is None
    assert data["outputs"] == [{"index": 0, "key": f"renders/{job_id}/0.png",
                                "record_key": f"renders/{job_id}/0.json", "seed": 7,
                                "width": 8, "height": 8, "format": "png"}]
    assert data["url"] == f"https://fractals.example/jobs/{job_id}"

    quiet = _job(database, None)
    _finish(database, quiet, JobStatus.FAILED)
    assert webhooks.schedule_job_events(database, quiet, settings, send=sent.append) == 0


def test_failed_and_cancelled_events(database: Database, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    sent: list[webhooks.Event] = []
    failed, cancelled = _job(database, "https://h.example/"), _job(database, "https://h.example/")
    _finish(database, failed, JobStatus.FAILED)
    with database.session() as session:
        job_store.request_cancel(session, cancelled)  # cancelled while queued: never ran
    for job_id in (failed, cancelled):
        webhooks.schedule_job_events(database, job_id, settings, send=sent.append)
    assert [event["type"] for event in sent] == ["job.failed", "job.cancelled"]
    assert json.loads(sent[0]["body"])["data"]["error"] == "boom"
    # A worker that later meets the cancelled job's message notifies (it never ran), but
    # not for a job that ran: the worker that ran it did.
    assert webhooks.schedule_job_events(database, cancelled, settings, unstarted_only=True,
                                        send=sent.append) == 1
    assert webhooks.schedule_job_events(database, failed, settings, unstarted_only=True,
                                        send=sent.append) == 0


def test_a_batch_completes_once(database: Database, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    sent: list[webhooks.Event] = []
    items = [NewItem(job_id=job_store.new_job_id(), model="fractal", request={"prompt": "x"})
             for _ in range(3)]
    with database.session() as session:
        batch_store.create_batch(session, batch_id="b1", name="three", output_format="png",
                                 items=items, owner=None, webhook_url="https://h.example/b")
    for item, status in zip(items, (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                    JobStatus.SUCCEEDED), strict=True):
        _finish(database, item.job_id, status)
        webhooks.schedule_job_events(database, item.job_id, settings, send=sent.append)
    webhooks.schedule_job_events(database, items[-1].job_id, settings, send=sent.append)
    [event] = sent  # items have no webhooks of their own; the batch's comes once
    assert event["type"] == "batch.completed" and event["message_id"] == "msg_batch_b1"
    data = json.loads(event["body"])["data"]
    assert (data["id"], data["name"], data["total"]) == ("b1", "three", 3)
    assert data["counts"]["succeeded"] == 2 and data["counts"]["failed"] == 1
    with database.session() as session:
        assert session.get(Batch, "b1").notified_at is not None


def test_many_workers_claim_a_batch_event_once(database: Database) -> None:
    items = [NewItem(job_id=job_store.new_job_id(), model="fractal", request={})]
    with database.session() as session:
        batch_store.create_batch(session, batch_id="b2", name=None, output_format="png",
                                 items=items, webhook_url="https://h.example/b")
    _finish(database, items[0].job_id, JobStatus.SUCCEEDED)
    wins: list[bool] = []
    start = threading.Barrier(8)

    def claim() -> None:
        start.wait()
        with database.session() as session:
            wins.append(batch_store.claim_notification(session, "b2"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_the_owner_key_signs(database: Database, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with database.session() as session:
        session.add(ApiKey(id="key_1", name="k", prefix="s2f_x", secret_hash="0" * 64,
                           webhook_secret=SECRET, created_at=utcnow()))
    assert webhooks.secret_for(database, "key_1", settings) == SECRET
    assert webhooks.secret_for(database, None, settings) == \
        webhooks.server_webhook_secret(settings)


# --------------------------------------------------------------------------- a real worker


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Settings]]:
    """The API in-process and a real embedded worker on its queue, both allowed to reach
    the receiver on 127.0.0.1, with a short backoff."""
    from tests.services import start_embedded_worker

    data_dir = tmp_path_factory.mktemp("webhooks")
    options = {"webhook_allow_private": "true", "webhook_backoff": "0.3",
               "webhook_max_attempts": "3", "sync_timeout": "30"}
    settings = Settings(data_dir=data_dir, **options)
    with TestClient(create_app(settings, start_worker=False)) as client:
        env = {"SPEC2FRACTAL_DATA_DIR": str(data_dir),
               **{f"SPEC2FRACTAL_{name.upper()}": value for name, value in options.items()}}
        worker = start_embedded_worker(env, data_dir, name="webhook-worker")
        try:
            yield client, settings
        finally:
            worker.stop(grace=5)


SMALL = {"width": 64, "height": 64, "steps": 2}


def _submit(settings: Settings, webhook_url: str) -> str:
    """A job through the API's own submission path (row, then queue message)."""
    from api.generation import Submission
    from fractal import GenerationRequest
    from workers.storage import get_storage
    from workers.task_queue import TaskQueue

    submission = Submission(get_database(settings.resolved_database_url),
                            get_storage(settings), TaskQueue(settings))
    request = GenerationRequest(prompt="a fern", seed=1, model="fractal", **SMALL)
    return submission.submit(request, None, "png", webhook_url=webhook_url)


def test_a_job_with_a_webhook_makes_one_signed_delivery(service, receiver: Receiver) -> None:
    client, settings = service
    url = receiver.base + "/job"
    response = client.post("/generate", json={"content": "a fern", **SMALL, "webhook": url})
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    with get_database(settings.resolved_database_url).session() as session:
        stored = job_store.get_job(session, job_id)
        assert stored is not None and stored.webhook_url == url, \
            "POST /generate must pass webhook_url=body.webhook on to submit_job"
    [delivery] = receiver.wait_for("/job", 1)
    payload = _verify(delivery, webhooks.server_webhook_secret(settings))
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["id"] == job_id and payload["data"]["status"] == "succeeded"
    assert payload["data"]["outputs"][0]["key"] == f"renders/{job_id}/0.png"
    assert delivery.headers["webhook-id"] == f"msg_{job_id}_succeeded"
    time.sleep(1.5)  # longer than any retry would wait: still exactly one
    assert len(receiver.at("/job")) == 1


def test_a_submitted_job_makes_one_signed_delivery(service, receiver: Receiver) -> None:
    _, settings = service
    job_id = _submit(settings, receiver.base + "/submitted")
    [delivery] = receiver.wait_for("/submitted", 1)
    payload = _verify(delivery, webhooks.server_webhook_secret(settings))
    assert (payload["type"], payload["data"]["id"]) == ("job.succeeded", job_id)
    time.sleep(1.5)  # longer than any retry would wait: still exactly one
    assert len(receiver.at("/submitted")) == 1


def test_a_refused_webhook_is_a_422(service) -> None:
    client, _ = service
    for url, reason in (("file:///tmp/x", "http or https"),
                        ("http://169.254.169.254/", "metadata"),
                        ("http://0x7f.1/", "non-standard form")):
        response = client.post("/generate", json={"content": "x", "webhook": url})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "webhook"] and reason in detail["msg"]
        response = client.post("/batches", json={"items": [{"content": "x"}], "webhook": url})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "webhook"]


def test_a_failing_receiver_is_retried_until_it_answers(service, receiver: Receiver) -> None:
    _, settings = service
    receiver.scripts["/flaky"] = [500, 503, 200]
    _submit(settings, receiver.base + "/flaky")
    deliveries = receiver.wait_for("/flaky", 3)
    secret = webhooks.server_webhook_secret(settings)
    assert len({delivery.headers["webhook-id"] for delivery in deliveries}) == 1
    assert all(_verify(delivery, secret)["type"] == "job.succeeded" for delivery in deliveries)
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(deliveries)]
    assert gaps[0] >= 0.3 * 0.5 and gaps[1] >= 0.6 * 0.5  # backoff, doubling
    time.sleep(1.5)
    assert len(receiver.at("/flaky")) == 3  # delivered: no more


def test_a_4xx_is_not_retried_and_5xx_stops_at_the_limit(service, receiver: Receiver) -> None:
    _, settings = service
    receiver.scripts["/gone"] = [410]
    receiver.scripts["/down"] = [500]
    for path in ("/gone", "/down"):
        _submit(settings, receiver.base + path)
    receiver.wait_for("/down", 3)  # webhook_max_attempts
    time.sleep(2.5)  # past any further backoff
    assert len(receiver.at("/gone")) == 1
    assert len(receiver.at("/down")) == 3


def test_a_batch_sends_batch_completed_once(service, receiver: Receiver) -> None:
    client, settings = service
    response = client.post("/batches", json={
        "name": "ferns", "template": {"content": "a fern", **SMALL},
        "grid": {"seed": [1, 2, 3]}, "webhook": receiver.base + "/batch"})
    assert response.status_code == 201, response.text
    batch_id = response.json()["id"]
    [delivery] = receiver.wait_for("/batch", 1)
    payload = _verify(delivery, webhooks.server_webhook_secret(settings))
    assert payload["type"] == "batch.completed"
    assert payload["data"]["id"] == batch_id and payload["data"]["counts"]["succeeded"] == 3
    time.sleep(1.5)
    assert len(receiver.at("/batch")) == 1
