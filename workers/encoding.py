"""Rendered images to bytes: PNG with its generation text, or WebP/JPEG."""

from __future__ import annotations

import base64
import io

from PIL import Image, PngImagePlugin

from fractal.record import PARAMETERS_KEY, RECORD_KEY

__all__ = ["CONTENT_TYPES", "OUTPUT_FORMATS", "THUMBNAIL_EXTENSION", "THUMBNAIL_SIDE",
           "encode_image", "encode_thumbnail", "preview_data_url"]

OUTPUT_FORMATS = ("png", "webp", "jpeg")
CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
THUMBNAIL_SIDE = 512  # longest side: sharp in a gallery card, ~30 KB where a 4K PNG is ~30 MB
THUMBNAIL_EXTENSION = "thumb.webp"


def encode_image(image: Image.Image, output_format: str, *, png_level: int = 1) -> bytes:
    """PNG at a fast level by default: zlib's default level costs ~200 ms at 1024²."""
    buffer = io.BytesIO()
    if output_format == "png":
        chunks = PngImagePlugin.PngInfo()
        for key in (PARAMETERS_KEY, RECORD_KEY):
            if key in image.info:
                chunks.add_text(key, image.info[key])
        image.save(buffer, format="PNG", pnginfo=chunks, compress_level=png_level)
    elif output_format == "webp":
        image.save(buffer, format="WEBP", quality=90, method=4)
    elif output_format == "jpeg":
        image.save(buffer, format="JPEG", quality=92)
    else:
        raise ValueError(f"unknown output format {output_format!r}")
    return buffer.getvalue()


def encode_thumbnail(image: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    """A WebP no larger than ``side`` on its longest side, aspect kept (never enlarged)."""
    small = image.copy()
    # reducing_gap: a cheap box reduction first, then Lanczos; a 4096² image in ~50 ms.
    small.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if small.mode not in ("RGB", "RGBA"):
        small = small.convert("RGBA" if "A" in small.getbands() else "RGB")
    buffer = io.BytesIO()
    small.save(buffer, format="WEBP", quality=80, method=4)
    return buffer.getvalue()


def preview_data_url(preview: Image.Image, side: int = 128) -> str:
    small = preview.copy()
    small.thumbnail((side, side))
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, format="JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
