"""JSON request bodies, read one guarded way, off the event loop.

Every JSON body the API takes passes through :func:`parse_json` (``POST /generate`` reads its
own; every FastAPI-parsed body comes through :class:`api.jsonroute.JsonRoute`). A body is
refused, with where and why, when it holds

- more than ``MAX_JSON_VALUES`` arrays, objects and list items (counted before parsing, from
  the bytes: a 60 MB body of empty lists would take seconds and gigabytes to parse);
- nesting deeper than ``MAX_JSON_DEPTH``;
- a number that is not finite (``NaN``, ``Infinity``, ``1e999``): JSON has none, and no
  field takes one;
- a string longer than ``MAX_TEXT_CHARS`` anywhere but in an image field (``image``,
  ``images``, ``mask``, ``*_image``): no text field takes one, and it would cost a copy;
- a string that is not Unicode (a lone surrogate such as ``"\\ud800"``): it cannot be stored,
  logged or sent back.

Where the caller names it, an image given as base64 is decoded to its file's bytes here too,
and so are a POST /generate body's reference images (style reference, control images) and
its inpainting mask.

Bodies over ``INLINE_BYTES`` are parsed in a child process (:func:`serve`), streamed to it
chunk by chunk as they arrive: json's C parser holds the GIL for the whole parse, and even
joining a 60 MB body into one bytes object stalls the event loop for tens of milliseconds,
so the API's process never holds a large body whole. This module imports only the standard
library: the child that imports it stays small.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import socket
import struct
import tempfile
from multiprocessing.connection import Connection
from typing import Any, BinaryIO

__all__ = ["ABORT", "CHUNK", "HEADER", "INLINE_BYTES", "MAX_JSON_DEPTH", "MAX_JSON_VALUES",
           "MAX_TEXT_CHARS",
           "REPLY", "UPLOAD_PREFIX", "JsonRefused", "SpooledImage", "parse_json", "serve"]

INLINE_BYTES = 64 * 1024  # parsed on the caller's thread below this: well under a millisecond
MAX_JSON_DEPTH = 32  # a batch item sits at depth 3; nothing the API takes nests deeper than 5
# Commas, brackets and braces: ~ the values a body holds. A 10,000-item batch of full
# POST /generate bodies has ~200,000; base64 image data has none.
MAX_JSON_VALUES = 500_000
MAX_TEXT_CHARS = 2 * 1024 * 1024  # prompts are at most 4,000 characters (the library says so)
IMAGE_KEYS = ("image", "images", "mask")
# A reference image decoded here stands in the data as this and its file's SHA-256: never
# base64 (a colon) nor a data URL, so a caller cannot send one.
UPLOAD_PREFIX = "upload:sha256:"


# The stream to the child: HEADER (the image field's name, UTF-8, or empty), then the body
# as CHUNK frames (a length and that many bytes), then a zero-length frame, or ABORT if the
# body could not be read whole. The answer: REPLY (a length) and a pickle of
# ("ok", (data, image bytes | SpooledImage | None, {name: bytes | SpooledImage})) or
# ("refused", JsonRefused).
HEADER = struct.Struct("!H")
CHUNK = struct.Struct("!I")
REPLY = struct.Struct("!Q")
ABORT = 0xFFFFFFFF
# A decoded image larger than this comes back as a file: the API's process reads it in a
# thread (a read fills the bytes with the GIL released), instead of unpickling a copy of it.
SPOOL_OVER = 1024 * 1024


class SpooledImage:
    """An image's bytes left in a file by the child; the reader deletes it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def take(self) -> bytes:
        try:
            with open(self.path, "rb") as file:
                return file.read()
        finally:
            os.unlink(self.path)


class JsonRefused(ValueError):
    """Where (``loc``, after ``body``) and why a body was refused, as data."""

    def __init__(self, loc: list[str | int], msg: str, value: Any = None,
                 kind: str = "json_invalid") -> None:
        super().__init__(loc, msg, value, kind)
        self.loc, self.msg, self.value, self.kind = loc, msg, value, kind


def _count_values(raw: bytes) -> int:
    return raw.count(b",") + raw.count(b"[") + raw.count(b"{")


def _check(data: Any) -> None:
    """Depth, finite numbers and Unicode strings, walked without recursion."""
    stack: list[tuple[Any, list[str | int]]] = [(data, [])]
    while stack:
        value, loc = stack.pop()
        if len(loc) > MAX_JSON_DEPTH:
            raise JsonRefused(loc[:MAX_JSON_DEPTH], f"nesting deeper than {MAX_JSON_DEPTH} "
                              "levels", kind="json_too_deep")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, loc)
                stack.append((item, [*loc, key]))
        elif isinstance(value, list):
            stack.extend((item, [*loc, index]) for index, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise JsonRefused(loc, "must be a finite number (JSON has no NaN or Infinity)",
                              str(value), kind="finite_number")
        elif isinstance(value, str):
            if len(value) > MAX_TEXT_CHARS and not _holds_images(loc):
                raise JsonRefused(loc, f"must be at most {MAX_TEXT_CHARS} characters (only "
                                  "images may be longer)", f"<{len(value)} characters>",
                                  kind="string_too_long")
            _check_text(value, loc)


def _holds_images(loc: list[str | int]) -> bool:
    key = next((part for part in reversed(loc) if isinstance(part, str)), "")
    return key in IMAGE_KEYS or key.endswith("_image")


def _check_text(text: str, loc: list[str | int]) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonRefused(loc, "is not valid Unicode: it holds a lone surrogate (\\ud800-"
                          "\\udfff escapes must come in pairs)", "<invalid unicode>",
                          kind="string_unicode") from None


def parse_json(raw: bytes, image_field: str | None = None
               ) -> tuple[Any, bytes | None, dict[str, bytes]]:
    """The body as Python data; JsonRefused (picklable, to cross from a child) if it is not
    JSON the API takes. Blocking: runs in the caller or in a child process.

    ``image_field``: a top-level field holding an image as base64 or a data URL, taken out
    of the data and returned as the file's bytes (base64 decoding also holds the GIL: ~0.6 s
    for a 60 MB data URL here). On such a body the reference images (``style_image``, each
    ``control`` unit's ``image``) and the ``mask`` are decoded here too: each is left in the data as
    ``UPLOAD_PREFIX`` + its file's SHA-256, and returned in a mapping from that name to the
    file's bytes.
    """
    if _count_values(raw) > MAX_JSON_VALUES:
        raise JsonRefused([], f"holds more than {MAX_JSON_VALUES} values",
                          kind="json_too_large")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise JsonRefused([exc.pos], f"JSON decode error: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise JsonRefused([exc.start], "JSON decode error: the body is not UTF-8") from None
    except (ValueError, RecursionError):  # a 5000-digit number; [[[[... nested too deep
        raise JsonRefused([], "JSON decode error: a number too long or nesting too deep",
                          kind="json_too_deep") from None
    _check(data)
    if image_field is None or not isinstance(data, dict):
        return data, None, {}
    image = None
    if isinstance(data.get(image_field), str):
        image = _image_bytes(data.pop(image_field), [image_field])
    return data, image, _take_references(data)


def _image_bytes(text: str, loc: list[str | int]) -> bytes:
    from fractal.errors import InvalidRequestError  # the child imports these once
    from fractal.images import image_bytes

    field = loc[0] if len(loc) == 1 else f"{loc[0]}[{loc[1]}].{loc[2]}"
    try:
        return image_bytes(text, str(field))
    except InvalidRequestError as exc:
        value = exc.value if isinstance(exc.value, str) and len(exc.value) <= 200 else None
        raise JsonRefused(loc, str(exc), value, kind="value_error") from None


def _take_references(data: dict[str, Any]) -> dict[str, bytes]:
    from fractal.references import MAX_CONTROLS

    places: list[tuple[list[str | int], dict[str, Any], str]] = [
        ([key], data, key) for key in ("style_image", "mask") if isinstance(data.get(key), str)]
    control = data.get("control")
    # More units than any request may hold are refused by the schema, undecoded.
    if isinstance(control, list) and len(control) <= MAX_CONTROLS:
        places += [(["control", index, "image"], unit, "image")
                   for index, unit in enumerate(control)
                   if isinstance(unit, dict) and isinstance(unit.get("image"), str)]
    files: dict[str, bytes] = {}
    for loc, holder, key in places:
        content = _image_bytes(holder[key], loc)
        name = UPLOAD_PREFIX + hashlib.sha256(content).hexdigest()
        holder[key] = name
        files[name] = content
    return files


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def _answer(raw: bytes, image_field: str | None) -> tuple[str, Any]:
    try:
        data, image, references = parse_json(raw, image_field)
    except JsonRefused as exc:
        return "refused", exc
    return "ok", (data, _spooled(image), {name: _spooled(content)
                                          for name, content in references.items()})


def _spooled(content: bytes | None) -> bytes | SpooledImage | None:
    if content is None or len(content) <= SPOOL_OVER:
        return content
    descriptor, path = tempfile.mkstemp(prefix="s2f-json-image-")
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
    return SpooledImage(path)


def serve(connection: Connection) -> None:
    """The child's loop: read a streamed body, parse it, answer; until the API closes."""
    sock = socket.socket(fileno=os.dup(connection.fileno()))
    connection.close()
    stream = sock.makefile("rb")
    try:
        while True:
            (name_size,) = HEADER.unpack(_read_exactly(stream, HEADER.size))
            image_field = _read_exactly(stream, name_size).decode() or None
            chunks: list[bytes] = []
            while True:
                (size,) = CHUNK.unpack(_read_exactly(stream, CHUNK.size))
                if size in (0, ABORT):
                    break
                chunks.append(_read_exactly(stream, size))
            if size == ABORT:
                continue
            raw = b"".join(chunks)
            del chunks
            payload = pickle.dumps(_answer(raw, image_field))
            del raw
            sock.sendall(REPLY.pack(len(payload)) + payload)
    except (EOFError, ConnectionError):
        return  # the API closed its end: it is stopping, or it gave up on this child
