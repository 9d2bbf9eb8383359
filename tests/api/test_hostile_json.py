"""Hostile JSON, round two, against a real server (uvicorn in a child process): numbers JSON
does not have, strings Unicode does not have, nesting and bulk past what any body needs, and
numbers sent as text. Each is a 4xx naming where, the connection stays usable, nothing is
queued, and the key's jobs stay readable."""

from __future__ import annotations

import io
import json
import os
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from api.jsonparse import INLINE_BYTES, MAX_JSON_DEPTH, MAX_JSON_VALUES, MAX_TEXT_CHARS, SPOOL_OVER
from api.limits import MAX_BODY_BYTES
from tests.api.helpers import data_url, png_bytes
from tests.api_server import serving

JSON = {"Content-Type": "application/json", "Prefer": "respond-async"}
TINY = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with serving(tmp_path_factory.mktemp("hostile-json"), SPEC2FRACTAL_AUTH="off") as api, \
            httpx.Client(base_url=api.url, timeout=60) as client:
        yield client


def _loc(response: httpx.Response) -> list[list[str | int]]:
    assert response.status_code == 422, response.text
    return [entry["loc"] for entry in response.json()["detail"]]


def _jobs(client: httpx.Client) -> int:
    # Also: the same keep-alive connection answers the next request.
    listed = client.get("/jobs", params={"limit": 100})
    assert listed.status_code == 200
    return len(listed.json()["jobs"])


@pytest.mark.parametrize("number", [b"Infinity", b"-Infinity", b"NaN", b"1e309", b"-1e999"])
def test_non_finite_numbers_are_refused_by_name(client: httpx.Client, number: bytes) -> None:
    jobs = _jobs(client)
    body = b'{"content": "a", "guidance": ' + number + b"}"
    assert _loc(client.post("/generate", content=body, headers=JSON)) == [["body", "guidance"]]
    body = b'{"template": {"content": "a"}, "grid": {"texture": [0.5, ' + number + b"]}}"
    assert _loc(client.post("/batches", content=body, headers=JSON)) == \
        [["body", "grid", "texture", 1]]
    response = client.post("/v1/images/generations", content=b'{"prompt": "a", "n": '
                           + number + b"}", headers=JSON)
    assert response.status_code == 400, response.text  # OpenAI's shape for a bad parameter
    assert response.json()["error"]["param"] == "n"
    assert _jobs(client) == jobs


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e309"])
def test_non_finite_form_fields_are_refused_by_name(client: httpx.Client, text: str) -> None:
    jobs = _jobs(client)
    response = client.post("/generate", data={"content": "a", "guidance": text},
                           headers={"Prefer": "respond-async"})
    assert _loc(response) == [["body", "guidance"]]
    response = client.post("/v1/images/edits", data={"prompt": "a", "guidance": text},
                           files={"image": ("a.png", png_bytes(), "image/png")})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "guidance"
    assert _jobs(client) == jobs


@pytest.mark.parametrize("body", [
    b'{"content": "a \\ud800 b", "width": 64, "height": 64}',
    b'{"content": "a \\udfff\\ud800 b"}',
    b'{"content": "a", "negative_prompt": "\\udc00"}',
], ids=["lone-high", "reversed-pair", "lone-low"])
def test_a_lone_surrogate_is_refused_and_the_job_list_stays_readable(
        client: httpx.Client, body: bytes) -> None:
    jobs = _jobs(client)
    response = client.post("/generate", content=body, headers=JSON)
    assert len(_loc(response)) == 1 and _loc(response)[0][1] in ("content", "negative_prompt")
    assert "surrogate" in response.json()["detail"][0]["msg"]
    for path in ("/jobs", "/jobs?status=failed"):
        assert client.get(path).status_code == 200
    assert _jobs(client) == jobs


def test_a_surrogate_in_a_key_is_refused(client: httpx.Client) -> None:
    response = client.post("/generate", content=b'{"content": "a", "\\ud800": 1}',
                           headers=JSON)
    assert _loc(response) == [["body"]]


def test_a_proper_surrogate_pair_is_an_ordinary_character(client: httpx.Client) -> None:
    response = client.post("/generate", content=b'{"content": "a fern \\ud83c\\udf3f", '
                           b'"width": 64, "height": 64, "steps": 2}', headers=JSON)
    assert response.status_code == 202, response.text
    assert response.json()["request"]["prompt"] == "a fern \U0001f33f"


@pytest.mark.parametrize("depth", [250, 300, 5000])
def test_a_deeply_nested_grid_is_a_422(client: httpx.Client, depth: int) -> None:
    grid = b'{"template": {"content": "a"}, "grid": {"seed": ' + b"[" * depth + b"1" \
        + b"]" * depth + b"}}"
    response = client.post("/batches", content=grid, headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:3] == ["body", "grid", "seed"] or \
        response.json()["detail"][0]["loc"] == ["body"]
    assert client.get("/batches").json()["batches"] == []


def test_nesting_up_to_the_cap_parses(client: httpx.Client) -> None:
    # One level under the cap is JSON the parser takes; the schema then refuses the shape.
    nested = b"[" * (MAX_JSON_DEPTH - 3) + b"1" + b"]" * (MAX_JSON_DEPTH - 3)
    response = client.post("/batches", content=b'{"template": {"content": "a"}, "grid": '
                           b'{"seed": ' + nested + b"}}", headers=JSON)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] != "json_too_deep"


def test_twenty_million_empty_lists_are_refused_before_parsing(client: httpx.Client) -> None:
    body = b"[" + b"[]," * 20_000_000 + b"[]]"  # 60 MB, under the body cap
    response = client.post("/generate", content=body, headers=JSON)
    assert response.status_code == 422, response.text[:300]
    assert response.json()["detail"][0]["type"] == "json_too_large"
    assert str(MAX_JSON_VALUES) in response.json()["detail"][0]["msg"]
    assert client.get("/health").status_code == 200


def test_a_long_text_is_refused_where_it_is_parsed(client: httpx.Client) -> None:
    # Refused in the parsing process: a 60 MB prompt never reaches the API's whole.
    response = client.post("/generate", json={"content": "a" * (MAX_TEXT_CHARS + 1)},
                           headers=JSON)
    assert _loc(response) == [["body", "content"]]
    assert response.json()["detail"][0]["type"] == "string_too_long"


def _padded(body: dict[str, object]) -> bytes:
    """Valid JSON past INLINE_BYTES: streamed to the parsing process."""
    return json.dumps(body).encode() + b" " * (INLINE_BYTES + 1024)


def test_a_large_image_comes_back_from_the_parsing_process(client: httpx.Client) -> None:
    noise = Image.frombytes("RGB", (640, 640), os.urandom(640 * 640 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    assert len(buffer.getvalue()) > SPOOL_OVER  # handed back through a file
    response = client.post("/generate", content=_padded(
        {"input_type": "image", "image": data_url(buffer.getvalue()), "strength": 0.3,
         **TINY}), headers=JSON)
    assert response.status_code == 202, response.text[:300]
    job_id = response.json()["id"]
    for _ in range(300):
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert job["status"] == "succeeded", job


def test_a_body_cut_off_or_too_large_leaves_the_parser_in_step(client: httpx.Client) -> None:
    host, port = client.base_url.host, client.base_url.port
    with socket.create_connection((host, port), timeout=10) as sock:  # leaves midway
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 1000000\r\n\r\n" + b'{"content": "' + b"a" * 300_000)
    too_large = client.post("/generate", content=b"[" + b" " * (MAX_BODY_BYTES + 1),
                            headers=JSON)
    assert too_large.status_code == 413
    for prompt in ("first after", "second after"):
        response = client.post("/generate", content=_padded({"content": prompt, **TINY}),
                               headers=JSON)
        assert response.status_code == 202, response.text[:300]
        assert response.json()["request"]["prompt"] == prompt  # its own body's answer


@pytest.mark.parametrize("field,value", [("width", "64"), ("steps", "2"), ("guidance", "7.5"),
                                         ("seed", "1"), ("n", "1"), ("texture", "0.5")])
def test_numbers_sent_as_text_are_refused_in_json(client: httpx.Client, field: str,
                                                 value: str) -> None:
    response = client.post("/generate", json={"content": "a", field: value}, headers=JSON)
    assert _loc(response) == [["body", field]]
    assert response.json()["detail"][0]["type"].endswith("_type")
    if field != "width":  # /v1 takes `size` instead
        response = client.post("/v1/images/generations", json={"prompt": "a", field: value})
        assert response.status_code == 400 and response.json()["error"]["param"] == field
    # A form has nothing but text: there "64" is the number 64.
    response = client.post("/generate", data={"content": "a", **TINY, field: value},
                           headers={"Prefer": "respond-async"})
    assert response.status_code == 202, response.text


# -- every JSON body the schema documents, every property, every hostile value ---------------

# Refused wherever they stand: no field takes them.
REFUSED = {
    "nan": b"NaN", "infinity": b"-Infinity", "overflow": b"1e999",
    "surrogate": b'"\\udcff"', "deep": b"[" * 40 + b"]" * 40,
    "huge-array": b"[" + b"0," * 600_000 + b"0]",
}
# Some field may take them (a prompt of "64"): never a 5xx, always a JSON answer.
ODD = {"huge-string": b'"' + b"x" * 2_000_000 + b'"', "number-as-text": b'"64"',
       "object": b'{"$ref": "#/x", "__proto__": {"a": 1}}', "null": b"null", "empty": b'""'}


def _json_operations(client: httpx.Client) -> list[tuple[str, str, list[str]]]:
    """(method, path, property names) of every operation whose body may be JSON."""
    schema = client.get("/openapi.json").json()
    found = []
    for path, operations in schema["paths"].items():
        if "{" in path:
            continue  # the operations with a path parameter take no JSON body
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            ref = body["schema"].get("$ref", "")
            shape = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else \
                body["schema"]
            found.append((method.upper(), path, sorted(shape.get("properties", {}))))
    return found


def test_the_schemas_json_bodies_refuse_hostile_values(client: httpx.Client) -> None:
    operations = _json_operations(client)
    assert {path for _, path, _ in operations} >= {"/generate", "/batches",
                                                   "/v1/images/generations"}
    for method, path, names in operations:
        for name in names:
            for kind, raw in {**REFUSED, **ODD}.items():
                body = b'{"' + name.encode() + b'": ' + raw + b"}"
                response = client.request(method, path, content=body, headers=JSON)
                refused = 400 <= response.status_code < 500
                assert refused or (kind in ODD and response.status_code < 500), \
                    (path, name, kind, response.status_code, response.text[:300])
                response.json()  # always a JSON answer
    assert client.get("/health").status_code == 200
