"""Reading untrusted images safely, and turning images into request data and back.

Every image a caller sends (base64, a data URL, file bytes or a path) goes through
``_decode_bytes``, in this order, each step before any work the next one would cost:

1. **Byte cap** (``MAX_IMAGE_BYTES``): checked on the base64 text's length before it is
   decoded, and on the bytes before anything parses them.
2. **Format allowlist**: PNG (APNG included), JPEG and WEBP only. The format is named from its
   magic bytes, and Pillow is asked to open the file with that one plugin
   (``Image.open(fp, formats=[...])``), so no other decoder ever parses caller bytes: an EPS
   renamed ``.png`` never reaches Ghostscript, and PSD/TIFF/GIF parsers are never run.
   **GIF is refused** ("a GIF image; only PNG, JPEG and WEBP are accepted"): it adds nothing
   a prompt image needs (256 colours), and its decoder is where the classic bombs live
   (a logical screen far larger than the frames, thousands of frames); clients convert.
3. **Container check** (:mod:`fractal.containers`): the chunk or segment list is walked without
   decoding pixels. Truncated files and polyglots (bytes after IEND/EOI/the RIFF size, or an
   HTML page, ZIP or PDF inside a metadata block) are refused. JPEGs carrying further JPEGs
   after their end (MPF gain maps of iPhone and Android HDR photos) are accepted; a JPEG with
   a video appended (a "motion photo") is not.
4. **Pixel cap** (``MAX_IMAGE_PIXELS``): read from the header that ``Image.open`` parses,
   before any pixel is allocated; a PNG claiming 60000×60000 is refused in microseconds.
   Pillow's own bomb check stays on as a backstop: its ``DecompressionBombWarning`` is made an
   error for the duration of each decode (``warnings.catch_warnings``; Pillow's global
   ``MAX_IMAGE_PIXELS`` is never changed), and ``DecompressionBombError`` is caught.
5. **First frame only** of an animated WEBP or APNG.
6. **Normalised output**: EXIF orientation applied (a phone photo comes out upright), an ICC
   profile converted to sRGB, transparency flattened onto white, RGB. The result is a new image
   with no metadata at all (no EXIF, ICC, XMP or text chunks, an empty ``info``), so nothing of
   the input's metadata can reach a stored input or a rendered output.

Every refusal is an :class:`~fractal.errors.InvalidRequestError` naming the argument
(``image`` unless told otherwise); no Pillow exception escapes.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from fractal.containers import container_problem, declared_size, sniff
from fractal.errors import InvalidRequestError

__all__ = [
    "ALLOWED_FORMATS",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "decode_image",
    "image_bytes",
    "image_to_data_url",
    "load_image",
    "load_mask",
]

logger = logging.getLogger(__name__)

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_IMAGE_BYTES = 50 * 1024 * 1024
# A 25-megapixel photo (6144×4096) is 75 MB as RGB; the largest render is 4096×4096 (16.8 MP).
# Well under Pillow's own limit (~89 MP), so this cap, not Pillow's warning, is what fires.
MAX_IMAGE_PIXELS = 6144 * 4096
ImageSource = Image.Image | str | Path | bytes

# What Pillow's plugins raise on a malformed file: every one of them is the caller's problem.
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
                  struct.error, IndexError, KeyError, TypeError, ZeroDivisionError)
_ALLOWED_TEXT = "PNG, JPEG or WEBP"
_SRGB = ImageCms.createProfile("sRGB")


def _shown(data: bytes) -> str:
    return f"<{len(data)} bytes>"


def _decode_bytes(data: bytes, argument: str,
                  normalise: Callable[[Image.Image], Image.Image] | None = None) -> Image.Image:
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequestError(argument, _shown(data),
                                  f"is larger than {MAX_IMAGE_BYTES} bytes")
    fmt = sniff(data)
    if fmt is None:
        raise InvalidRequestError(argument, _shown(data),
                                  f"is not a {_ALLOWED_TEXT} image (unrecognised file type)")
    if fmt not in ALLOWED_FORMATS:
        raise InvalidRequestError(argument, _shown(data),
                                  f"is a {fmt} file; only PNG, JPEG and WEBP are accepted")
    problem = container_problem(data, fmt)
    if problem is not None:
        raise InvalidRequestError(argument, _shown(data), problem)
    _check_pixels(declared_size(data, fmt), data, argument)
    try:
        with warnings.catch_warnings():
            # Scoped to this call; our own pixel cap below fires first in practice.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as image:
                _check_pixels(image.size, data, argument)  # Pillow's reading of the header
                image.seek(0)  # first frame of an animated WebP or APNG
                image.load()
                return (normalise or _normalise)(image)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InvalidRequestError(argument, _shown(data),
                                  f"has too many pixels to decode safely (the limit is "
                                  f"{MAX_IMAGE_PIXELS} pixels)") from None
    except InvalidRequestError:
        raise
    except _DECODE_ERRORS as exc:
        logger.debug("refused an unreadable %s image: %s", fmt, exc)
        raise InvalidRequestError(
            argument, _shown(data),
            f"is not a readable {fmt} image (damaged or truncated)") from None


def _check_pixels(size: tuple[int, int] | None, data: bytes, argument: str) -> None:
    if size is None:
        return
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidRequestError(argument, _shown(data),
                                  f"is {width}×{height} pixels, more than the limit of "
                                  f"{MAX_IMAGE_PIXELS} pixels (a decompression bomb?)")


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    """The pixels in sRGB by their embedded profile; unchanged if the profile is unusable."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image  # a profile that does not fit the pixels: read them as sRGB
    return converted if converted is not None else image


def _normalise(image: Image.Image) -> Image.Image:
    """EXIF orientation applied, sRGB, alpha flattened onto white, RGB; no metadata at all."""
    icc = image.info.get("icc_profile")
    ImageOps.exif_transpose(image, in_place=True)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    elif image.mode not in ("RGB", "CMYK", "L"):
        image = image.convert("RGB")  # palette, 16-bit and other modes
    if icc:
        image = _to_srgb(image, icc)
    # A fresh RGB image: convert() copies the pixels out of the file's image object (and its
    # EXIF, text chunks and decoder state stay behind with it).
    clean = image.convert("RGB")
    clean.info = {}
    return clean


def _mask_of(image: Image.Image) -> Image.Image:
    """A mask as "L" (255 repaints, 0 keeps), no metadata: an image with transparency is read
    as OpenAI reads one (transparent pixels are repainted); any other by its lightness
    (white repaints, black keeps), as AUTOMATIC1111 and diffusers read one."""
    ImageOps.exif_transpose(image, in_place=True)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):  # all opaque: no transparency to read
            mask = alpha.point(lambda value: 255 - value)
            mask.info = {}
            return mask
    mask = image.convert("L")
    mask.info = {}
    return mask


def _read_file(path: Path, argument: str) -> bytes:
    """An image file's bytes, refused unread when it is over MAX_IMAGE_BYTES."""
    try:
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise InvalidRequestError(argument, str(path),
                                      f"is larger than {MAX_IMAGE_BYTES} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise InvalidRequestError(argument, str(path),
                                  f"cannot be read: {exc.strerror}") from None


def load_mask(source: Image.Image | Path | bytes | str, argument: str = "mask") -> Image.Image:
    """A caller's mask — a PIL image, a file path (a ``Path``), file bytes, or base64 text or
    a data URL (a ``str``, as requests carry it) — through the same checks as every input
    image, as "L": 255 repaints, 0 keeps (see :func:`_mask_of`)."""
    if isinstance(source, Image.Image):
        return _mask_of(source.copy())
    if isinstance(source, str):
        return _decode_bytes(image_bytes(source, argument), argument, _mask_of)
    if isinstance(source, Path):
        source = _read_file(source, argument)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source), argument, _mask_of)
    raise InvalidRequestError(argument, type(source).__name__,
                              "must be a PIL image, a Path, bytes, base64 text or a data URL")


def decode_image(data: str, argument: str = "image") -> Image.Image:
    """A request's image: base64 text or a ``data:image/...;base64,`` URL."""
    return _decode_bytes(image_bytes(data, argument), argument)


def image_bytes(data: str, argument: str = "image") -> bytes:
    """The file inside base64 text or a ``data:image/...;base64,`` URL, not yet decoded as an
    image (that is :func:`load_image`'s)."""
    if not isinstance(data, str) or not data:
        raise InvalidRequestError(argument, data, "must be a base64 string or data URL")
    payload = data
    if data.startswith("data:"):
        header, _, payload = data.partition(",")
        if not header.endswith(";base64"):
            raise InvalidRequestError(argument, header[:80], "must be a base64 data URL")
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise InvalidRequestError(argument, f"<{len(payload)} characters>",
                                  f"is larger than {MAX_IMAGE_BYTES} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(argument, data, "is not valid base64") from None


def load_image(source: ImageSource, argument: str = "image") -> Image.Image:
    """A caller's image: a PIL image, a file path, or the file's bytes."""
    if isinstance(source, Image.Image):
        return _normalise(source.copy())
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source), argument)
    if isinstance(source, (str, Path)):
        return _decode_bytes(_read_file(Path(source), argument), argument)
    raise InvalidRequestError(argument, type(source).__name__,
                              "must be a PIL image, a file path or bytes")


def image_to_data_url(image: Image.Image) -> str:
    """PNG in a data URL: lossless, so a request rebuilt from it renders the same picture."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
