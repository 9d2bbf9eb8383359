"""What the server answers, as typed objects. Unknown fields are kept (``extra="allow"``), so
a newer server never breaks an older client."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Batch",
    "BatchCounts",
    "BatchItemResult",
    "BatchPage",
    "Job",
    "JobEvent",
    "JobPage",
    "JobStatus",
    "LoraInfo",
    "Output",
    "Progress",
    "StyleInfo",
    "Timings",
]

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED = frozenset({"succeeded", "failed", "cancelled"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Progress(_Model):
    step: int = 0
    total: int = 0
    preview: str | None = None


class Timings(_Model):
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    queue_seconds: float | None = None
    render_seconds: float | None = None


class Output(_Model):
    index: int
    url: str
    thumbnail_url: str | None = None  # a WebP ≤ 512 px; None from servers before thumbnails
    record_url: str | None = None
    seed: int | None = None
    width: int
    height: int
    format: str
    record: dict[str, Any] = Field(default_factory=dict)


class Job(_Model):
    id: str
    status: JobStatus
    model: str
    output_format: str = "png"
    request: dict[str, Any] = Field(default_factory=dict)
    progress: Progress = Field(default_factory=Progress)
    timings: Timings
    outputs: list[Output] = Field(default_factory=list)
    error: str | None = None
    # Why it failed, as data: code, field, value, message, choices, reason.
    error_detail: dict[str, Any] | None = None
    attempts: int = 0
    cancel_requested: bool = False
    links: dict[str, str] = Field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class JobPage(_Model):
    jobs: list[Job]
    next_cursor: str | None = None


class JobEvent(_Model):
    """One Server-Sent Event of GET /jobs/{id}/events.

    ``type``: queued, started, progress, then succeeded, failed or cancelled (``job`` holds
    the finished job). Progress events carry ``step``, ``total`` and perhaps a ``preview``
    (a small JPEG data URL)."""

    type: str
    id: str | None = None
    job_id: str | None = None
    step: int | None = None
    total: int | None = None
    preview: str | None = None
    attempt: int | None = None
    job: Job | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.type in FINISHED

    @classmethod
    def parse(cls, name: str, data: str, event_id: str | None) -> JobEvent:
        try:
            payload = json.loads(data) if data else {}
        except ValueError:
            payload = {"text": data}
        if not isinstance(payload, dict):
            payload = {"value": payload}
        fields: dict[str, Any] = {"type": name, "id": event_id, "data": payload}
        if name in FINISHED:
            fields["job"] = Job.model_validate(payload)
            fields["job_id"] = payload.get("id")
        else:
            for key in ("job_id", "step", "total", "preview", "attempt"):
                if key in payload:
                    fields[key] = payload[key]
        return cls.model_validate(fields)


class BatchCounts(_Model):
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0


class Batch(_Model):
    id: str
    name: str | None = None
    status: Literal["running", "finished", "cancelled"]
    created_at: datetime
    output_format: str = "png"
    total: int
    counts: BatchCounts
    finished: int
    progress: float
    images: int
    eta_seconds: float | None = None
    cancel_requested: bool = False
    links: dict[str, str] = Field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status != "running"


class BatchPage(_Model):
    batches: list[Batch]
    next_cursor: str | None = None


class BatchItemResult(_Model):
    index: int
    job_id: str
    status: JobStatus
    parameters: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    seeds: list[int | None] = Field(default_factory=list)
    urls: list[str] = Field(default_factory=list)
    thumbnail_urls: list[str] = Field(default_factory=list)
    error: str | None = None
    job_url: str | None = None


class StyleInfo(_Model):
    """A style (GET /styles): ``source`` "builtin", "operator" or "user" (the key's own);
    ``template`` holds ``{prompt}``; ``loras`` [{"name", "weight"}]."""

    name: str
    description: str = ""
    effect: str | None = None
    template: str = "{prompt}"
    negative_prompt: str = ""
    palette: list[str] | None = None
    lighting: str | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    source: str = "builtin"
    loras: list[dict[str, Any]] = Field(default_factory=list)


class LoraInfo(_Model):
    """A LoRA file on the server (GET /loras): what requests name it by, the model family
    it was trained for (when its shapes tell), its key format, size and short hash."""

    name: str
    family: str | None = None
    format: str = "unknown"
    size: int = 0
    hash: str = ""
