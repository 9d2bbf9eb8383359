"""Reading untrusted images safely, and turning images into request data and back."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from fractal.errors import InvalidRequestError

__all__ = [
    "ALLOWED_FORMATS",
    "MAX_IMAGE_BYTES",
    "decode_image",
    "image_to_data_url",
    "load_image",
]

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_IMAGE_BYTES = 50 * 1024 * 1024
ImageSource = Image.Image | str | Path | bytes


def _decode_bytes(data: bytes, argument: str) -> Image.Image:
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequestError(argument, f"<{len(data)} bytes>",
                                  f"is larger than {MAX_IMAGE_BYTES} bytes")
    try:
        # Pillow warns past MAX_IMAGE_PIXELS and raises past twice that; refuse both.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            image.seek(0)  # first frame of an animated WebP or APNG
            image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InvalidRequestError(argument, f"<{len(data)} bytes>",
                                  "has too many pixels to decode safely") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise InvalidRequestError(
            argument, f"<{len(data)} bytes>",
            "is not a readable image (PNG, JPEG or WEBP)") from None
    return _normalise(image)


def _normalise(image: Image.Image) -> Image.Image:
    """EXIF orientation applied, alpha flattened onto white, RGB; no metadata carried over."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    else:
        image = image.convert("RGB")
    image.info = {}
    return image


def decode_image(data: str, argument: str = "image") -> Image.Image:
    """A request's image: base64 text or a ``data:image/...;base64,`` URL."""
    if not isinstance(data, str) or not data:
        raise InvalidRequestError(argument, data, "must be a base64 string or data URL")
    payload = data
    if data.startswith("data:"):
        header, _, payload = data.partition(",")
        if not header.endswith(";base64"):
            raise InvalidRequestError(argument, header, "must be a base64 data URL")
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise InvalidRequestError(argument, f"<{len(payload)} characters>",
                                  f"is larger than {MAX_IMAGE_BYTES} bytes")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(argument, data, "is not valid base64") from None
    return _decode_bytes(raw, argument)


def load_image(source: ImageSource, argument: str = "image") -> Image.Image:
    """A caller's image: a PIL image, a file path, or the file's bytes."""
    if isinstance(source, Image.Image):
        return _normalise(source.copy())
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source), argument)
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > MAX_IMAGE_BYTES:
                raise InvalidRequestError(argument, str(source),
                                          f"is larger than {MAX_IMAGE_BYTES} bytes")
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidRequestError(argument, str(source),
                                      f"cannot be read: {exc.strerror}") from None
        return _decode_bytes(data, argument)
    raise InvalidRequestError(argument, type(source).__name__,
                              "must be a PIL image, a file path or bytes")


def image_to_data_url(image: Image.Image) -> str:
    """PNG in a data URL: lossless, so a request rebuilt from it renders the same picture."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
