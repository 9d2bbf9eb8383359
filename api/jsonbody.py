"""The API's side of :mod:`api.jsonparse`: small bodies parsed at once, large ones in a child
process, and every FastAPI route's JSON body read that way (:class:`JsonRoute`)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from api.jsonparse import INLINE_BYTES, JsonRefused, parse_json

__all__ = ["JsonParser", "JsonRoute", "is_json", "read_json", "refused"]

logger = logging.getLogger(__name__)


def refused(exc: JsonRefused) -> RequestValidationError:
    """A refused body as a 422 naming where, in FastAPI's shape."""
    return RequestValidationError([{"loc": ["body", *exc.loc], "msg": exc.msg,
                                    "type": exc.kind, "input": exc.value}])


class JsonParser:
    """One per app: a child process, started with the first large body, parses large ones
    one at a time (a queue behind a big body, never a stalled event loop)."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a fork of a threaded server could copy a held lock into the child.
            self._pool = ProcessPoolExecutor(max_workers=1,
                                             mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    async def parse(self, raw: bytes, image_field: str | None = None
                    ) -> tuple[Any, bytes | None]:
        """The body's data, and the bytes of its image (see :func:`parse_json`); JsonRefused
        if it is not JSON the API takes."""
        if len(raw) <= INLINE_BYTES:
            return parse_json(raw, image_field)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), parse_json, raw, image_field)
        except BrokenProcessPool:
            # The child died (killed for memory, say): a new one for the next body.
            logger.error("the JSON parsing process died; starting another")
            self.close()
            raise HTTPException(503, "the body could not be parsed just now; try again",
                                headers={"Retry-After": "1"}) from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def is_json(request: Request) -> bool:
    """Whether FastAPI reads this body as JSON: a JSON media type, or none at all."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media in ("", "application/json") or media.endswith("+json")


async def read_json(request: Request, image_field: str | None = None
                    ) -> tuple[Any, bytes | None]:
    """The request's JSON body (and image, see :func:`api.jsonparse.parse_json`), parsed by
    the app's parser; a 422 naming where if refused."""
    parser: JsonParser = request.app.state.json_parser
    try:
        return await parser.parse(await request.body(), image_field)
    except JsonRefused as exc:
        raise refused(exc) from None


class _JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json, _ = await read_json(self)
        return self._json


class JsonRoute(APIRoute):
    """FastAPI's route, with JSON bodies read by the app's :class:`JsonParser` (FastAPI's
    documented way to customise the request a route reads)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def guarded(request: Request) -> Response:
            request = _JsonRequest(request.scope, request.receive)
            # Read here, where a refusal can be a 422: FastAPI makes any error it meets
            # while reading a body a 400. It then finds the body already parsed.
            if takes_body and is_json(request) and await request.body():
                await request.json()
            return await handler(request)

        return guarded
