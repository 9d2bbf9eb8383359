"""What the sync and async clients share: settings, retry decisions, request bodies, error
mapping, image decoding and the Server-Sent Events decoder. No I/O here."""

from __future__ import annotations

import base64
import email.utils
import io
import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image, PngImagePlugin

from fractal.loras import parse_lora_text
from spec2fractal.client.errors import (
    APIStatusError,
    JobCancelledError,
    JobFailedError,
    error_for,
)
from spec2fractal.client.types import Job, JobEvent
from workers.backoff import exponential_backoff

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "ClientConfig",
    "LorasInput",
    "SSEDecoder",
    "generate_request",
    "idempotency_key",
    "lora_list",
    "open_image",
    "raise_for_status",
    "retry_delay",
]

API_KEY_ENV = "SPEC2FRACTAL_API_KEY"
BASE_URL_ENV = "SPEC2FRACTAL_BASE_URL"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 120.0  # seconds for an answer; the server waits up to its sync_timeout
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_RETRIES = 3
RETRY_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER = 60.0  # a server asking for longer is waited on at most this long per try
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 8.0
POLL_FIRST = 0.05  # waiting on a job: the first look, then 1.5× longer each time ...
POLL_MAX = 1.0  # ... up to this
IMAGE_FIELDS = ("input_type", "image", "negative_prompt", "width", "height", "steps",
                "guidance", "seed", "scheduler", "style", "lighting", "colors", "texture",
                "strength", "n", "model", "output_format", "webhook", "image_url", "scale",
                "hires", "style_image", "style_strength", "style_mode", "control", "mask",
                "mask_blur", "inpaint_area", "padding", "expand", "loras")
ImageInput = Image.Image | bytes | str | Path


@dataclass(frozen=True)
class ClientConfig:
    base_url: str
    api_key: str | None
    timeout: httpx.Timeout
    max_retries: int

    @classmethod
    def of(cls, base_url: str | None, api_key: str | None, timeout: float | httpx.Timeout | None,
           max_retries: int) -> ClientConfig:
        url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, not {url!r}")
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(DEFAULT_TIMEOUT if timeout is None else timeout,
                                    connect=DEFAULT_CONNECT_TIMEOUT)
        return cls(url, api_key if api_key is not None else os.environ.get(API_KEY_ENV),
                   timeout, max_retries)

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def headers_for(self, url: str) -> dict[str, str]:
        """The key goes only to the server itself: a presigned S3 URL refuses a second
        credential, and no other host should ever see it."""
        if self.api_key and _origin(url) == _origin(self.base_url):
            return {"Authorization": f"Bearer {self.api_key}"}
        return {}

    def prefer_wait(self) -> str | None:
        """Ask the server to answer before this client's read timeout would end the wait."""
        read = self.timeout.read
        return None if read is None else f"wait={max(1, int(read) - 5)}"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def idempotency_key() -> str:
    return f"s2f-{uuid.uuid4().hex}"


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER)


def retry_delay(attempt: int, max_retries: int, *, response: httpx.Response | None = None,
                error: Exception | None = None) -> float | None:
    """Seconds to wait before trying again, or None to stop. Retried: 429 and 503 (after
    the server's Retry-After when it gives one) and transport errors (no answer came)."""
    if attempt >= max_retries:
        return None
    if response is not None:
        if response.status_code not in RETRY_STATUSES:
            return None
        if response.headers.get("x-should-retry", "").lower() == "false":
            return None
        after = _retry_after(response.headers)
        if after is not None:
            return after
    elif not isinstance(error, httpx.TransportError):
        return None
    return exponential_backoff(attempt, BACKOFF_FIRST, BACKOFF_MAX)


def parse_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def raise_for_status(response: httpx.Response) -> None:
    """An APIStatusError subclass for an error answer (the body must have been read)."""
    if response.status_code < 400:
        return
    raise_error(response)


def raise_error(response: httpx.Response) -> None:
    error: APIStatusError = error_for(response.status_code, parse_body(response),
                                      dict(response.headers), _retry_after(response.headers))
    raise error


def image_bytes(image: ImageInput) -> tuple[bytes, str]:
    """An input image as (file bytes, content type); PIL images are sent as PNG."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"
    if isinstance(image, (str, Path)):
        data = Path(image).read_bytes()
    elif isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    else:
        raise TypeError("image must be a PIL image, bytes, or a file path")
    with Image.open(io.BytesIO(data)) as probe:
        kind = (probe.format or "PNG").lower()
    return data, f"image/{kind}"


def generate_request(prompt: str | None, image: ImageInput | None,
                     options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``httpx`` to POST /generate: JSON, or multipart with a file."""
    unknown = set(options) - set(IMAGE_FIELDS)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    body: dict[str, Any] = reference_data({key: _plain(value) for key, value in options.items()
                                           if value is not None})
    if "loras" in body:
        body["loras"] = lora_list(body["loras"])
    has_image = image is not None or body.get("image_url") is not None \
        or body.get("image") is not None
    body.setdefault("input_type", ("hybrid" if prompt and prompt.strip() else "image")
                    if has_image else "text")
    if prompt is not None:
        body["prompt"] = prompt
    if image is None:
        return {"json": body}
    data, content_type = image_bytes(image)
    form: dict[str, Any] = {key: json.dumps(value) if key in ("control", "expand", "loras")
                            else [str(v) for v in value] if isinstance(value, list)
                            else str(value) for key, value in body.items()}
    extension = content_type.split("/")[-1]
    return {"data": form, "files": {"image": (f"image.{extension}", data, content_type)}}


def data_url(image: ImageInput) -> str:
    """A reference image (PIL image, bytes or file path) as a data URL; a str that is not a
    file is taken to be one already (or base64), and sent as it is."""
    if isinstance(image, str) and (image.startswith("data:") or not _is_file(image)):
        return image
    data, content_type = image_bytes(image)
    return f"data:{content_type};base64," + base64.b64encode(data).decode("ascii")


def _is_file(text: str) -> bool:
    try:
        return len(text) < 4096 and Path(text).is_file()
    except (OSError, ValueError):
        return False


def reference_data(options: dict[str, Any]) -> dict[str, Any]:
    """``style_image``, ``mask`` and each ``control`` unit's ``image`` as data URLs (a PIL
    mask as PNG: an RGBA one keeps its alpha, which marks the area to repaint)."""
    for key in ("style_image", "mask"):
        if options.get(key) is not None:
            options[key] = data_url(options[key])
    if options.get("control") is not None:
        options["control"] = [
            {**unit, "image": data_url(unit["image"])}
            if isinstance(unit, Mapping) and unit.get("image") is not None
            else dict(unit) if isinstance(unit, Mapping) else unit
            for unit in options["control"]]
    return options


LorasInput = Mapping[str, float] | Sequence[Mapping[str, Any] | str | tuple[str, float]]


def lora_list(loras: Any) -> Any:
    """``loras`` as the API takes them (``[{"name", "weight"}]``) from the shapes a caller
    may hand: that list, ``{"ink": 0.8}``, ``["ink:0.8", "paper"]`` or ``[("ink", 0.8)]``.
    Anything else goes as it is, for the server to name what is wrong."""
    if isinstance(loras, Mapping):
        return [{"name": name, "weight": weight} for name, weight in loras.items()]
    if isinstance(loras, (str, bytes)) or not isinstance(loras, Sequence):
        return loras
    found: list[Any] = []
    for item in loras:
        if isinstance(item, str):
            found.append(parse_lora_text(item))
        elif isinstance(item, tuple) and len(item) == 2:
            found.append({"name": item[0], "weight": item[1]})
        else:
            found.append(dict(item) if isinstance(item, Mapping) else item)
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def open_image(data: bytes) -> Image.Image:
    """A downloaded image, its generation record (PNG text) kept in ``image.info`` and set
    to be written again by a plain ``image.save("x.png")``, as local renders are."""
    image = Image.open(io.BytesIO(data))
    image.load()
    texts = {key: value for key, value in image.info.items()
             if key in ("parameters", "spec2fractal") and isinstance(value, str)}
    if texts:
        chunks = PngImagePlugin.PngInfo()
        for key, value in texts.items():
            chunks.add_text(key, value)
        image.encoderinfo = {"pnginfo": chunks}
    return image


def check_finished(job: Job) -> None:
    """Raise JobFailedError or JobCancelledError unless the job succeeded."""
    if job.status == "failed":
        raise JobFailedError(f"job {job.id} failed: {job.error or 'the render failed'}", job)
    if job.status == "cancelled":
        raise JobCancelledError(f"job {job.id} was cancelled", job)


def poll_interval(previous: float | None) -> float:
    return POLL_FIRST if previous is None else min(POLL_MAX, previous * 1.5)


class SSEDecoder:
    """Server-Sent Events, a line at a time (the WHATWG rules this server needs)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> JobEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive ping
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None

    def _dispatch(self) -> JobEvent | None:
        if not self._data and not self._event:
            return None
        event = JobEvent.parse(self._event or "message", "\n".join(self._data), self._id)
        self._event, self._data = "", []
        return event


def batch_body(items: Sequence[Mapping[str, Any]] | None, template: Mapping[str, Any] | None,
               grid: Mapping[str, Sequence[Any]] | None, name: str | None,
               output_format: str | None, webhook: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"items": [reference_data(dict(item)) for item in items]
                            if items is not None else None,
                            "template": reference_data(dict(template))
                            if template is not None else None,
                            "grid": {key: list(values) for key, values in grid.items()}
                            if grid is not None else None,
                            "name": name, "output_format": output_format, "webhook": webhook}
    return {key: value for key, value in body.items() if value is not None}
