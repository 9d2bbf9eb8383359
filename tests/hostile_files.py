"""Hostile image files, built in memory (nothing binary is checked in).

Each builder returns bytes that a careless decoder would accept, hang on or allocate gigabytes
for; tests feed them to ``fractal.images`` directly and to the API.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ORIENTATION = 0x0112
HIDDEN_MARKER = "HOSTILE-METADATA-7f3a"  # written into every metadata block of the "tagged" files


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))


def png(width: int = 48, height: int = 32, colour: str = "teal") -> bytes:
    return encode(Image.new("RGB", (width, height), colour), "PNG")


def jpeg(width: int = 48, height: int = 32, colour: str = "teal", **options) -> bytes:
    return encode(Image.new("RGB", (width, height), colour), "JPEG", **options)


def webp(width: int = 48, height: int = 32, colour: str = "teal") -> bytes:
    return encode(Image.new("RGB", (width, height), colour), "WEBP")


def png_header_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A tiny PNG whose header claims ``width``×``height`` (3.6 billion pixels by default)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def png_zlib_bomb(side: int = 8192) -> bytes:
    """A real, complete, valid PNG of ``side``² black pixels (67 MP, 200 MB as RGB) in a file
    of ~200 KB: the pixel data is one long run of zeros. Built row by row in little memory."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + side * 3)  # filter byte + RGB
    parts = [compressor.compress(row) for _ in range(side)]
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts))
            + png_chunk(b"IEND", b""))


def webp_canvas_bomb(side: int = 16383) -> bytes:
    """An animated-WEBP header (VP8X) claiming a 16383² canvas around a tiny frame."""
    small = webp(8, 8)
    frame = small[12:]  # the VP8 chunk of a plain lossy WEBP
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0, 0, 0, 0])
    vp8x += (side - 1).to_bytes(3, "little") + (side - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


def gif_extents_bomb(width: int = 65535, height: int = 65535) -> bytes:
    """A 1×1 GIF whose logical screen claims ``width``×``height``: decoders that allocate the
    screen (Pillow does, for frames after the first) spend gigabytes on a 40-byte file."""
    data = bytearray(encode(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def gif_many_frames(frames: int = 1000) -> bytes:
    """An animation of ``frames`` 16×16 frames, each a different picture (so none is merged)."""
    images = []
    for index in range(frames):
        frame = Image.new("RGB", (16, 16), (index % 256, (index // 256) * 60, 0))
        frame.putpixel((index % 16, (index // 16) % 16), (255, 255, 255))
        images.append(frame)
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=10,
                  optimize=False)


def eps_as_png() -> bytes:
    """An EPS file, as it would arrive named ``photo.png``: Pillow's EPS plugin would run
    Ghostscript on it."""
    return (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n%%EndComments\n"
            b"/Helvetica findfont 12 scalefont setfont 10 10 moveto (owned) show\n"
            b"(%pipe%id) (w) file\nshowpage\n%%EOF\n")


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


def noisy_png(side: int = 96) -> bytes:
    return encode(Image.effect_noise((side, side), 60).convert("RGB"), "PNG")


def noisy_jpeg(side: int = 96) -> bytes:
    return encode(Image.effect_noise((side, side), 60).convert("RGB"), "JPEG", quality=90)


def png_with_zip() -> bytes:
    """A PNG with a ZIP archive appended (a valid PNG *and* a valid ZIP)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("payload.html", "<script>alert(1)</script>")
    return png() + archive.getvalue()


def png_with_html_chunk() -> bytes:
    """HTML in a tEXt chunk before IEND: a browser sniffing the bytes may render it."""
    data = png()
    text = png_chunk(b"tEXt", b"Comment\x00<html><body><script>alert(1)</script></body></html>")
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + text + data[iend:]


def jpeg_with_html_comment() -> bytes:
    """A JPEG whose COM segment is an HTML page."""
    data = jpeg()
    html = b"<html><script>alert(document.domain)</script></html>"
    comment = b"\xff\xfe" + struct.pack(">H", len(html) + 2) + html
    return data[:2] + comment + data[2:]


def jpeg_with_html_appended() -> bytes:
    return jpeg() + b"<!DOCTYPE html><html><script>alert(1)</script></html>"


def webp_with_trailer() -> bytes:
    return webp() + b"PK\x05\x06" + b"\x00" * 18


def png_many_chunks(count: int = 50_000) -> bytes:
    data = png()
    iend = data.rindex(b"IEND") - 4
    filler = png_chunk(b"abCd", b"") * count
    return data[:iend] + filler + data[iend:]


def apng(colours: tuple[str, ...] = ("red", "blue", "lime")) -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in colours]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:])


def rotated_jpeg(width: int = 64, height: int = 32, orientation: int = 6) -> bytes:
    """Stored landscape, left half white, right half black, EXIF Orientation ``orientation``
    (6: a phone held upright; shown rotated 90° clockwise, so white ends up on top)."""
    image = Image.new("RGB", (width, height), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, width // 2, height))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return encode(image, "JPEG", exif=exif.tobytes(), quality=95)


def tagged_jpeg() -> bytes:
    """A JPEG carrying the marker in its EXIF (Artist, Make), COM and an ICC profile."""
    image = Image.new("RGB", (48, 32), (200, 120, 40))
    exif = Image.Exif()
    exif[0x013B] = HIDDEN_MARKER  # Artist
    exif[0x010F] = HIDDEN_MARKER  # Make
    exif[0x8298] = HIDDEN_MARKER  # Copyright
    data = encode(image, "JPEG", exif=exif.tobytes(), quality=95,
                  comment=HIDDEN_MARKER.encode(), icc_profile=_srgb_icc())
    return data


def tagged_png() -> bytes:
    """A PNG carrying the marker in tEXt, iTXt and eXIf chunks."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", HIDDEN_MARKER)
    info.add_itxt("Description", HIDDEN_MARKER, lang="en")
    exif = Image.Exif()
    exif[0x013B] = HIDDEN_MARKER
    return encode(Image.new("RGB", (48, 32), (40, 120, 200)), "PNG", pnginfo=info,
                  exif=exif.tobytes())


def _srgb_icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
