"""The broker fails: Redis crashes (with its append-only file, or with nothing on disk), and
the reconciler sends again whatever the broker lost — in the distributed shape (PostgreSQL)
and the embedded one (SQLite); the reconcilers' own tests run on both databases."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from tests.render_stack import RenderStack
from tests.services import start_embedded_worker, wait_for
from workers.db import Database, Job, JobStatus, get_database
from workers.db import jobs as job_store
from workers.db.models import utcnow
from workers.reconciler import Reconciler

SMALL = {"prompt": "a lake", "width": 256, "height": 192}
BIG = {"prompt": "a lake at dusk", "width": 1536, "height": 1536}


def _all_succeeded(stack: RenderStack, ids: list[str], max_attempts: int) -> None:
    audit = stack.audit(ids)
    assert audit.clean, audit.summary()
    assert len(audit.succeeded) == len(ids), audit.summary()
    assert max(audit.attempts.values()) <= max_attempts, audit.attempts


def test_queued_jobs_survive_redis_crashes(render_stack: Callable[..., RenderStack]) -> None:
    # appendonly yes + appendfsync always: a message Redis acknowledged is on disk.
    stack = render_stack(appendonly=True)
    ids = [stack.submit({**SMALL, "seed": seed}) for seed in range(10)]
    redis = stack.redis.client()
    assert redis.llen("renders") == 10
    stack.redis.crash()  # SIGKILL, with no worker running: every job is only a message
    stack.redis.restart()
    assert redis.llen("renders") == 10, "the append-only file kept every message"
    stack.start_worker()
    # Once more while the worker drains the queue: it reconnects and goes on.
    more = [stack.submit({**SMALL, "seed": seed}) for seed in range(10, 20)]
    wait_for(lambda: sum(job.status == JobStatus.SUCCEEDED
                         for job in stack.jobs(ids + more)) >= 12,
             timeout=60, what="a dozen jobs to finish")
    stack.redis.crash()
    stack.redis.restart()
    stack.wait(ids + more, timeout=90)
    _all_succeeded(stack, ids + more, max_attempts=1)


def test_a_broker_that_lost_its_data_loses_no_job(
        render_stack: Callable[..., RenderStack]) -> None:
    stack = render_stack(appendonly=False)
    worker = stack.start_worker()
    ids = [stack.submit({**BIG, "seed": seed}) for seed in range(8)]
    victim = stack.wait_for_progress(ids, 2, 6)
    # The worker dies mid-render, and Redis restarts with nothing: the queued messages, and
    # the running job's unacknowledged one, are all gone.
    worker.kill()
    stack.redis.crash()
    stack.redis.restart()
    assert stack.redis.client().dbsize() == 0
    statuses = [job.status for job in stack.jobs(ids)]
    assert JobStatus.QUEUED in statuses and JobStatus.RUNNING in statuses

    revived = stack.start_worker()
    stack.wait(ids, timeout=90)
    _all_succeeded(stack, ids, max_attempts=2)
    assert stack.job(victim.id).attempts == 2
    log = revived.log()
    assert "reconciler: re-sent queued job" in log
    assert "reconciler: re-sent running job" in log


def test_the_embedded_worker_reconciles_its_queue(tmp_path: Path) -> None:
    """No broker at all: a job recorded but never sent (the server died between the two) is
    sent by the embedded worker's reconciler."""
    data = tmp_path / "data"
    database = get_database(f"sqlite:///{data / 'spec2fractal.db'}")
    database.migrate()
    with database.session() as session:
        job = job_store.create_job(session, job_id=job_store.new_job_id(), model="fractal",
                                   request={**SMALL, "seed": 1})
    env = {"SPEC2FRACTAL_DATA_DIR": str(data), "SPEC2FRACTAL_QUEUED_LEASE": "1",
           "SPEC2FRACTAL_RECONCILE_INTERVAL": "0.3"}
    worker = start_embedded_worker(env, tmp_path, name="embedded")
    try:
        def finished() -> Job | None:
            with database.session() as session:
                current = job_store.get_job(session, job.id)
                return current if current.status == JobStatus.SUCCEEDED else None

        done = wait_for(finished, timeout=30, what="the unsent job to succeed",
                        process=worker)
        assert done.attempts == 1
        assert (data / "images" / "renders" / job.id / "0.png").is_file()
        assert "reconciler: re-sent queued job" in worker.log()
    finally:
        worker.stop()


def _age(database: Database, job_id: str, **columns: float) -> None:
    values = {name: utcnow() - timedelta(seconds=seconds) for name, seconds in columns.items()}
    with database.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def test_reconcilers_resend_each_lost_job_once(database_url: str) -> None:
    database = get_database(database_url)
    database.migrate()
    with database.session() as session:
        ids = [job_store.create_job(session, job_id=job_store.new_job_id(), model="fractal",
                                    request=dict(SMALL)).id for _ in range(4)]
        for job_id in ids[2:]:
            job_store.start_job(session, job_id)
    lost_queued, fresh_queued, dead_running, live_running = ids
    _age(database, lost_queued, enqueued_at=60)
    _age(database, dead_running, heartbeat_at=30)
    sent: list[tuple[str, str]] = []

    def send(job_id: str, queue: str) -> None:
        sent.append((job_id, queue))

    def reconciler(sender: Callable[[str, str], None] = send) -> Reconciler:
        return Reconciler(database, sender, queued_lease=10, job_lease=5, interval=1)

    # Two workers' reconcilers look at the same moment: each lost job is sent once.
    first, second = reconciler().run_once(), reconciler().run_once()
    assert (first.queued, first.running, second.total) == (1, 1, 0)
    assert sorted(sent) == sorted([(lost_queued, "renders"), (dead_running, "renders")])
    with database.session() as session:
        dead = job_store.get_job(session, dead_running)
        assert (dead.status, dead.attempts) == (JobStatus.QUEUED, 1)  # its next run is #2
        assert job_store.get_job(session, live_running).status == JobStatus.RUNNING
        assert job_store.get_job(session, fresh_queued).enqueued_at is not None

    # A send that fails (the broker is down) is tried again at the next look.
    _age(database, lost_queued, enqueued_at=60)

    def broken(job_id: str, queue: str) -> None:
        raise ConnectionError("broker down")

    assert reconciler(broken).run_once().failed_sends == 1
    sent.clear()
    assert reconciler().run_once().queued == 1 and sent == [(lost_queued, "renders")]


def test_a_busy_worker_does_not_resend_a_backlog(database_url: str) -> None:
    """Jobs waiting their turn behind a busy worker are not lost: no duplicates for them.
    A dead worker's job is queued again whatever this worker is doing."""
    database = get_database(database_url)
    database.migrate()
    with database.session() as session:
        waiting, orphan = (job_store.create_job(session, job_id=job_store.new_job_id(),
                                                model="fractal", request=dict(SMALL)).id
                           for _ in range(2))
        job_store.start_job(session, orphan)
    _age(database, waiting, enqueued_at=60)
    _age(database, orphan, heartbeat_at=30)
    sent: list[str] = []
    busy = Reconciler(database, lambda job_id, queue: sent.append(job_id), queued_lease=10,
                      job_lease=5, interval=1, idle=lambda: False)
    assert (busy.run_once().queued, sent) == (0, [orphan])
    idle = Reconciler(database, lambda job_id, queue: sent.append(job_id), queued_lease=10,
                      job_lease=5, interval=1, idle=lambda: True)
    assert idle.run_once().queued == 1 and sent == [orphan, waiting]
