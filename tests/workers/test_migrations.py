"""The Alembic migrations, on SQLite and on PostgreSQL: from an empty database, and from every
earlier revision with rows in its tables, they end at exactly the schema the models describe,
and the rows come through with their data and usable by the job store."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from workers.db import Batch, Database, IdempotencyRecord, Job, JobStatus
from workers.db import batches as batch_store
from workers.db import jobs as job_store
from workers.db import keys as key_store
from workers.db import messages as message_store
from workers.db import styles as style_store
from workers.db.models import Base
from workers.db.session import MIGRATIONS

T0 = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
REQUEST = {"prompt": "a lake at dusk — «ünïcode»", "seed": 7, "style": "Watercolor",
           "size": [64, 48], "extra": {"nested": [1, 2.5, None, True]}}
OUTPUTS = [{"index": 0, "key": "renders/j-done/0.png", "record_key": "renders/j-done/0.json",
            "seed": 7, "width": 64, "height": 48, "format": "png", "record": {"seed": 7}}]


def _config(database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = database.engine
    return config


def _revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(_config(Database("sqlite://")))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


REVISIONS = _revisions()
HEAD = REVISIONS[-1]


def _job(job_id: str, **columns: Any) -> dict[str, Any]:
    """A job row as revision 0001 knew it."""
    return {"id": job_id, "status": "queued", "owner": None, "model": "fractal",
            "request": REQUEST, "input_key": None, "output_format": "png", "created_at": T0,
            "started_at": None, "finished_at": None, "progress_step": 0, "progress_total": 0,
            "preview": None, "cancel_requested": False, "attempts": 0, "error": None,
            "outputs": [], **columns}


# Representative rows for each revision, written with that revision's columns only: queued,
# running, finished and cancelled jobs; batches and their items; keys and idempotency records.
ROWS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "0001": {"jobs": [
        _job("j-queued", owner="alice", created_at=T0),
        _job("j-done", status="succeeded", owner="alice", input_key="inputs/j-done.png",
             output_format="webp", created_at=T0 + timedelta(seconds=1),
             started_at=T0 + timedelta(seconds=2), finished_at=T0 + timedelta(seconds=5),
             progress_step=20, progress_total=20, attempts=1, outputs=OUTPUTS),
        _job("j-running", status="running", created_at=T0 + timedelta(seconds=2),
             started_at=T0 + timedelta(seconds=3), progress_step=4, progress_total=20,
             preview="data:image/jpeg;base64,AAAA", attempts=2),
        _job("j-failed", status="failed", created_at=T0 + timedelta(seconds=3),
             started_at=T0 + timedelta(seconds=4), finished_at=T0 + timedelta(seconds=4.5),
             attempts=1, error="`style` is not a known style: 'Nope'"),
        _job("j-cancelled", status="cancelled", cancel_requested=True,
             created_at=T0 + timedelta(seconds=4), finished_at=T0 + timedelta(seconds=6)),
    ]},
    "0002": {
        "batches": [
            {"id": "b-sweep", "name": "sweep", "owner": "bob", "total": 2,
             "output_format": "jpeg", "created_at": T0 + timedelta(seconds=10),
             "cancel_requested": False, "cancelled_at": None},
            {"id": "b-stopped", "name": None, "owner": None, "total": 1,
             "output_format": "png", "created_at": T0 + timedelta(seconds=11),
             "cancel_requested": True, "cancelled_at": T0 + timedelta(seconds=12)},
        ],
        "jobs": [
            _job("j-item-0", owner="bob", created_at=T0 + timedelta(seconds=10),
                 batch_id="b-sweep", batch_index=0, queue="batch"),
            _job("j-item-1", status="succeeded", owner="bob",
                 created_at=T0 + timedelta(seconds=10), started_at=T0 + timedelta(seconds=13),
                 finished_at=T0 + timedelta(seconds=15), attempts=1, outputs=OUTPUTS,
                 batch_id="b-sweep", batch_index=1, queue="batch"),
            _job("j-stopped-0", status="cancelled", cancel_requested=True,
                 created_at=T0 + timedelta(seconds=11), finished_at=T0 + timedelta(seconds=12),
                 batch_id="b-stopped", batch_index=0, queue="batch"),
            _job("j-interactive", created_at=T0 + timedelta(seconds=12), batch_id=None,
                 batch_index=None, queue="renders"),
        ],
    },
    "0003": {
        "api_keys": [
            {"id": "key_0123456789abcdef", "name": "ops", "prefix": "s2f_abcdefgh",
             "secret_hash": key_store.hash_key("s2f_the-secret"),
             "webhook_secret": "whsec_c2VjcmV0", "created_at": T0,
             "last_used_at": T0 + timedelta(hours=1), "revoked_at": None},
        ],
        "idempotency_keys": [
            {"owner": "key_0123456789abcdef", "endpoint": "/generate", "key": "order-1",
             "request_hash": "ab" * 32, "resource_id": "j-hooked", "response_status": 202,
             "response_body": '{"id": "j-hooked"}',
             "response_headers": {"Location": "/jobs/j-hooked"}, "created_at": T0},
            {"owner": "", "endpoint": "/batches", "key": "in-flight", "request_hash": "cd" * 32,
             "resource_id": None, "response_status": None, "response_body": None,
             "response_headers": None, "created_at": T0 + timedelta(seconds=1)},
        ],
        "batches": [
            {"id": "b-hooked", "name": "hooked", "owner": None, "total": 1,
             "output_format": "png", "created_at": T0 + timedelta(seconds=20),
             "cancel_requested": False, "cancelled_at": None,
             "webhook_url": "https://hooks.example/batch", "notified_at": None},
        ],
        "jobs": [
            _job("j-hooked", created_at=T0 + timedelta(seconds=20), batch_id="b-hooked",
                 batch_index=0, queue="batch", webhook_url="https://hooks.example/job",
                 enqueued_at=T0 + timedelta(seconds=20),
                 heartbeat_at=None),
        ],
    },
    "0004": {
        "queue_messages": [
            {"id": 1, "queue": "renders", "task": "spec2fractal.render",
             "kwargs": {"job_id": "j-queued"}, "available_at": T0, "taken_until": None,
             "deliveries": 0},
            {"id": 2, "queue": "batch", "task": "spec2fractal.render",
             "kwargs": {"job_id": "j-item-0"}, "available_at": T0,
             "taken_until": T0 + timedelta(minutes=22), "deliveries": 1},
        ],
    },
    "0005": {  # an index on (batch_id, status): a batch with items in several states
        "batches": [
            {"id": "b-big", "name": "big", "owner": "key_0123456789abcdef", "total": 3,
             "output_format": "png", "created_at": T0 + timedelta(seconds=30),
             "cancel_requested": False, "cancelled_at": None, "webhook_url": None,
             "notified_at": None},
        ],
        "jobs": [
            _job("j-big-0", status="running", owner="key_0123456789abcdef",
                 created_at=T0 + timedelta(seconds=30), started_at=T0 + timedelta(seconds=31),
                 attempts=1, batch_id="b-big", batch_index=0, queue="batch",
                 enqueued_at=T0 + timedelta(seconds=30),
                 heartbeat_at=T0 + timedelta(seconds=31)),
            _job("j-big-1", owner="key_0123456789abcdef", created_at=T0 + timedelta(seconds=30),
                 batch_id="b-big", batch_index=1, queue="batch",
                 enqueued_at=T0 + timedelta(seconds=30), heartbeat_at=None),
            _job("j-big-2", status="cancelled", cancel_requested=True,
                 owner="key_0123456789abcdef", created_at=T0 + timedelta(seconds=30),
                 finished_at=T0 + timedelta(seconds=32), batch_id="b-big", batch_index=2,
                 queue="batch", enqueued_at=T0 + timedelta(seconds=30), heartbeat_at=None),
        ],
    },
    "0006": {  # api_keys.admin: an operator's key
        "api_keys": [
            {"id": "key_fedcba9876543210", "name": "prometheus", "prefix": "s2f_operator",
             "secret_hash": key_store.hash_key("s2f_the-operator-secret"),
             "webhook_secret": "whsec_b3BlcmF0b3I=", "created_at": T0 + timedelta(hours=2),
             "last_used_at": None, "revoked_at": None, "admin": True},
        ],
    },
    "0007": {"jobs": [
        _job("j-refused", status="failed", created_at=T0 + timedelta(seconds=30),
             started_at=T0 + timedelta(seconds=31), finished_at=T0 + timedelta(seconds=31),
             attempts=1, batch_id=None, batch_index=None, queue="renders", webhook_url=None,
             enqueued_at=T0 + timedelta(seconds=30), heartbeat_at=None,
             error="`scheduler` is not a known sampler (got 'warp')",
             error_detail={"code": "invalid_request", "field": "scheduler", "value": "warp",
                           "message": "`scheduler` is not a known sampler (got 'warp')",
                           "choices": ["ddim", "euler"], "reason": "is not a known sampler"}),
    ]},
    "0008": {"user_styles": [  # a caller's own style, and the one owner "" when auth is off
        {"id": 1, "owner": "key_0123456789abcdef", "name": "Ink Wash", "folded_name": "ink wash",
         "style": {"name": "Ink Wash", "prompt": "ink wash of {prompt}",
                   "loras": [{"name": "ink", "weight": 0.8}]},
         "created_at": T0, "updated_at": T0 + timedelta(minutes=1)},
        {"id": 2, "owner": "", "name": "Ink Wash", "folded_name": "ink wash",
         "style": {"name": "Ink Wash", "prompt": "{prompt}, sumi-e"},
         "created_at": T0, "updated_at": T0},
    ]},
    "0009": {"worker_presence": [  # a warm worker holding one of its two models
        {"name": "gpu-1:4242", "models": ["sd-turbo", "fractal"], "loaded": ["sd-turbo"],
         "loads": {"sd-turbo": 1}, "warm": True, "started_at": T0,
         "speed": {"sd-turbo": {"dtype": "float16", "compile": "inductor",
                                "compiled_graphs": 3, "recompilations": 0}},
         "seen_at": T0 + timedelta(seconds=5)},
    ]},
}
ORDER = ["batches", "jobs", "api_keys", "idempotency_keys", "queue_messages",
         "user_styles", "worker_presence"]  # FKs first
# What a column added after a row was written holds for it (else NULL).
ADDED_DEFAULTS = {"queue": "renders", "admin": False}


def _upgrade(database: Database, revision: str) -> None:
    command.upgrade(_config(database), revision)


def _insert(database: Database, revision: str) -> None:
    """Write ``ROWS[revision]`` through the tables as they are now (reflected, not the
    models: those describe the newest revision)."""
    metadata = sa.MetaData()
    metadata.reflect(database.engine)
    with database.engine.begin() as connection:
        for name in ORDER:
            rows = ROWS[revision].get(name)
            if rows:
                table = metadata.tables[name]
                # Reflected JSON columns come back as JSON on both databases: plain data in.
                connection.execute(table.insert(), rows)


def _utc(value: Any) -> Any:
    """A stored time as UTC: SQLite gives back naive datetimes (the UTC they were written in),
    PostgreSQL aware ones."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _schema_differences(database: Database) -> list[Any]:
    with database.engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def _stored(database: Database, table: str) -> dict[Any, dict[str, Any]]:
    model = {"jobs": Job, "batches": Batch, "idempotency_keys": IdempotencyRecord}.get(table)
    metadata = Base.metadata.tables[table]
    keys = [column.name for column in metadata.primary_key.columns]
    with database.engine.connect() as connection:
        rows = connection.execute(sa.select(metadata)).mappings().all()
    assert model is None or model.__table__ is metadata
    return {tuple(row[key] for key in keys): {name: _utc(value) for name, value in row.items()}
            for row in rows}


def test_every_revision_has_rows_to_migrate() -> None:
    # A new revision needs representative rows of its own in ROWS (with its new columns).
    assert list(ROWS) == REVISIONS


def test_an_empty_database_migrates_to_the_models(database_url: str) -> None:
    database = Database(database_url)
    database.migrate()
    assert _schema_differences(database) == []
    database.migrate()  # again: nothing to do, nothing breaks
    with database.engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT version_num FROM alembic_version")) == HEAD


@pytest.mark.parametrize("start", REVISIONS)
def test_a_database_with_data_migrates_from_each_revision(database_url: str,
                                                          start: str) -> None:
    """Rows written at ``start`` and at every revision up to it survive the upgrade to the
    newest revision unchanged, new columns take their defaults, and the store can use them."""
    database = Database(database_url)
    written: list[str] = []
    for revision in REVISIONS[:REVISIONS.index(start) + 1]:
        _upgrade(database, revision)
        _insert(database, revision)
        written.append(revision)
    database.migrate()
    assert _schema_differences(database) == []

    for table in ORDER:
        stored = _stored(database, table)
        expected = [row for revision in written for row in ROWS[revision].get(table, [])]
        assert len(stored) == len(expected), table
        primary = [column.name for column in Base.metadata.tables[table].primary_key.columns]
        for row in expected:
            got = stored[tuple(row[key] for key in primary)]
            assert {name: got[name] for name in row} == row, (table, row)
            # A column added after the row was written: its default (or NULL).
            for name, value in got.items():
                if name not in row:
                    assert value == ADDED_DEFAULTS.get(name), (table, name)

    # The store works on the old rows: claim and finish an old queued job, list, count.
    with database.session() as session:
        claimed = job_store.start_job(session, "j-queued")
        assert claimed is not None and claimed.attempts == 1
        job_store.finish_job(session, "j-queued", JobStatus.SUCCEEDED, outputs=OUTPUTS)
    with database.session() as session:
        jobs, _ = job_store.list_jobs(session, owner="alice", style="Watercolor")
        assert {job.id for job in jobs} == {"j-queued", "j-done"}
        # Batch partners: interactive jobs first, then oldest first.
        waiting = sorted((row for revision in written for row in ROWS[revision].get("jobs", [])
                          if row["status"] == "queued" and row["id"] != "j-queued"),
                         key=lambda row: (row.get("queue", "renders") != "renders",
                                          row["created_at"], row["id"]))
        assert [job.id for job in job_store.queued_candidates(session, "fractal", 10)] == [
            row["id"] for row in waiting]
        assert job_store.get_job(session, "j-done").outputs == OUTPUTS
    if "0002" in written:
        with database.session() as session:
            counts = batch_store.counts_for(session, ["b-sweep", "b-stopped"])
        assert counts["b-sweep"].by_status["queued"] == 1
        assert counts["b-sweep"].by_status["succeeded"] == 1
        assert counts["b-sweep"].images == 1
        # SQLite's julianday() is a double: a few microseconds off.
        assert counts["b-sweep"].mean_seconds == pytest.approx(2.0, abs=1e-3)
        assert counts["b-stopped"].by_status["cancelled"] == 1
    if "0003" in written:
        with database.session() as session:
            assert key_store.find_key(session, "s2f_the-secret").name == "ops"
    if "0004" in written:  # the embedded queue takes the waiting message, not the taken one
        with database.session() as session:
            message = message_store.take(session, ["renders", "batch"], 60)
        assert message is not None and message.id == 1 and message.deliveries == 1
    if "0005" in written:  # a key's batch work, as admission counts it
        with database.session() as session:
            assert batch_store.count_unfinished_items(session, "key_0123456789abcdef") == 2
            assert batch_store.count_queued_items(session) == sum(
                1 for revision in written for row in ROWS[revision].get("jobs", [])
                if row.get("queue") == "batch" and row["status"] == "queued")
            assert batch_store.counts_for(session, ["b-big"])["b-big"].remaining == 2
    if "0006" in written:
        with database.session() as session:
            assert key_store.find_key(session, "s2f_the-operator-secret").admin is True
            assert key_store.find_key(session, "s2f_the-secret").admin is False
    if "0008" in written:  # each owner finds its own style, by any case of its name
        with database.session() as session:
            mine = style_store.get_style(session, "key_0123456789abcdef", "INK WASH")
            assert mine is not None and mine.style["loras"] == [{"name": "ink", "weight": 0.8}]
            assert style_store.get_style(session, None, "ink wash").style["prompt"] == \
                "{prompt}, sumi-e"
            with pytest.raises(style_store.StyleExists):
                style_store.create_style(session, None, {"name": "ink WASH",
                                                         "prompt": "{prompt}"})


def _migrate(url: str, barrier: Any) -> None:
    database = Database(url)
    barrier.wait()
    database.migrate()


def test_several_processes_migrate_an_empty_database_at_once(database_url: str) -> None:
    """An API and its workers start together on a new database (docker compose up): each
    migrates as it starts, and every one of them must come up."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    processes = [context.Process(target=_migrate, args=(database_url, barrier))
                 for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [process.exitcode for process in processes] == [0] * 4
    database = Database(database_url)
    assert _schema_differences(database) == []
    with database.engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT count(*) FROM alembic_version")) == 1
