"""Every error the client raises, in one hierarchy, chosen by the answer's status.

``APIError`` is the root. ``APIConnectionError`` (and its ``APITimeoutError``) mean no answer
came; ``APIStatusError`` and its subclasses carry the answer's ``status_code``, parsed
``body``, ``message`` and ``retry_after``. A job that ended badly while the client waited for
it raises ``JobFailedError`` or ``JobCancelledError``, with the job.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "InternalServerError",
    "JobCancelledError",
    "JobFailedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "UnprocessableEntityError",
    "ValidationError",
    "error_for",
]


class APIError(Exception):
    """Anything that went wrong talking to a Spec-2-Fractal server."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIConnectionError(APIError):
    """The server could not be reached, or the connection broke before an answer."""


class APITimeoutError(APIConnectionError):
    """No answer within the client's timeout."""


class APIStatusError(APIError):
    """The server answered with an error status."""

    status_code: int = 0

    def __init__(self, message: str, *, status_code: int, body: Any = None,
                 headers: dict[str, str] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.headers = headers or {}
        self.retry_after = retry_after

    @property
    def job_id(self) -> str | None:
        """The job the error is about, when the server names one."""
        if isinstance(self.body, dict):
            inner = self.body.get("error") if isinstance(self.body.get("error"), dict) else {}
            found = self.body.get("job_id") or inner.get("job_id")
            return str(found) if found else None
        return None


class BadRequestError(APIStatusError):
    status_code = 400


class AuthenticationError(APIStatusError):
    status_code = 401


class PermissionDeniedError(APIStatusError):
    status_code = 403


class NotFoundError(APIStatusError):
    status_code = 404


class ConflictError(APIStatusError):
    """409: a cancelled job, a finished one, or a request with this Idempotency-Key still
    in progress."""

    status_code = 409


class PayloadTooLargeError(APIStatusError):
    status_code = 413


class UnprocessableEntityError(APIStatusError):
    """422: a field is wrong. ``loc`` is where (``["body", "width"]``), ``field`` its name,
    ``errors`` every entry the server gave."""

    status_code = 422

    @property
    def errors(self) -> list[dict[str, Any]]:
        detail = self.body.get("detail") if isinstance(self.body, dict) else None
        return [entry for entry in detail if isinstance(entry, dict)] \
            if isinstance(detail, list) else []

    @property
    def loc(self) -> list[str | int]:
        return list(self.errors[0].get("loc") or []) if self.errors else []

    @property
    def field(self) -> str | None:
        # As the library names arguments: ``control[0].type``, ``items[3].width``.
        text = ""
        for part in self.loc:
            if part in ("body", "query", "header"):
                continue
            text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
        return text or None


ValidationError = UnprocessableEntityError


class RateLimitError(APIStatusError):
    """429: the key's rate limit or its quota of unfinished jobs; see ``retry_after``."""

    status_code = 429


class InternalServerError(APIStatusError):
    """5xx other than 503: the render failed on the server (502) or worse."""

    status_code = 500


class ServiceUnavailableError(APIStatusError):
    """503: the queue is full or a backend is down; see ``retry_after``."""

    status_code = 503


class JobFailedError(APIError):
    def __init__(self, message: str, job: Any) -> None:
        super().__init__(message)
        self.job = job

    @property
    def code(self) -> str | None:
        """Why, as the server's error code (e.g. ``invalid_request``, ``timeout``)."""
        detail = getattr(self.job, "error_detail", None) or {}
        return detail.get("code")


class JobCancelledError(JobFailedError):
    pass


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError,
    404: NotFoundError, 409: ConflictError, 413: PayloadTooLargeError,
    422: UnprocessableEntityError, 429: RateLimitError, 503: ServiceUnavailableError,
}


def _message(status: int, body: Any) -> str:
    if isinstance(body, dict):
        if isinstance(body.get("error"), dict):  # the OpenAI-compatible routes' shape
            return str(body["error"].get("message") or f"HTTP {status}")
        detail = body.get("detail")
        if isinstance(detail, list):
            parts = []
            for entry in detail:
                if isinstance(entry, dict):
                    loc = [str(part) for part in entry.get("loc") or [] if part != "body"]
                    msg = str(entry.get("msg") or "is invalid")
                    parts.append(msg if not loc or f"`{loc[-1]}`" in msg
                                 else f"`{'.'.join(loc)}` {msg}")
            return "; ".join(parts) or f"HTTP {status}"
        if detail is not None:
            return str(detail)
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return f"HTTP {status}"


def error_for(status: int, body: Any, headers: dict[str, str],
              retry_after: float | None) -> APIStatusError:
    """The exception for an error answer."""
    kind = _BY_STATUS.get(status) or (InternalServerError if status >= 500 else APIStatusError)
    return kind(_message(status, body), status_code=status, body=body, headers=headers,
                retry_after=retry_after)
