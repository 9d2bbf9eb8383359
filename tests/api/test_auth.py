"""API keys: the keys command, Bearer auth on every route but probes, and per-key scoping.
The key store's tests run on each job database (``database_url``: SQLite and PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from tests.api.auth_helpers import bearer, make_key, secured
from tests.api.conftest import env_for
from tests.api.helpers import README_BODY, SMALL
from workers.db import get_database
from workers.settings import Settings

ASYNC = {"Prefer": "respond-async"}


def run_keys(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``keys`` command on the database of ``settings``, configured as an operator
    would: through the environment."""
    env = env_for(settings.data_dir, SPEC2FRACTAL_DATABASE_URL=settings.resolved_database_url)
    return subprocess.run([sys.executable, "-m", "spec2fractal.cli", "keys", *args],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Keys required, on each job database."""
    return secured(tmp_path, database_url=database_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, start_worker=False)) as client:
        yield client


def test_keys_command_creates_lists_and_revokes(settings: Settings) -> None:
    created = run_keys(settings, "create", "--name", "alice")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("s2f_") and len(secret) > 40 and " " not in secret

    listed = run_keys(settings, "list")
    assert listed.returncode == 0 and "alice" in listed.stdout
    assert secret not in listed.stdout  # only its first characters
    assert secret[:12] in listed.stdout

    # Only a hash is stored: the key appears nowhere in the database file or its rows.
    database = get_database(settings.resolved_database_url)
    with database.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM api_keys")).all()
    assert len(rows) == 1 and all(secret not in str(value) for value in rows[0])

    with TestClient(create_app(settings, start_worker=False)) as client:
        assert client.get("/jobs", headers=bearer(secret)).status_code == 200
        revoked = run_keys(settings, "revoke", "alice")
        assert revoked.returncode == 0, revoked.stderr
        refused = client.get("/jobs", headers=bearer(secret))
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]

    again = run_keys(settings, "revoke", "alice")
    assert again.returncode == 2 and "no live key" in again.stderr
    assert "Traceback" not in again.stderr
    blank = run_keys(settings, "create", "--name", "  ")
    assert blank.returncode == 2 and "--name" in blank.stderr


def test_every_route_but_probes_needs_a_key(client: TestClient) -> None:
    for path in ("/jobs", "/batches", "/models", "/styles", "/metrics", "/docs",
                 "/openapi.json", "/jobs/nope", "/no/such/route"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in response.json()["detail"]
    assert client.post("/generate", json=README_BODY).status_code == 401
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code in (200, 503)  # open; no worker here


@pytest.mark.parametrize("header", ["Bearer s2f_not-a-key", "Basic dXNlcjpwYXNz", "Bearer",
                                    "s2f_bare", "Bearer " + "x" * 5000])
def test_bad_credentials_are_401(client: TestClient, header: str) -> None:
    response = client.get("/jobs", headers={"Authorization": header})
    assert response.status_code == 401
    assert "detail" in response.json()


def test_a_key_sees_only_its_own_jobs_and_batches(client: TestClient,
                                                  settings: Settings) -> None:
    alice, bob = bearer(make_key(settings, "alice")), bearer(make_key(settings, "bob"))
    made = client.post("/generate", json={**README_BODY, **SMALL}, headers={**alice, **ASYNC})
    assert made.status_code == 202
    job_id = made.json()["id"]
    batch = client.post("/batches", json={"items": [{"prompt": "a lake", **SMALL}]},
                        headers=alice)
    assert batch.status_code == 201
    batch_id = batch.json()["id"]

    assert client.get(f"/jobs/{job_id}", headers=alice).status_code == 200
    assert client.get(f"/batches/{batch_id}", headers=alice).status_code == 200
    assert job_id in [job["id"] for job in client.get("/jobs", headers=alice).json()["jobs"]]

    # To bob, alice's job and batch do not exist: the same 404 as a made-up id.
    for method, path in (("GET", f"/jobs/{job_id}"), ("POST", f"/jobs/{job_id}/cancel"),
                         ("GET", f"/jobs/{job_id}/events"), ("GET", f"/batches/{batch_id}"),
                         ("GET", f"/batches/{batch_id}/results"),
                         ("POST", f"/batches/{batch_id}/cancel")):
        response = client.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path)
        made_up = client.request(method, path.replace(job_id, "0" * 32)
                                 .replace(batch_id, "0" * 32), headers=bob)
        assert made_up.status_code == 404
        assert response.json()["detail"] == made_up.json()["detail"]
    assert client.get("/jobs", headers=bob).json()["jobs"] == []
    assert client.get("/batches", headers=bob).json()["batches"] == []
    # ... and bob's cancel did not touch it.
    assert client.get(f"/jobs/{job_id}", headers=alice).json()["status"] == "queued"


def test_metrics_need_an_operator_key(client: TestClient, settings: Settings) -> None:
    """The reproduction: /metrics showed every tenant's queue and job counts to any key."""
    tenant = bearer(make_key(settings, "tenant"))
    assert client.post("/generate", json={**README_BODY, **SMALL},
                       headers={**tenant, **ASYNC}).status_code == 202
    refused = client.get("/metrics", headers=tenant)
    assert refused.status_code == 403
    assert "--admin" in refused.json()["detail"]
    assert "spec2fractal_queue_depth" not in refused.text
    assert client.get("/metrics").status_code == 401

    created = run_keys(settings, "create", "--name", "prometheus", "--admin")
    assert created.returncode == 0, created.stderr
    assert "operator key" in created.stdout
    operator = bearer(created.stdout.strip().splitlines()[-1])
    scraped = client.get("/metrics", headers=operator)
    assert scraped.status_code == 200
    assert "spec2fractal_queue_depth 1.0" in scraped.text
    listed = run_keys(settings, "list").stdout.splitlines()
    roles = {line.split()[-1]: line.split()[-2] for line in listed[1:]}
    assert roles == {"tenant": "-", "prometheus": "operator"}


def test_auth_is_on_by_default_beyond_localhost(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).auth_required is False  # 127.0.0.1
    assert Settings(data_dir=tmp_path, host="localhost").auth_required is False
    assert Settings(data_dir=tmp_path, host="::1").auth_required is False
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"):
        assert Settings(data_dir=tmp_path, host=host).auth_required is True, host
    assert Settings(data_dir=tmp_path, host="0.0.0.0", auth="off").auth_required is False
    with TestClient(create_app(Settings(data_dir=tmp_path, host="0.0.0.0",
                                        public_url="http://api.example"),
                               start_worker=False)) as client:
        assert client.get("/jobs").status_code == 401


def test_serve_auth_flag_requires_keys_on_localhost(tmp_path: Path) -> None:
    import httpx

    from tests.services import free_port, wait_for

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "spec2fractal.cli", "serve", "--port", str(port), "--auth"],
        env=env_for(tmp_path, SPEC2FRACTAL_BROKER_URL="redis://127.0.0.1:1/0"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(base + "/health", timeout=1).status_code == 200,
                 timeout=30, what="the server")
        assert httpx.get(base + "/jobs").status_code == 401
        key = make_key(Settings(data_dir=tmp_path), "ops")
        assert httpx.get(base + "/jobs", headers=bearer(key)).status_code == 200
    finally:
        process.terminate()
        process.wait(15)
