"""POST /loras's body: a multipart upload streamed straight into the LoRA folder.

The file part goes to a hidden temporary file in the folder itself, chunk by chunk as it
arrives, with the size cap counted on the way (never spooled whole in memory or in /tmp,
and never over the cap on disk); the caller checks it as safetensors and renames it into
place, so a half-written or refused file is never seen by a worker or GET /loras.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from api.errors import ApiError, field_error

__all__ = ["STALE_UPLOAD_SECONDS", "TEMP_PREFIX", "Upload", "receive_upload",
           "remove_stale_uploads"]

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".upload-"  # hidden, and not .safetensors: never listed nor loaded
# A temporary file not written for this long is a dead upload's (its API process died
# mid-body): an upload in progress writes every chunk, and the server's read timeouts end a
# stalled one long before. Other API processes may share the folder, so age, not ownership.
STALE_UPLOAD_SECONDS = 3600
MAX_TEXT_BYTES = 1024  # the `name` field
FILE_FIELD = "file"
TEXT_FIELDS = ("name",)


@dataclass
class Upload:
    """The file part, written to ``path`` (in the folder), its part's filename, and the
    form's text fields."""

    path: Path | None = None
    filename: str | None = None
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None


@dataclass
class _Part:
    name: str | None = None
    filename: str | None = None
    text: bytearray = field(default_factory=bytearray)
    is_file: bool = False


class _Reader:
    """python-multipart's callbacks (the parser Starlette itself uses), collecting a chunk's
    file bytes for the event loop to write off-thread."""

    def __init__(self, folder: Path, cap: int, upload: Upload) -> None:
        self.folder = folder
        self.cap = cap
        self.upload = upload
        self.part = _Part()
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.pending: list[bytes] = []  # file bytes parsed from the current chunk
        self.file: IO[bytes] | None = None
        self.error: Exception | None = None

    def callbacks(self) -> dict[str, object]:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished}

    def on_part_begin(self) -> None:
        self.part = _Part()
        self.headers = []

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers.append((bytes(self.header_field).lower(), bytes(self.header_value)))
        self.header_field = bytearray()
        self.header_value = bytearray()

    def on_headers_finished(self) -> None:
        disposition = dict(self.headers).get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        self.part.name = name
        if name == FILE_FIELD:
            if filename is None:
                self._fail(field_error(["body", FILE_FIELD], "must be a file part", "<text>"))
            elif self.upload.path is not None or self.upload.filename is not None:
                self._fail(field_error(["body", FILE_FIELD], "give one file", "<files>"))
            else:
                self.part.is_file = True
                self.upload.filename = filename.decode("utf-8", "replace")
        elif name not in TEXT_FIELDS:
            self._fail(field_error(["body", name[:64] or "<unnamed>"], "is not a field of a "
                                   "LoRA upload", None, choices=(FILE_FIELD, *TEXT_FIELDS)))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        if self.part.is_file:
            self.upload.size += end - start
            if self.upload.size > self.cap:
                self._fail(ApiError(413, f"the LoRA file is larger than this server's cap of "
                                    f"{self.cap} bytes (SPEC2FRACTAL_LORA_UPLOAD_MAX_BYTES)",
                                    headers={"Connection": "close"}, max_bytes=self.cap))
                return
            self.pending.append(data[start:end])
        else:
            self.part.text += data[start:end]
            if len(self.part.text) > MAX_TEXT_BYTES:
                self._fail(field_error(["body", self.part.name or "name"],
                                       f"may be at most {MAX_TEXT_BYTES} bytes", "<text>"))

    def on_part_end(self) -> None:
        if self.error is None and not self.part.is_file and self.part.name in TEXT_FIELDS:
            try:
                self.upload.fields[self.part.name] = self.part.text.decode("utf-8")
            except UnicodeDecodeError:
                self._fail(field_error(["body", self.part.name], "must be UTF-8 text",
                                       "<bytes>"))

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error

    def write_pending(self) -> None:
        """Blocking: the chunk's file bytes to the temporary file (opened on first data)."""
        if not self.pending:
            return
        if self.file is None:
            self.upload.path = self.folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}.part"
            self.file = open(self.upload.path, "xb")  # noqa: SIM115 -- closed in finish()
        for piece in self.pending:
            self.file.write(piece)
        self.pending.clear()

    def finish(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


async def receive_upload(request: Request, folder: Path, cap: int) -> Upload:
    """The multipart body's file written into ``folder`` (a hidden temporary name) and its
    text fields; a 413 as soon as the file passes ``cap`` bytes, a 422 naming a bad part.
    On any error nothing is left in the folder."""
    media, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if media != b"multipart/form-data" or not boundary:
        raise ApiError(415, "send multipart/form-data with a `file` part (a .safetensors "
                       "file) and an optional `name` field")
    upload = Upload()
    reader = _Reader(folder, cap, upload)
    parser = MultipartParser(boundary, reader.callbacks())  # type: ignore[arg-type]
    try:
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                if reader.error is not None:
                    raise reader.error
                await asyncio.to_thread(reader.write_pending)
            parser.finalize()
        except MultipartParseError:
            raise field_error(["body"], "is not a valid multipart/form-data body", None) \
                from None
        if reader.error is not None:
            raise reader.error
        await asyncio.to_thread(reader.write_pending)
    except BaseException:
        await asyncio.to_thread(reader.finish)
        upload.discard()
        raise
    finally:
        reader.finish()
    if upload.filename is None:
        raise field_error(["body", FILE_FIELD], "is required: the LoRA's .safetensors file",
                          None, kind="missing")
    if upload.path is None:  # an empty file part
        upload.path = folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}.part"
        await asyncio.to_thread(upload.path.touch)
    os.chmod(upload.path, 0o644)
    return upload


def remove_stale_uploads(folder: Path | None, *, older_than: float = STALE_UPLOAD_SECONDS
                         ) -> int:
    """Delete dead uploads' temporary files from the LoRA folder; how many went."""
    if folder is None or not folder.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - older_than
    for path in folder.glob(f"{TEMP_PREFIX}*.part"):
        with contextlib.suppress(OSError):  # gone already, or not ours to delete
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    if removed:
        logger.info("removed %d dead LoRA upload(s) from %s", removed, folder)
    return removed
