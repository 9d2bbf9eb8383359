"""The OpenAPI document, made to tell the whole truth about what each route can answer.

Some answers come from outside the route, so FastAPI does not list them: the Gatekeeper's 401
(no valid API key) and 429 (the key's rate limit) on every route it guards, BodyLimit's 413, and
FastAPI's own 400 for a body it cannot parse (bytes that are not UTF-8) on every route that
takes one. They are declared here, from the same rules, so clients and the schemathesis fuzz
test (tests/api/test_fuzz.py) see every status a route can return.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from api.auth import is_open

__all__ = ["install_openapi"]

SCHEME = "HTTPBearer"
_DETAIL = {"application/json": {"schema": {
    "type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}}}
_GUARD_RESPONSES: dict[str, dict[str, Any]] = {
    "401": {"description": "No API key, or one that is unknown or revoked.",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            "content": _DETAIL},
    "429": {"description": "The key's rate limit or job quota is reached; see Retry-After.",
            "headers": {"Retry-After": {"schema": {"type": "string"}}},
            "content": _DETAIL},
}


_BODY_RESPONSES: dict[str, dict[str, Any]] = {
    "400": {"description": "The body could not be parsed.", "content": _DETAIL},
    "413": {"description": "The body is too large.", "content": _DETAIL},
}


def _guarded(path: str) -> bool:
    return not is_open(path)


def _declare_outside_answers(schema: dict[str, Any]) -> None:
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes.setdefault(SCHEME, {"type": "http", "scheme": "bearer",
                                "description": "An API key from `spec2fractal keys create`."})
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                for status, response in _BODY_RESPONSES.items():
                    responses.setdefault(status, response)
            if _guarded(path):
                operation.setdefault("security", [{SCHEME: []}])
                for status, response in _GUARD_RESPONSES.items():
                    responses.setdefault(status, response)


def install_openapi(app: FastAPI) -> None:
    """Wraps ``app.openapi`` so the document carries those answers (built once)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _declare_outside_answers(build())  # build() caches its result in app.openapi_schema
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
