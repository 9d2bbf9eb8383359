"""The OpenAPI document, made to tell the whole truth about what each route can answer.

Some answers come from middleware before any route runs, so FastAPI cannot see them: the
Gatekeeper's 401 (no valid API key) and 429 (the key's rate limit) on every route it guards.
They are declared here, from the same path rules the Gatekeeper applies, so clients and the
schemathesis fuzz test (tests/api/test_fuzz.py) see every status a route can return.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from api.auth import OPEN_PATHS, SIGNED_PREFIX

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


def _guarded(path: str) -> bool:
    return path not in OPEN_PATHS and not path.startswith(SIGNED_PREFIX)


def _declare_gatekeeper(schema: dict[str, Any]) -> None:
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes.setdefault(SCHEME, {"type": "http", "scheme": "bearer",
                                "description": "An API key from `spec2fractal keys create`."})
    for path, operations in schema.get("paths", {}).items():
        if not _guarded(path):
            continue
        for operation in operations.values():
            operation.setdefault("security", [{SCHEME: []}])
            responses = operation.setdefault("responses", {})
            for status, response in _GUARD_RESPONSES.items():
                responses.setdefault(status, response)


def install_openapi(app: FastAPI) -> None:
    """Wraps ``app.openapi`` so the document carries the Gatekeeper's answers (built once)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _declare_gatekeeper(build())  # build() caches its result in app.openapi_schema
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
