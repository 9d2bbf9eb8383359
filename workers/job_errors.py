"""Why a job failed, as data: a code, the field it concerns, the value, a message and the
valid choices. The worker writes it on the job (``jobs.error_detail``, with the message in
``jobs.error`` for people); the API answers with a status chosen by its code
(:data:`api.errors.JOB_ERROR_STATUS`) and the client raises the exception its code names.
Nothing reads a message to learn what went wrong."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from fractal.errors import InvalidRequestError, ModelLoadError, Spec2FractalError

__all__ = ["INPUT_MISSING", "INPUT_UNAVAILABLE", "INTERNAL", "INVALID_REQUEST",
           "MODEL_UNAVAILABLE", "NOT_QUEUED", "QUEUE_UNAVAILABLE", "RENDER_FAILED",
           "STORAGE_UNAVAILABLE", "TIMEOUT", "WORKER_LOST", "JobError"]

INVALID_REQUEST = "invalid_request"  # the request, checked by the library, was refused
MODEL_UNAVAILABLE = "model_unavailable"  # the model could not be loaded
RENDER_FAILED = "render_failed"  # the library raised another of its errors
TIMEOUT = "timeout"  # the render passed the soft time limit and was stopped
INPUT_MISSING = "input_missing"  # the input image is gone from storage, or refused
INPUT_UNAVAILABLE = "input_unavailable"  # storage did not answer, on the last attempt
STORAGE_UNAVAILABLE = "storage_unavailable"  # the images could not be stored
QUEUE_UNAVAILABLE = "queue_unavailable"  # the job could not be sent to the queue
WORKER_LOST = "worker_lost"  # every attempt's worker died before the job ended
INTERNAL = "internal"  # anything else: the details are in the worker's log only

_MAX_VALUE_CHARS = 200  # a refused 60 MB data URL is not kept on the job


@dataclass(frozen=True)
class JobError:
    code: str
    message: str
    field: str | None = None
    value: Any = None
    choices: list[str] | None = None
    reason: str | None = None  # the message without the field's name and the value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobError:
        names = cls.__dataclass_fields__
        return cls(**{key: value for key, value in data.items() if key in names})

    def to_exception(self) -> Spec2FractalError:
        """The library's exception this error stands for (what a remote render raises)."""
        if self.code == INVALID_REQUEST and self.field is not None:
            return InvalidRequestError(self.field, self.value, self.reason or self.message,
                                       choices=self.choices)
        if self.code == MODEL_UNAVAILABLE:
            return ModelLoadError(self.message)
        return Spec2FractalError(self.message)

    @classmethod
    def of(cls, exc: Spec2FractalError) -> JobError:
        """The library's own errors are written for callers: kept whole, as data."""
        if isinstance(exc, InvalidRequestError):
            return cls(INVALID_REQUEST, str(exc), exc.argument, _plain(exc.value),
                       exc.choices, exc.reason)
        if isinstance(exc, ModelLoadError):
            return cls(MODEL_UNAVAILABLE, str(exc))
        return cls(RENDER_FAILED, str(exc))


NOT_QUEUED = JobError(QUEUE_UNAVAILABLE, "the job could not be queued")


def _plain(value: Any) -> Any:
    """``value`` if it is short JSON; else a note of what it was."""
    if isinstance(value, (str, bytes, list, dict)) and len(value) > _MAX_VALUE_CHARS:
        # Not encoded just to be measured: a refused 60 MB string would hold the GIL.
        return f"<{len(value)} {'characters' if isinstance(value, str) else 'items'}>"
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return f"<{type(value).__name__}>"
    return value if len(text) <= _MAX_VALUE_CHARS else f"<{len(text)} characters>"
