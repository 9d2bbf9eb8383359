"""Reference images (a style reference, control images) and inpainting masks between the API
and the workers.

A job's row never holds image bytes: the API stores each reference once in object storage,
content-addressed by the hash of its decoded pixels (:func:`fractal.references.pixel_hash`),
so a reference sent with a thousand jobs is one object; the row's request names it as
``"sha256:<hex>"`` where the data was. The worker reads each back and gives the library the
request whole again (:func:`restore_references`).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

from PIL import Image

from workers import job_errors
from workers.job_errors import JobError
from workers.storage import Storage, StorageError

__all__ = ["REFERENCE_PREFIX", "InputUnreadable", "input_error", "named_hash", "reference_key",
           "restore_references", "store_references"]

REFERENCE_PREFIX = "sha256:"  # never base64 data (no colon there) nor a data: URL
# What the job's error says, by whether storage answered: ``{what}`` names the input.
_MESSAGES = {
    False: (job_errors.INPUT_MISSING,
            "{what} could not be read from image storage; send the request again"),
    True: (job_errors.INPUT_UNAVAILABLE,
           "image storage unavailable: {what} could not be read; try again later"),
}


def reference_key(sha256: str) -> str:
    return f"references/{sha256}.png"


def named_hash(value: Any) -> str | None:
    """The hash a stored request names a reference by; None for anything else."""
    if isinstance(value, str) and value.startswith(REFERENCE_PREFIX):
        return value[len(REFERENCE_PREFIX):]
    return None


class InputUnreadable(Exception):
    """One of a job's stored inputs (``field``: the input image, the style reference, a
    control image or the mask) could not be read from storage."""

    def __init__(self, cause: StorageError, field: str = "image") -> None:
        super().__init__(str(cause))
        self.transient = cause.transient
        self.field = field


def input_error(field: str, transient: bool) -> JobError:
    """The job's error when its input ``field`` was unreadable: missing (send it again) or
    storage not answering (try again later)."""
    code, message = _MESSAGES[transient]
    what = ("the input image" if field == "image" else "the mask `mask`" if field == "mask"
            else f"the reference image `{field}`")
    return JobError(code, message.format(what=what), field=field)


def store_references(storage: Storage, images: Mapping[str, Image.Image]) -> None:
    """Each image (by its pixel hash) as a PNG at its key. The same hash is the same pixels,
    so writing it again over an earlier job's copy changes nothing. Raises StorageError."""
    for sha256, image in images.items():
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        storage.put(reference_key(sha256), buffer.getvalue(), "image/png")


def restore_references(data: dict[str, Any], storage: Storage) -> None:
    """Put each reference (and the mask) a stored request names by hash back in ``data`` as
    base64, read
    from storage (each distinct one once); InputUnreadable naming the field if one cannot be
    read."""
    read: dict[str, str] = {}

    def fetch(field: str, value: Any) -> Any:
        sha256 = named_hash(value)
        if sha256 is None:
            return value
        if sha256 not in read:
            try:
                read[sha256] = base64.b64encode(storage.get(reference_key(sha256))).decode()
            except StorageError as exc:
                raise InputUnreadable(exc, field) from exc
        return read[sha256]

    for field in ("style_image", "mask"):
        if data.get(field) is not None:
            data[field] = fetch(field, data[field])
    control = data.get("control")
    if isinstance(control, (list, tuple)):
        data["control"] = [
            {**unit, "image": fetch(f"control[{index}].image", unit.get("image"))}
            if isinstance(unit, Mapping) else unit
            for index, unit in enumerate(control)]
