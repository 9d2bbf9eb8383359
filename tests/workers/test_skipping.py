"""A worker handed messages of jobs that need no run (a cancelled batch's items) passes each
with one claim attempt and one light look, however large the batch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event

from workers.db import JobStatus, get_database
from workers.db import batches as batch_store
from workers.db.batches import NewItem
from workers.db.jobs import new_job_id
from workers.model_cache import ModelCache
from workers.runner import WorkerContext, run_job
from workers.storage.local import LocalStorage


def _context(tmp_path: Path) -> WorkerContext:
    database = get_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    database.migrate()
    return WorkerContext(database=database, storage=LocalStorage(tmp_path / "images",
                         secret=b"test"), models=ModelCache(1), stale_after=660, lease=120,
                         max_attempts=3)


@contextmanager
def _statements(context: WorkerContext) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(context.database.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(context.database.engine, "before_cursor_execute", count)


def _cancelled_batch(context: WorkerContext, size: int, webhook: str | None = None
                     ) -> list[str]:
    batch_id = new_job_id()
    items = [NewItem(job_id=new_job_id(), model="fractal", request={"prompt": "x"})
             for _ in range(size)]
    with context.database.session() as session:
        batch_store.create_batch(session, batch_id=batch_id, name=None, output_format="png",
                                 items=items, webhook_url=webhook)
    with context.database.session() as session:
        batch_store.cancel_batch(session, batch_id)
        if webhook is not None:  # its batch.completed has gone out (the API sends it)
            assert batch_store.claim_notification(session, batch_id)
    return [item.job_id for item in items]


def test_a_cancelled_batch_item_costs_two_statements_however_large_the_batch(
        tmp_path: Path) -> None:
    context = _context(tmp_path)
    plain = _cancelled_batch(context, 3000)
    hooked = _cancelled_batch(context, 3000, webhook="https://hooks.example/done")
    for job_id in (plain[0], plain[1500], plain[-1], hooked[0], hooked[-1]):
        with _statements(context) as seen:
            assert run_job(job_id, context) == JobStatus.CANCELLED
        # The claim attempt, then one look at the row and its batch: no scan of the
        # batch's items, no dead-worker checks for a row that has already ended.
        assert len(seen) == 2, seen
