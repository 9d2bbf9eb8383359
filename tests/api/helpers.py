"""Small helpers shared by the API tests."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

from PIL import Image

README_BODY = {"input_type": "text", "content": "A tropical island with crystal-clear water"}
SMALL = {"width": 128, "height": 64}


def png_bytes(width: int = 64, height: int = 48, color: str = "teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def decode(raw: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """(event, data) pairs of an event stream, pings left out."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data and name != "ping":
            events.append((name, json.loads("\n".join(data))))
    return events


def wait_status(get, job_id: str, statuses: set[str], timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = get(f"/jobs/{job_id}").json()
        if job["status"] in statuses or time.monotonic() > deadline:
            return job
        time.sleep(0.05)
