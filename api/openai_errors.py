"""OpenAI's error shape on /v1, and nowhere else.

Clients of the OpenAI-compatible routes (the official SDKs, tools written for OpenAI) read
``{"error": {"message", "type", "param", "code"}}`` and treat 400 as "invalid parameters". The
rest of the API keeps FastAPI's ``{"detail": ...}`` and its 422. One pure-ASGI middleware
rewrites every error answer under /v1, whoever produced it: a route's ApiError, a validation
failure, the Gatekeeper's 401 and 429 (which answer before any route or exception handler
runs), a 404 for an unknown /v1 path or a 405. Successful answers pass through untouched
and unbuffered; error bodies are small.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ERROR_RESPONSES", "PREFIX", "OpenAIErrorShape", "openai_error"]

PREFIX = "/v1"

_TYPES = {401: "invalid_request_error", 429: "requests"}
_STATUS_CODES = {
    401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 409: "conflict",
    413: "request_too_large", 415: "unsupported_media_type", 502: "render_failed",
    503: "service_unavailable", 504: "timeout",
}
# pydantic's error types, as OpenAI names the same mistakes.
_FIELD_CODES = {"missing": "missing_required_parameter", "extra_forbidden": "unknown_parameter",
                "json_invalid": "invalid_json"}
_OWN_CODES = frozenset({"unsupported_parameter", "idempotency_key_reused"})
# The render ran (and failed or is still running): a retry would make a second job.
_NO_RETRY = frozenset({500, 502, 504})


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    error: OpenAIErrorBody


def _described(description: str, **headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"model": OpenAIError, "description": description}
    if headers:
        answer["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                             for name, text in headers.items()}
    return answer


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _described("Invalid parameters; `param` names the first one."),
    401: _described("No API key, or not a valid one.", **{"WWW-Authenticate": "Bearer"}),
    409: _described("The job was cancelled, or a request with this Idempotency-Key is "
                    "still in progress."),
    413: _described("Body too large."),
    415: _described("Not the media type the route reads."),
    429: _described("Rate limit or the key's job quota.", **{"Retry-After": "Seconds."}),
    502: _described("The render failed on the server (not retried: it ran)."),
    503: _described("Queue full or a backend down.", **{"Retry-After": "Seconds."}),
}


def _param(loc: list[Any]) -> str | None:
    parts = [str(part) for part in loc]
    if parts and parts[0] in ("body", "query", "header", "path", "form"):
        parts = parts[1:]
    return ".".join(parts) or None


def openai_error(status: int, body: Any) -> dict[str, Any]:
    """Our error body (``{"detail": ..., **extra}``) in OpenAI's shape."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body  # already in shape
    extra = dict(body) if isinstance(body, dict) else {}
    detail = extra.pop("detail", body)
    extra.pop("job", None)  # the full job row does not belong in an error
    param: str | None = None
    # A failed job's answer names its error's code (workers.job_errors): OpenAI's `code`.
    code = extra.pop("code", None) or _STATUS_CODES.get(status)
    if isinstance(detail, list) and detail and all(isinstance(e, dict) for e in detail):
        first = detail[0]
        param = _param(list(first.get("loc") or []))
        kind = str(first.get("type") or "")
        code = kind if kind in _OWN_CODES else _FIELD_CODES.get(kind, "invalid_value")
        messages = []
        for error in detail:
            name = _param(list(error.get("loc") or []))
            msg = str(error.get("msg") or "is invalid")
            messages.append(msg if name is None or f"`{name}`" in msg
                            else f"Invalid '{name}': {msg}")
        message = "; ".join(messages)
    else:
        message = detail if isinstance(detail, str) else json.dumps(detail)
    if status == 429 and "unfinished" in extra:
        code = "too_many_unfinished_jobs"
    elif status == 429:
        code = "rate_limit_exceeded"
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    error = {"message": message, "type": kind, "param": param, "code": code}
    error.update({key: value for key, value in extra.items() if key not in error})
    return {"error": error}


class OpenAIErrorShape:
    """Rewrites error answers under /v1 into OpenAI's shape; a 422 becomes OpenAI's 400."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_error(start, b"".join(chunks), send)

        await self.app(scope, receive, capture)

    @staticmethod
    async def _send_error(start: Message, raw: bytes, send: Send) -> None:
        status = start["status"]
        try:
            body: Any = json.loads(raw) if raw else {"detail": ""}
        except ValueError:
            body = {"detail": raw.decode("utf-8", "replace").strip()}
        shaped = json.dumps(openai_error(status, body)).encode()
        headers = [(name, value) for name, value in start.get("headers", [])
                   if name.lower() not in (b"content-length", b"content-type")]
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(shaped)).encode())]
        if status in _NO_RETRY:
            headers.append((b"x-should-retry", b"false"))  # read by the OpenAI SDKs
        await send({"type": "http.response.start", "status": 400 if status == 422 else status,
                    "headers": headers})
        await send({"type": "http.response.body", "body": shaped})
