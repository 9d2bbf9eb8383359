"""Error responses: FastAPI's 422 shape for every validation failure, JSON for the rest.

No handler ever puts a traceback, an exception's repr or a server path in a response.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from api.bodylimit import BodyTooLarge
from fractal import InvalidRequestError
from workers import job_errors
from workers.job_errors import JobError
from workers.storage import StorageError

__all__ = ["JOB_ERROR_STATUS", "ApiError", "field_error", "field_loc", "install_error_handlers",
           "invalid_request", "job_error_entry"]

logger = logging.getLogger(__name__)

MAX_ECHO_CHARS = 200  # a 60 MB data URL must not come back in the error body


class ApiError(Exception):
    """An HTTP error with a JSON body: ``{"detail": ..., **extra}``."""

    def __init__(self, status: int, detail: Any, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.headers = headers
        self.extra = extra


def field_error(loc: Sequence[str | int], msg: str, value: Any = None, *,
                kind: str = "value_error",
                choices: Iterable[str] | None = None) -> RequestValidationError:
    """One 422 entry in FastAPI's shape, for checks made outside pydantic."""
    entry: dict[str, Any] = {"loc": list(loc), "msg": msg, "type": kind, "input": value}
    if choices is not None:
        entry["ctx"] = {"choices": list(choices)}
    return RequestValidationError([entry])


def invalid_request(exc: InvalidRequestError, *, where: str = "body",
                    rename: dict[str, str] | None = None) -> RequestValidationError:
    """The library's InvalidRequestError as a 422 naming the request field."""
    field = (rename or {}).get(exc.argument, exc.argument)
    if field != exc.argument:  # the message names the field the caller sent (`content`)
        exc = InvalidRequestError(field, exc.value, exc.reason, choices=exc.choices)
    return RequestValidationError([job_error_entry(JobError.of(exc), where)])


# A failed job's answer, by its error's code (workers.job_errors): the status, and headers.
JOB_ERROR_STATUS: dict[str, tuple[int, dict[str, str] | None]] = {
    job_errors.INVALID_REQUEST: (422, None),
    job_errors.INPUT_MISSING: (422, None),  # the caller sends the request again
    job_errors.MODEL_UNAVAILABLE: (502, None),
    job_errors.RENDER_FAILED: (502, None),
    job_errors.TIMEOUT: (504, None),
    job_errors.INPUT_UNAVAILABLE: (503, {"Retry-After": "10"}),
    job_errors.STORAGE_UNAVAILABLE: (503, {"Retry-After": "10"}),
    job_errors.QUEUE_UNAVAILABLE: (503, {"Retry-After": "10"}),
    job_errors.WORKER_LOST: (502, None),
    job_errors.INTERNAL: (502, None),
}


def job_error_entry(error: JobError, where: str = "body") -> dict[str, Any]:
    """An error about one field as one 422 entry in FastAPI's shape; ``ctx`` carries the rest
    of it as data (its code, the bare reason, the valid choices), for clients to read."""
    ctx: dict[str, Any] = {"code": error.code}
    if error.reason is not None:
        ctx["reason"] = error.reason
    if error.choices is not None:
        ctx["choices"] = list(error.choices)
    return {"loc": [where, *field_loc(error.field)] if error.field else [where],
            "msg": error.message,
            "type": "value_error", "input": error.value, "ctx": ctx}


_KEYED = re.compile(r"^([A-Za-z_]+)\.([^.\[\]]{1,32})$")
# A path of names and indices: control[1].type, loras[0].name, style.loras[2].weight.
_PATH = re.compile(r"^[A-Za-z_]+(\[\d+\])*(\.[A-Za-z_]+(\[\d+\])*)*$")
_PART = re.compile(r"([A-Za-z_]+)|\[(\d+)\]")


def field_loc(field: str) -> list[str | int]:
    """A library argument as a FastAPI loc: ``control[1].type`` is ``["control", 1, "type"]``
    and ``expand.left`` is ``["expand", "left"]`` (where pydantic names a list item's or an
    object's key); any other name is one part."""
    if _PATH.match(field):
        return [int(index) if index else name for name, index in _PART.findall(field)]
    match = _KEYED.match(field)
    if match is not None:
        return [match.group(1), match.group(2)]
    return [field]


def _short(value: Any) -> Any:
    """What of a refused value goes back: short, and always valid JSON text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity: echoed as text
    if isinstance(value, str) and len(value) > MAX_ECHO_CHARS:
        return f"<{len(value)} characters>"
    if isinstance(value, str) and not _unicode(value):
        return "<invalid unicode>"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict | list):
        try:
            text = json.dumps(value, allow_nan=False)
        except (ValueError, TypeError, RecursionError):
            text = None
        if text is None or len(text) > MAX_ECHO_CHARS or not _unicode(text):
            return f"<{type(value).__name__} of {len(value)} items>"
    return value


def _unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean(error: dict[str, Any]) -> dict[str, Any]:
    entry = {key: error[key] for key in ("loc", "msg", "type") if key in error}
    entry["loc"] = list(entry.get("loc", []))
    if "input" in error:
        entry["input"] = _short(error["input"])
    if error.get("ctx"):
        # pydantic's ctx may hold exception objects; keep what JSON can carry.
        entry["ctx"] = {key: value if isinstance(value, str | int | float | list) else str(value)
                        for key, value in error["ctx"].items()}
    return entry


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": [_clean(error) for error in exc.errors()]}, status_code=422)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse({"detail": exc.detail, **exc.extra}, status_code=exc.status,
                        headers=exc.headers)


async def _storage(request: Request, exc: Exception) -> JSONResponse:
    logger.error("storage failed on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "image storage is unavailable; try again later"},
                        status_code=503, headers={"Retry-After": "10"})


async def _database(request: Request, exc: Exception) -> JSONResponse:
    logger.error("database failed on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "the job database is unavailable; try again later"},
                        status_code=503, headers={"Retry-After": "10"})


async def _too_large(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "the body is too large"}, status_code=413,
                        headers={"Connection": "close"})


async def _http(request: Request, exc: Exception) -> Response:
    """Starlette's own errors. A 405's Allow lists every method the path has: Starlette names
    only those of the first route whose path matched (`Allow: POST` where GET works too)."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        methods = _documented_methods(request)
        if methods:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
    return await http_exception_handler(request, exc)


def _documented_methods(request: Request) -> set[str]:
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(path):
            methods |= {method.upper() for method in operations}
    return methods | {"HEAD"} if "GET" in methods else methods


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StorageError, _storage)
    app.add_exception_handler(SQLAlchemyError, _database)
    app.add_exception_handler(BodyTooLarge, _too_large)
    app.add_exception_handler(Exception, _internal)
