"""The job table: the one source of truth about a render."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "BATCH_QUEUE",
    "INTERACTIVE_QUEUE",
    "ApiKey",
    "Base",
    "Batch",
    "IdempotencyRecord",
    "Job",
    "JobStatus",
    "QueueMessage",
    "UserStyle",
    "WorkerPresence",
    "utcnow",
]

# The Celery queue a job was sent to: workers take interactive work first.
INTERACTIVE_QUEUE = "renders"
BATCH_QUEUE = "batch"


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Base(DeclarativeBase):
    pass


class Batch(Base):
    """Many jobs submitted together (POST /batches); their counts live in their job rows."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    total: Mapped[int] = mapped_column(Integer)
    output_format: Mapped[str] = mapped_column(String(8), default="png")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # When the batch's completion webhook was sent, so it is sent once.
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Job(Base):
    __tablename__ = "jobs"
    # A batch's items by status, found by seeking, not by reading all of them: its counts,
    # and whether any is left to run (asked at each item's end, thousands of times).
    __table_args__ = (Index("ix_jobs_batch_id_status", "batch_id", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=JobStatus.QUEUED)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(255))
    # The GenerationRequest as plain data, without image bytes: those live in storage.
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    input_key: Mapped[str | None] = mapped_column(String(255))
    output_format: Mapped[str] = mapped_column(String(8), default="png")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    progress_step: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    preview: Mapped[str | None] = mapped_column(Text)  # a small JPEG data URL
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # The same as data: code, field, value, message, choices (workers.job_errors.JobError).
    error_detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Set for the items of a batch: which batch, and the item's place in it (from 0).
    batch_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("batches.id"))
    batch_index: Mapped[int | None] = mapped_column(Integer)
    queue: Mapped[str] = mapped_column(String(16), default=INTERACTIVE_QUEUE,
                                       server_default=INTERACTIVE_QUEUE)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # Leases for the reconciler: when the job was last sent to the broker, and when its
    # worker last wrote (claim, progress); a job silent past its lease is sent again.
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    """A caller. The key itself is shown once at creation; only its SHA-256 is kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(16))  # shown in `keys list` to tell keys apart
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    webhook_secret: Mapped[str] = mapped_column(String(64))  # signs this key's webhooks
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # An operator's key: may also read /metrics, which shows every key's queue and counts.
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class IdempotencyRecord(Base):
    """Stripe-style Idempotency-Key: the first response to (owner, endpoint, key), kept."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)  # "" when auth is off
    endpoint: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    # The job or batch the first request created, known before its response is.
    resource_id: Mapped[str | None] = mapped_column(String(32))
    response_status: Mapped[int | None] = mapped_column(Integer)  # None: still in flight
    response_body: Mapped[str | None] = mapped_column(Text)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)


class QueueMessage(Base):
    """A task message of the embedded mode's queue (see :mod:`workers.db.messages`): with no
    broker, the job database carries the messages too."""

    __tablename__ = "queue_messages"
    # A worker takes the oldest available message of each queue in turn.
    __table_args__ = (Index("ix_queue_messages_queue_available_at", "queue", "available_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(16))
    task: Mapped[str] = mapped_column(String(64))
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Not taken before this moment: a delayed retry (Celery's countdown).
    available_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Taken by a worker until then; past it, the message is delivered again (at least once).
    taken_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deliveries: Mapped[int] = mapped_column(Integer, default=0)


class UserStyle(Base):
    """A caller's own style preset (POST /styles): the inline style object
    (fractal.styles.Style.to_table), found by its case-folded name within its owner's."""

    __tablename__ = "user_styles"
    __table_args__ = (UniqueConstraint("owner", "folded_name",
                                       name="uq_user_styles_owner_folded_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(64))  # the key's id; "" when auth is off
    name: Mapped[str] = mapped_column(String(255))
    folded_name: Mapped[str] = mapped_column(String(255))
    style: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WorkerPresence(Base):
    """A render worker's announcement (issue #22's routing): the models it serves, those it
    holds loaded, how many loads each cost it, and whether it is warm (its models loaded
    before its first job). Written every few seconds; a row not written for a while is a
    gone worker's. In the job database because both modes have one (Redis only the
    distributed mode)."""

    __tablename__ = "worker_presence"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    models: Mapped[list[str]] = mapped_column(JSON)
    loaded: Mapped[list[str]] = mapped_column(JSON)
    loads: Mapped[dict[str, int]] = mapped_column(JSON)
    # Per loaded diffusion model: its speed options as applied, with torch.compile's graph
    # and recompilation counts (ModelCache.speed).
    speed: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSON, default=dict)
    warm: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
