"""A hostile-input corpus against a real server (uvicorn in a child process, its embedded
worker rendering): every case is a 4xx naming the field, no job is created for it, and the
server's memory stays bounded while it refuses bombs.

The files are built in memory by tests/hostile_files.py; each image case is sent both ways a
client can send one: a data URL in JSON, and a file part in multipart/form-data.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from api.limits import MAX_BODY_BYTES
from fractal.validation import MAX_PROMPT_CHARS
from tests import hostile_files as hostile
from tests.api_server import serving

MEMORY_BOUND_MB = 64  # peak growth of the API process while it refuses the bomb corpus 3×
ASYNC = {"Prefer": "respond-async"}


@dataclass
class Server:
    base: str
    pid: int
    data_dir: Path
    idle_rss_mb: float

    def post(self, path: str = "/generate", **kwargs) -> httpx.Response:
        headers = {**ASYNC, **kwargs.pop("headers", {})}
        return httpx.post(self.base + path, headers=headers, timeout=60, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        url = path if path.startswith("http") else self.base + path
        return httpx.get(url, timeout=30, **kwargs)

    def job_count(self) -> int:
        return len(self.get("/jobs", params={"limit": 100}).json()["jobs"])


def _status(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")


def _reset_peak(pid: int) -> bool:
    """Linux resets VmHWM to the current RSS on "5" (kernel 4.0+); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("hostile")
    with serving(data_dir, SPEC2FRACTAL_SYNC_TIMEOUT="30", SPEC2FRACTAL_AUTH="off") as api:
        base = api.url
        # Warm up the paths the corpus takes (imports, first decode), then take the idle size.
        httpx.post(base + "/generate", headers=ASYNC, timeout=30,
                   json={"input_type": "image", "image": "data:image/png;base64,"
                         + base64.b64encode(hostile.eps_as_png()).decode()})
        yield Server(base, api.pid, data_dir, _status(api.pid, "VmRSS"))


# -- the image corpus ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    name: str
    build: Callable[[], bytes]
    message: str  # a regex the 422's message must match


IMAGE_CORPUS = [
    Hostile("png-header-60000x60000", hostile.png_header_bomb, r"is 60000×60000 pixels"),
    Hostile("png-zlib-bomb-8192x8192", hostile.png_zlib_bomb, r"is 8192×8192 pixels"),
    Hostile("webp-canvas-bomb", hostile.webp_canvas_bomb, r"is 16383×16383 pixels"),
    Hostile("gif-extents-bomb", hostile.gif_extents_bomb, r"is a GIF file; only PNG, JPEG"),
    Hostile("gif-1000-frames", hostile.gif_many_frames, r"is a GIF file; only PNG, JPEG"),
    Hostile("eps-renamed-png", hostile.eps_as_png, r"is a PostScript/EPS file"),
    Hostile("png-truncated", lambda: hostile.truncated(hostile.noisy_png()), r"is truncated"),
    Hostile("jpeg-truncated", lambda: hostile.truncated(hostile.noisy_jpeg()), r"is truncated"),
    Hostile("png+zip", hostile.png_with_zip, r"bytes after the end of the image; polyglot"),
    Hostile("png-html-chunk", hostile.png_with_html_chunk, r"document hidden in its metadata"),
    Hostile("jpeg-html-comment", hostile.jpeg_with_html_comment,
            r"document hidden in its metadata"),
    Hostile("jpeg+html", hostile.jpeg_with_html_appended, r"bytes after the end of the image"),
    Hostile("webp+trailer", hostile.webp_with_trailer, r"bytes after the end of the image"),
    Hostile("png-50000-chunks", hostile.png_many_chunks, r"more than 20000 chunks"),
    Hostile("plain-text", lambda: b"just some text, not a picture",
            r"is not a PNG, JPEG or WEBP image"),
    Hostile("svg", lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>',
            r"is a SVG/XML/HTML file"),
]


def _send_json(server: Server, raw: bytes, mime: str = "image/png") -> httpx.Response:
    url = f"data:{mime};base64," + base64.b64encode(raw).decode()
    return server.post(json={"input_type": "image", "image": url})


def _send_file(server: Server, raw: bytes, filename: str = "photo.png") -> httpx.Response:
    return server.post(data={"input_type": "image"},
                       files={"image": (filename, raw, "image/png")})


TRANSPORTS = {"json": _send_json, "multipart": _send_file}


def _assert_field_error(response: httpx.Response, field: str, message: str) -> None:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    entry = detail[0]
    assert entry["loc"] == ["body", field], detail
    assert f"`{field}`" in entry["msg"] and re.search(message, entry["msg"]), entry["msg"]
    _assert_no_internals(response)


def _assert_no_internals(response: httpx.Response) -> None:
    text = response.text
    for leak in ("Traceback", "File \"", "/site-packages/", "PIL.", "_io.BytesIO", "0x7f"):
        assert leak not in text, text[:500]
    assert len(text) < 5000  # nothing echoed back whole


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", IMAGE_CORPUS, ids=lambda case: case.name)
def test_hostile_image_is_a_422_naming_image(server: Server, case: Hostile,
                                             transport: str) -> None:
    before = server.job_count()
    response = TRANSPORTS[transport](server, case.build())
    _assert_field_error(response, "image", case.message)
    assert server.job_count() == before  # refused before the job row


def test_an_image_of_the_wrong_type_is_a_422(server: Server) -> None:
    response = server.post(json={"input_type": "image", "image": 12345})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "image"]
    response = server.post(json={"input_type": "image", "image": "data:image/png;base64,@@"})
    _assert_field_error(response, "image", "not valid base64")


# -- bodies -------------------------------------------------------------------------------------


def test_an_oversize_json_body_is_413_before_it_is_read(server: Server) -> None:
    body = b'{"input_type": "image", "image": "' + b"A" * (MAX_BODY_BYTES + 10) + b'"}'
    response = server.post(content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_an_oversize_chunked_upload_is_413(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        piece = b"\x00" * (1024 * 1024)
        for _ in range(MAX_BODY_BYTES // len(piece) + 2):
            yield piece

    response = server.post(content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_an_oversize_multipart_file_is_413(server: Server) -> None:
    raw = hostile.png() + b"\x00" * (MAX_BODY_BYTES + 1)
    assert _send_file(server, raw).status_code == 413


def test_an_image_over_the_byte_cap_but_under_the_body_cap_is_a_422(server: Server) -> None:
    from fractal.images import MAX_IMAGE_BYTES

    raw = hostile.png() + b"\x00" * (MAX_IMAGE_BYTES + 1 - len(hostile.png()))
    _assert_field_error(_send_file(server, raw), "image", f"larger than {MAX_IMAGE_BYTES} bytes")


@pytest.mark.parametrize("body", [
    b'{"input_type": "text", "content": "a',
    b'{"input_type": "text",, }',
    b"\xff\xfe not utf-8",
    b"[" * 100_000 + b"]" * 100_000,  # nesting deep enough to break a recursive parser
    b'{"input_type": "text", "width": 1' + b"0" * 5000 + b"}",  # past int's digit limit
    b"",
], ids=["cut-short", "double-comma", "not-utf8", "deep-nesting", "huge-int", "empty"])
def test_broken_json_is_a_clear_4xx(server: Server, body: bytes) -> None:
    response = server.post(content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    detail = response.json()["detail"]
    assert detail and (isinstance(detail, str) or detail[0]["loc"][0] == "body")
    _assert_no_internals(response)


def test_unknown_fields_are_named(server: Server) -> None:
    response = server.post(json={"input_type": "text", "content": "x", "promt": "typo",
                                 "__proto__": {"admin": True}})
    assert response.status_code == 422
    locs = {tuple(entry["loc"]) for entry in response.json()["detail"]}
    assert ("body", "promt") in locs and ("body", "__proto__") in locs
    response = server.post(data={"content": "x", "promt": "typo"})
    assert response.status_code == 422
    assert ["body", "promt"] in [entry["loc"] for entry in response.json()["detail"]]


@pytest.mark.parametrize("transport", ["json", "multipart"])
def test_a_one_megabyte_prompt_is_refused_by_name(server: Server, transport: str) -> None:
    prompt = "fractal " * (1024 * 1024 // 8)
    if transport == "json":
        response = server.post(json={"content": prompt})
    else:
        response = server.post(data={"content": prompt})
    _assert_field_error(response, "content", f"at most {MAX_PROMPT_CHARS} characters")
    response = server.post(json={"content": "ok", "negative_prompt": prompt})
    _assert_field_error(response, "negative_prompt", f"at most {MAX_PROMPT_CHARS} characters")


def test_other_media_types_are_415(server: Server) -> None:
    response = server.post(content=hostile.png(), headers={"Content-Type": "image/png"})
    assert response.status_code == 415


def test_too_many_form_parts_are_a_4xx(server: Server) -> None:
    fields = {f"field{index}": "x" for index in range(500)}
    response = server.post(data=fields)
    assert 400 <= response.status_code < 500
    files = [("image", ("a.png", hostile.png(), "image/png")),
             ("image", ("b.png", hostile.png(), "image/png"))]
    response = server.post(data={"input_type": "image"}, files=files)
    assert 400 <= response.status_code < 500


# -- what is accepted comes out clean and upright -----------------------------------------------


def _render(server: Server, raw: bytes, transport: str, **fields) -> dict:
    if transport == "json":
        url = "data:image/jpeg;base64," + base64.b64encode(raw).decode()
        response = httpx.post(server.base + "/generate", timeout=60,
                              json={"input_type": "image", "image": url, **fields})
    else:
        response = httpx.post(server.base + "/generate", timeout=60,
                              data={"input_type": "image", **{k: str(v) for k, v in
                                                              fields.items()}},
                              files={"image": ("photo.jpg", raw, "image/jpeg")})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_exif_rotated_photo_renders_upright(server: Server, transport: str) -> None:
    # Stored 64×32 with the white half on the left; Orientation=6 shows it 32×64, white on top.
    result = _render(server, hostile.rotated_jpeg(64, 32, 6), transport, strength=0.2)
    output = result["job"]["outputs"][0]
    assert (output["width"], output["height"]) == (32, 64)
    pixels = np.asarray(Image.open(io.BytesIO(server.get(result["image_url"]).content))
                        .convert("L"), dtype=float)
    assert pixels.shape == (64, 32)
    assert pixels[:24].mean() > pixels[-24:].mean() + 60, (pixels[:24].mean(),
                                                            pixels[-24:].mean())


@pytest.mark.parametrize(("transport", "builder"), [("json", hostile.tagged_jpeg),
                                                    ("multipart", hostile.tagged_png)])
def test_no_input_metadata_reaches_any_stored_file(server: Server, transport: str,
                                                   builder) -> None:
    raw = builder()
    marker = hostile.HIDDEN_MARKER.encode()
    assert marker in raw
    result = _render(server, raw, transport, strength=0.2)
    output = server.get(result["image_url"]).content
    assert marker not in output
    image = Image.open(io.BytesIO(output))
    assert not any(hostile.HIDDEN_MARKER in str(value) for value in image.getexif().values())
    assert set(image.info) <= {"parameters", "spec2fractal", "dpi", "gamma"} | {
        key for key in image.info if key.startswith("spec2fractal")}, image.info
    # Nor the stored input, nor anything else the server wrote.
    for path in server.data_dir.rglob("*"):
        if path.is_file() and path.name != "server.log":
            assert marker not in path.read_bytes(), path


# -- memory -------------------------------------------------------------------------------------


def test_memory_stays_bounded_over_the_bomb_corpus(server: Server) -> None:
    isolated = _reset_peak(server.pid)
    start = _status(server.pid, "VmRSS") if isolated else server.idle_rss_mb
    corpus = [case.build() for case in IMAGE_CORPUS]
    for _ in range(3):
        for raw in corpus:
            for send in TRANSPORTS.values():
                assert send(server, raw).status_code == 422
    peak = _status(server.pid, "VmHWM")
    assert peak - start < MEMORY_BOUND_MB, (start, peak)
    # And it gave back what it used: no leak across the 96 refusals.
    assert _status(server.pid, "VmRSS") - start < MEMORY_BOUND_MB / 2
