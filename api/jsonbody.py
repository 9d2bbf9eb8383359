"""The API's side of :mod:`api.jsonparse`: small bodies parsed at once, large ones in a child
process, and every FastAPI route's JSON body read that way (:class:`JsonRoute`)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from api.jsonparse import (
    ABORT,
    CHUNK,
    HEADER,
    INLINE_BYTES,
    REPLY,
    JsonRefused,
    SpooledImage,
    parse_json,
    serve,
)

__all__ = ["JsonParser", "JsonRoute", "is_json", "read_json", "refused"]

logger = logging.getLogger(__name__)


def refused(exc: JsonRefused) -> RequestValidationError:
    """A refused body as a 422 naming where, in FastAPI's shape."""
    return RequestValidationError([{"loc": ["body", *exc.loc], "msg": exc.msg,
                                    "type": exc.kind, "input": exc.value}])


class JsonParser:
    """One per app: a child process, started with the first large body, parses large bodies
    one at a time, each streamed to it as it arrives (a queue behind a big body, never a
    stalled event loop, and never a large body held whole in the API's process)."""

    def __init__(self) -> None:
        self._process: Any = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock: asyncio.Lock | None = None

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._writer is None or self._reader is None:
            # spawn: a fork of a threaded server could copy a held lock into the child.
            context = multiprocessing.get_context("spawn")
            ours, theirs = context.Pipe(duplex=True)  # a socket pair
            self._process = context.Process(target=serve, args=(theirs,), daemon=True,
                                            name="spec2fractal-json")
            self._process.start()
            theirs.close()
            sock = socket.socket(fileno=os.dup(ours.fileno()))
            ours.close()
            self._reader, self._writer = await asyncio.open_connection(sock=sock)
        return self._reader, self._writer

    async def read(self, chunks: AsyncIterator[bytes], image_field: str | None = None
                   ) -> tuple[Any, bytes | None, dict[str, bytes], bool]:
        """The streamed body's data, the bytes of its image and of its reference images
        (see :func:`parse_json`), and whether there was a body at all; JsonRefused if it is
        not JSON the API takes."""
        head = bytearray()
        stream = chunks.__aiter__()
        async for chunk in stream:
            head += chunk
            if len(head) > INLINE_BYTES:
                break
        else:
            if not head:
                return None, None, {}, False
            data, image, references = parse_json(bytes(head), image_field)
            return data, image, references, True
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            awaiting_reply = False
            try:
                reader, writer = await self._connection()
                name = (image_field or "").encode()
                writer.write(HEADER.pack(len(name)) + name + CHUNK.pack(len(head)))
                writer.write(head)
                del head
                try:
                    async for chunk in stream:
                        if chunk:
                            writer.write(CHUNK.pack(len(chunk)))
                            writer.write(chunk)
                            await writer.drain()
                except BaseException:
                    # Too large (413), the client left, or cancelled: the child drops it.
                    writer.write(CHUNK.pack(ABORT))
                    raise
                writer.write(CHUNK.pack(0))
                awaiting_reply = True
                await writer.drain()
                (size,) = REPLY.unpack(await reader.readexactly(REPLY.size))
                outcome, value = pickle.loads(await reader.readexactly(size))
            except (ConnectionError, asyncio.IncompleteReadError, EOFError):
                # The child died (killed for memory, say): a new one for the next body.
                logger.error("the JSON parsing process died; starting another")
                self.close()
                raise HTTPException(503, "the body could not be parsed just now; try again",
                                    headers={"Retry-After": "1"}) from None
            except BaseException:
                # Cancelled while the child parses: its answer would be taken as the next
                # body's, so this child is given up.
                if awaiting_reply or (self._writer is not None and self._writer.is_closing()):
                    self.close()
                raise
        if outcome == "refused":
            raise value
        data, image, references = value
        if isinstance(image, SpooledImage):
            image = await asyncio.to_thread(image.take)
        for name, content in references.items():
            if isinstance(content, SpooledImage):
                references[name] = await asyncio.to_thread(content.take)
        return data, image, references, True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._process is not None and self._process.is_alive():
            self._process.kill()
        self._process = self._reader = self._writer = None


def is_json(request: Request) -> bool:
    """Whether FastAPI reads this body as JSON: a JSON media type, or none at all."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media in ("", "application/json") or media.endswith("+json")


async def read_json(request: Request, image_field: str | None = None
                    ) -> tuple[Any, bytes | None, dict[str, bytes]]:
    """The request's JSON body (and images, see :func:`api.jsonparse.parse_json`), streamed
    to the app's parser; a 422 naming where if refused. An empty body is None."""
    data, image, references, _ = await _read(request, image_field)
    return data, image, references


async def _read(request: Request, image_field: str | None = None
                ) -> tuple[Any, bytes | None, dict[str, bytes], bool]:
    parser: JsonParser = request.app.state.json_parser
    try:
        return await parser.read(request.stream(), image_field)
    except JsonRefused as exc:
        raise refused(exc) from None


class _JsonRequest(Request):
    """A request whose JSON body was streamed to the parser: FastAPI asks ``body()`` only
    whether there was one, then takes ``json()``."""

    async def read_json_body(self) -> None:
        self._json, _, _, present = await _read(self)
        self._body = b"{}" if present else b""  # the bytes themselves are not kept

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            await self.read_json_body()
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
            if takes_body and is_json(request):
                await request.read_json_body()
            return await handler(request)

        return guarded
