"""The byte structure of an uploaded image file, checked before any decoder sees it.

Pillow reads a PNG up to IEND and a JPEG up to its first EOI and ignores what follows, so a
file can be a valid image *and* a ZIP, an HTML page or a PDF at once (a polyglot). Such a file
decodes to pixels, but it is not what it claims to be, so it is refused: every byte must belong
to the image's own chunks or segments, and no metadata block may carry a document.

``sniff`` names a file's format from its magic bytes without parsing it, so a refusal can say
what was sent ("a GIF image"). ``container_problem`` walks the chunk or segment list (a few
array reads per chunk; pixel data is never decoded here) and says what is wrong, or None.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["MAX_CHUNKS", "PngChunk", "container_problem", "declared_size", "png_chunks",
           "sniff"]

# An APNG of 1000 frames has ~2000 chunks; a file of a million empty chunks is an attack on
# the parser's loop, not a picture.
MAX_CHUNKS = 20_000
# MPF JPEGs (iPhone and Android "Ultra HDR" photos) append a gain map or depth map as further
# JPEGs after the first EOI; more than this many is not a photo.
MAX_JPEG_IMAGES = 8

# Signatures of formats we refuse, to name them in the error. Checked in order.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"%!PS", 0, "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", 0, "PostScript/EPS"),
    (b"%PDF", 0, "PDF"),
    (b"8BPS", 0, "Photoshop (PSD)"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"BM", 0, "BMP"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"PK\x03\x04", 0, "ZIP"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG 2000"),
    (b"ftypavif", 4, "AVIF"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypmif1", 4, "HEIF"),
    (b"qoif", 0, "QOI"),
)

# Documents hidden in metadata (PNG text and private chunks, JPEG APPn/COM segments, WEBP
# EXIF/XMP chunks). Only metadata is searched: compressed pixel data is random bytes, where
# short patterns would match by chance. XMP is XML (<x:xmpmeta ...>) and is not matched.
_HIDDEN_DOCUMENT = re.compile(
    rb"<(?:html|head|body|script|iframe|svg|object|embed|form|meta|style)[\s/>]"
    rb"|<!doctype|<\?php"
    rb"|(?-i:PK\x03\x04[\x0a\x14\x2d]\x00|PK\x05\x06\x00\x00\x00\x00|%PDF-\d|%!PS-Adobe)",
    re.IGNORECASE,
)
# In JPEG entropy-coded data 0xFF is followed by 0x00 (a stuffed byte) or RST0-7; anything
# else after one or more 0xFF is the next marker.
_JPEG_MARKER = re.compile(rb"\xff+([^\x00\xd0-\xd7\xff])")
_PNG_PIXEL_CHUNKS = (b"IDAT", b"fdAT")
_WEBP_IMAGE_CHUNKS = (b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF")


def sniff(data: bytes) -> str | None:
    """The file's format from its first bytes, or None if it is none we know."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, offset, name in _SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            return name
    head = data[:256].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml", b"<!doctype", b"<html")):
        return "SVG/XML/HTML"
    return None


def declared_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Width and height as the header states them, read before any decoder is created (libwebp
    allocates its canvas when it opens a file), or None if the header does not say."""
    if fmt == "PNG" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if fmt == "WEBP":
        kind = data[12:16]
        if kind == b"VP8X":
            return (1 + int.from_bytes(data[24:27], "little"),
                    1 + int.from_bytes(data[27:30], "little"))
        if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            return (int.from_bytes(data[26:28], "little") & 0x3FFF,
                    int.from_bytes(data[28:30], "little") & 0x3FFF)
        if kind == b"VP8L" and data[20:21] == b"\x2f":
            bits = int.from_bytes(data[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        return None
    if fmt == "JPEG":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos, size = 2, len(data)
    for _ in range(MAX_CHUNKS):
        if pos + 9 > size or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xDA or marker == 0xD9:
            return None  # no frame header before the scan
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            height = int.from_bytes(data[pos + 5:pos + 7], "big")
            width = int.from_bytes(data[pos + 7:pos + 9], "big")
            return width, height
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return None


def container_problem(data: bytes, fmt: str) -> str | None:
    """What is wrong with the file's structure ("is truncated", ...), or None if it is sound."""
    if fmt == "PNG":
        return _png(data)
    if fmt == "JPEG":
        return _jpeg(data)
    if fmt == "WEBP":
        return _webp(data)
    raise ValueError(f"no container check for {fmt}")


def _hidden(payload: bytes | memoryview) -> str | None:
    match = _HIDDEN_DOCUMENT.search(payload)
    if match is None:
        return None
    found = match.group(0).decode("latin-1").strip()
    return f"has a document hidden in its metadata ({found!r}); polyglot files are refused"


def _trailing(extra: int) -> str:
    return (f"has {extra} bytes after the end of the image; "
            "polyglot files (an image with another file appended) are refused")


class PngChunk(NamedTuple):
    kind: bytes
    start: int  # where its data begins
    length: int
    end: int  # past its CRC: where the next chunk begins (may be past the file's end)


def png_chunks(data: bytes) -> Iterator[PngChunk]:
    """A PNG's chunks in order, after the signature, while a chunk header fits; a chunk that
    runs past the file's end is yielded too (its ``end`` tells), and is the last."""
    pos = 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        chunk = PngChunk(data[pos + 4:pos + 8], pos + 8, length, pos + 12 + length)
        yield chunk
        pos = chunk.end


def _png(data: bytes) -> str | None:
    view = memoryview(data)
    for count, chunk in enumerate(png_chunks(data), start=1):
        if chunk.end > len(data):
            return f"is truncated (a {chunk.kind.decode('latin-1')!r} chunk runs past the end)"
        if chunk.kind not in _PNG_PIXEL_CHUNKS:
            problem = _hidden(view[chunk.start:chunk.start + chunk.length])
            if problem:
                return problem
        if chunk.kind == b"IEND":
            return _trailing(len(data) - chunk.end) if chunk.end != len(data) else None
        if count > MAX_CHUNKS:
            return f"has more than {MAX_CHUNKS} chunks"
    return "is truncated (the PNG ends before its IEND chunk)"


def _jpeg(data: bytes) -> str | None:
    images, pos = 0, 0
    size = len(data)
    while True:
        end = _jpeg_image(data, pos)
        if isinstance(end, str):
            return end
        images += 1
        pos = end
        rest = data[pos:]
        if not rest.strip(b"\x00"):  # some encoders pad the file with zeros
            return None
        if not rest.startswith(b"\xff\xd8\xff") or images >= MAX_JPEG_IMAGES:
            return _trailing(size - pos)
        # Another JPEG after EOI: an MPF gain map or depth map, checked the same way.


def _jpeg_image(data: bytes, start: int) -> int | str:
    """The offset just past the EOI of the JPEG that starts at ``start``, or a problem."""
    view = memoryview(data)
    size, pos, segments = len(data), start + 2, 0
    scanning = False  # inside entropy-coded data after an SOS segment
    while True:
        if scanning:
            match = _JPEG_MARKER.search(data, pos)
            if match is None:
                return "is truncated (the JPEG has no end-of-image marker)"
            pos, marker = match.start(1) - 1, match.group(1)[0]
        else:
            if pos + 2 > size:
                return "is truncated (the JPEG has no end-of-image marker)"
            if data[pos] != 0xFF:
                return "is not a well-formed JPEG (bytes between segments)"
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte before a marker
                pos += 1
                continue
        segments += 1
        if segments > MAX_CHUNKS:
            return f"has more than {MAX_CHUNKS} segments"
        if marker == 0xD9:  # EOI
            return pos + 2
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if pos + 4 > size:
            return "is truncated (a JPEG segment runs past the end)"
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if length < 2:
            return "is not a well-formed JPEG (a segment with a bad length)"
        end = pos + 2 + length
        if end > size:
            return "is truncated (a JPEG segment runs past the end)"
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:  # APPn and COM: metadata
            problem = _hidden(view[pos + 4:end])
            if problem:
                return problem
        pos = end
        scanning = marker == 0xDA or scanning  # after the first SOS, markers sit in the data


def _webp(data: bytes) -> str | None:
    size = len(data)
    declared = 8 + int.from_bytes(data[4:8], "little")
    if declared < 12 + 8:  # "WEBP" and at least one chunk header
        return "is not a well-formed WEBP (its RIFF header declares no image)"
    if declared > size:
        return "is truncated (the WEBP is shorter than its RIFF header says)"
    if declared < size:
        return _trailing(size - declared)
    view = memoryview(data)
    pos, chunks = 12, 0
    while pos < size:
        if pos + 8 > size:
            return "is truncated (a WEBP chunk header runs past the end)"
        kind = data[pos:pos + 4]
        length = int.from_bytes(data[pos + 4:pos + 8], "little")
        end = pos + 8 + length + (length & 1)  # chunks are padded to an even length
        if end > size:
            return "is truncated (a WEBP chunk runs past the end)"
        if kind not in _WEBP_IMAGE_CHUNKS:
            problem = _hidden(view[pos + 8:pos + 8 + length])
            if problem:
                return problem
        pos = end
        chunks += 1
        if chunks > MAX_CHUNKS:
            return f"has more than {MAX_CHUNKS} chunks"
    return None
