"""Every bad request is a 4xx naming what is wrong; nothing is queued; never a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.limits import MAX_BODY_BYTES
from tests.api.helpers import README_BODY, data_url


def _count_jobs(client: TestClient) -> int:
    return len(client.get("/jobs", params={"limit": 100}).json()["jobs"])


@pytest.mark.parametrize(("extra", "field"), [
    ({"width": 100}, "width"),
    ({"width": 8192}, "width"),
    ({"height": "tall"}, "height"),
    ({"width": True}, "width"),
    ({"steps": 0}, "steps"),
    ({"steps": 151}, "steps"),
    ({"style": "No such style"}, "style"),
    ({"colors": ["red", "not-a-colour"]}, "colors"),
    ({"unknown_option": 1}, "unknown_option"),
    ({"seed": -1}, "seed"),
    ({"n": 17}, "n"),
    ({"guidance": "lots"}, "guidance"),
    ({"strength": 0.5}, "strength"),
    ({"output_format": "gif"}, "output_format"),
    ({"scheduler": "nope"}, "scheduler"),
    ({"model": ""}, "model"),
    ({"content": ""}, "content"),
    ({"input_type": "video"}, "input_type"),
    ({"input_type": "image", "image": "data:image/png;base64,bm90IGFuIGltYWdl"}, "image"),
    ({"input_type": "image", "image": "not base64 at all!"}, "image"),
    ({"input_type": "image"}, "image"),
    ({"image": data_url(b"x")}, "image"),
])
def test_bad_field_is_422_naming_it(offline: TestClient, extra: dict, field: str) -> None:
    response = offline.post("/generate", json={**README_BODY, **extra})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", field], detail
    assert detail[0]["msg"] and detail[0]["type"]
    assert _count_jobs(offline) == 0


def test_unknown_style_lists_the_valid_names(offline: TestClient) -> None:
    detail = offline.post("/generate", json={**README_BODY, "style": "nope"}).json()["detail"]
    assert "Impressionist" in detail[0]["msg"]
    assert "Impressionist" in detail[0]["ctx"]["choices"]


@pytest.mark.parametrize(("content", "content_type", "status"), [
    (b'{"input_type": "text", "content": ', "application/json", 422),
    (b"\xff\xfe\xfa", "application/json", 422),
    (b"[1, 2]", "application/json", 422),
    (b"", "application/json", 422),
    (b"content=hi", "text/plain", 415),
])
def test_malformed_bodies(offline: TestClient, content: bytes, content_type: str,
                          status: int) -> None:
    response = offline.post("/generate", content=content, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text


def test_oversize_body_is_413(offline: TestClient) -> None:
    response = offline.post("/generate", content=b" " * (MAX_BODY_BYTES + 1),
                            headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_oversize_body_without_length_is_413(offline: TestClient) -> None:
    def chunks():
        for _ in range(MAX_BODY_BYTES // (4 << 20) + 2):
            yield b" " * (4 << 20)

    response = offline.post("/generate", content=chunks(),
                            headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_unknown_job_is_404(offline: TestClient) -> None:
    for method, path in [("GET", "/jobs/nope"), ("POST", "/jobs/nope/cancel"),
                         ("GET", "/jobs/nope/events")]:
        response = offline.request(method, path)
        assert response.status_code == 404, path
        assert response.json()["detail"] == "job not found"


def test_bad_list_parameters_are_422(offline: TestClient) -> None:
    assert offline.get("/jobs", params={"cursor": "garbage!"}).json()["detail"][0]["loc"] == [
        "query", "cursor"]
    assert offline.get("/jobs", params={"status": "done"}).status_code == 422
    assert offline.get("/jobs", params={"limit": 0}).status_code == 422


def test_unexpected_errors_are_a_bare_500(offline: TestClient) -> None:
    class Broken:
        def get(self, name: str) -> None:
            raise RuntimeError("/secret/internal/path exploded")

    offline.app.state.styles = Broken()  # type: ignore[attr-defined]
    client = TestClient(offline.app, raise_server_exceptions=False)
    response = client.post("/generate", json={**README_BODY, "style": "Noir"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
