"""Per-key rate limits (in memory, and shared through Redis), per-key job quotas, CORS."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from tests.api.auth_helpers import bearer, make_key, secured
from tests.api.helpers import README_BODY, SMALL
from tests.services import RedisServer

ASYNC = {"Prefer": "respond-async"}


def test_rate_limit_is_per_key_with_retry_after(tmp_path: Path) -> None:
    settings = secured(tmp_path, rate_limit="3/minute")
    alice, bob = bearer(make_key(settings, "alice")), bearer(make_key(settings, "bob"))
    with TestClient(create_app(settings, start_worker=False)) as client:
        assert [client.get("/jobs", headers=alice).status_code for _ in range(3)] == [200] * 3
        refused = client.get("/jobs", headers=alice)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "3 per 1 minute" in refused.json()["detail"]
        assert client.get("/jobs", headers=bob).status_code == 200  # bob has his own count
        assert client.get("/health").status_code == 200  # probes are never limited


def test_rate_limit_counts_across_api_replicas_through_redis(tmp_path: Path,
                                                             redis_server: RedisServer) -> None:
    redis_server.client(db=7).flushdb()
    settings = secured(tmp_path, rate_limit="4/minute", broker_url=redis_server.url(7))
    alice = bearer(make_key(settings, "alice"))
    with (TestClient(create_app(settings, start_worker=False)) as one,
          TestClient(create_app(settings, start_worker=False)) as two):
        codes = [client.get("/jobs", headers=alice).status_code
                 for client in (one, two, one, two, one)]
    assert codes == [200, 200, 200, 200, 429]


def test_job_quota_per_key_is_429_and_queue_admission_is_503(tmp_path: Path) -> None:
    settings = secured(tmp_path, max_jobs_per_key=2, max_queued_jobs=3)
    alice, bob = bearer(make_key(settings, "alice")), bearer(make_key(settings, "bob"))
    body = {**README_BODY, **SMALL}
    with TestClient(create_app(settings, start_worker=False)) as client:
        for _ in range(2):
            assert client.post("/generate", json=body, headers={**alice, **ASYNC}
                               ).status_code == 202
        over = client.post("/generate", json=body, headers={**alice, **ASYNC})
        assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0
        assert "unfinished jobs" in over.json()["detail"]
        # Cancelling one frees a place in alice's quota.
        first = client.get("/jobs", headers=alice).json()["jobs"][0]["id"]
        client.post(f"/jobs/{first}/cancel", headers=alice)
        assert client.post("/generate", json=body, headers={**alice, **ASYNC}
                           ).status_code == 202
        # Bob has quota left, but the queue as a whole is full (3 queued): 503.
        assert client.post("/generate", json=body, headers={**bob, **ASYNC}
                           ).status_code == 202
        full = client.post("/generate", json=body, headers={**bob, **ASYNC})
        assert full.status_code == 503 and int(full.headers["Retry-After"]) > 0


def test_cors_allows_only_listed_origins(tmp_path: Path) -> None:
    settings = secured(tmp_path, cors_origins=["https://app.example"])
    key = bearer(make_key(settings, "web"))
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    with TestClient(create_app(settings, start_worker=False)) as client:
        allowed = client.options("/generate", headers={"Origin": "https://app.example",
                                                       **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options("/generate", headers={"Origin": "https://evil.example",
                                                     **preflight})
        assert "access-control-allow-origin" not in other.headers
        simple = client.get("/jobs", headers={"Origin": "https://app.example", **key})
        assert simple.headers["access-control-allow-origin"] == "https://app.example"
    with TestClient(create_app(secured(tmp_path), start_worker=False)) as client:
        closed = client.options("/generate", headers={"Origin": "https://app.example",
                                                      **preflight})
        assert "access-control-allow-origin" not in closed.headers
