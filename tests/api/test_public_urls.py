"""Image URLs, links and Location are built from trusted settings, never from a client's Host
header: SPEC2FRACTAL_PUBLIC_URL, required beyond loopback; on loopback without it, a
loopback Host, or the address the connection came in on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.app import create_app
from tests.api.conftest import env_for
from tests.api.helpers import README_BODY, SMALL
from workers.settings import Settings

EVIL = {"Host": "evil.example"}


def _all_links(body: dict) -> list[str]:
    links = list(body.get("links", {}).values())
    links += [output["url"] for output in body.get("outputs", [])]
    links += [output["record_url"] for output in body.get("outputs", [])
              if output.get("record_url")]
    return links


def test_a_client_naming_another_host_gets_links_to_this_server(served: str) -> None:
    """The reproduction: with PUBLIC_URL unset, URLs were built from the Host header, so
    the server signed image URLs pointing at any host the client named."""
    with httpx.Client(base_url=served, timeout=30, headers=EVIL) as client:
        made = client.post("/generate", json={**README_BODY, **SMALL})
        assert made.status_code == 200, made.text
        assert made.json()["image_url"].startswith(served + "/files/")
        head = httpx.head(made.json()["image_url"], timeout=10)  # through uvicorn
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == "image/png"
        assert int(head.headers["content-length"]) > 0
        job_id = made.json()["job_id"]
        job = client.get(f"/jobs/{job_id}").json()
        links = _all_links(job)
        assert links and all(link.startswith(served + "/") for link in links), links
        queued = client.post("/generate", json={**README_BODY, **SMALL},
                             headers={"Prefer": "respond-async"})
        assert queued.headers["Location"].startswith(served + "/jobs/")
        batch = client.post("/batches", json={"items": [{**README_BODY, **SMALL}]})
        assert batch.headers["Location"].startswith(served + "/batches/")
        assert all(link.startswith(served + "/") for link in batch.json()["links"].values())
        assert "evil.example" not in client.get("/jobs").text
    # A loopback name is this machine: the dashboard at localhost keeps its own origin.
    port = served.rsplit(":", 1)[1]
    named = httpx.get(f"{served}/jobs/{job_id}", headers={"Host": f"localhost:{port}"},
                      timeout=10).json()
    assert all(link.startswith(f"http://localhost:{port}/") for link in _all_links(named))


def test_public_url_is_the_base_of_every_link(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, public_url="https://images.example.com/s2f/")
    assert settings.public_url == "https://images.example.com/s2f"
    with TestClient(create_app(settings, start_worker=False)) as client:
        made = client.post("/generate", json={**README_BODY, **SMALL},
                           headers={"Prefer": "respond-async", **EVIL})
        assert made.headers["Location"] == \
            f"https://images.example.com/s2f/jobs/{made.json()['id']}"
        assert all(link.startswith("https://images.example.com/s2f/jobs/")
                   for link in made.json()["links"].values())


@pytest.mark.parametrize("url", ["javascript:alert(1)", "images.example.com",
                                 "https://images.example.com/?next=x", "ftp://h/",
                                 "https://user:pw@images.example.com"])
def test_public_url_must_be_a_plain_http_url(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValidationError, match="public_url"):
        Settings(data_dir=tmp_path, public_url=url)


def test_beyond_loopback_public_url_is_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SPEC2FRACTAL_PUBLIC_URL"):
        create_app(Settings(data_dir=tmp_path, host="0.0.0.0"), start_worker=False)
    refused = subprocess.run(
        [sys.executable, "-m", "spec2fractal.cli", "serve", "--host", "0.0.0.0", "--port",
         "1"], env=env_for(tmp_path), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "SPEC2FRACTAL_PUBLIC_URL" in refused.stderr and "Traceback" not in refused.stderr
