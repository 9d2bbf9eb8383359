"""Through a real uvicorn process started by ``api.cli.serve`` (embedded worker included)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx

from tests.api.helpers import README_BODY, decode, wait_status

SLOW = {**README_BODY, "width": 1024, "height": 1024, "n": 8, "seed": 5}


def test_readme_body_over_http_and_the_image_downloads(served: str) -> None:
    with httpx.Client(base_url=served, timeout=30) as client:
        response = client.post("/generate", json={**README_BODY, "width": 192, "height": 128})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success"
        assert body["image_url"].startswith(served + "/files/")
        image = httpx.get(body["image_url"], timeout=10)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert decode(image.content).size == (192, 128)
        ready = client.get("/ready").json()
        assert ready["checks"]["worker"] == "ok"


def test_respond_async_then_poll_until_succeeded(served: str) -> None:
    with httpx.Client(base_url=served, timeout=30) as client:
        response = client.post("/generate", json={**README_BODY, "width": 64, "height": 64},
                               headers={"Prefer": "respond-async"})
        assert response.status_code == 202
        location = response.headers["location"]
        assert location.startswith(served + "/jobs/")
        job = wait_status(lambda path: client.get(location), "", {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        assert decode(client.get(job["outputs"][0]["url"]).content).size == (64, 64)


def test_cancel_a_running_job_after_its_first_progress(served: str) -> None:
    with httpx.Client(base_url=served, timeout=30) as client:
        job = client.post("/generate", json=SLOW, headers={"Prefer": "respond-async"}).json()
        seen = []
        started = time.monotonic()
        with client.stream("GET", f"/jobs/{job['id']}/events") as stream:
            name = None
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                    seen.append(name)
                    if name == "progress" and "cancel" not in seen:
                        seen.append("cancel")
                        cancel = client.post(f"/jobs/{job['id']}/cancel")
                        assert cancel.status_code == 202, cancel.text
                        assert cancel.json()["cancel_requested"]
                elif line.startswith("data:") and name == "cancelled":
                    final = json.loads(line[5:])
        assert seen[:3] == ["queued", "started", "progress"]
        assert seen[-1] == "cancelled", seen
        assert final["status"] == "cancelled" and final["outputs"] == []
        assert final["progress"]["step"] < final["progress"]["total"]
        assert time.monotonic() - started < 20
        assert client.post(f"/jobs/{job['id']}/cancel").status_code == 200


def test_metrics_after_renders(served: str) -> None:
    text = httpx.get(served + "/metrics", timeout=10).text
    assert "spec2fractal_images_rendered_total" in text
    assert "spec2fractal_job_duration_seconds_bucket" in text
    assert "spec2fractal_jobs_running" in text


def test_a_job_orphaned_by_a_dead_server_runs_when_it_starts_again(tmp_path) -> None:
    """Embedded: the queue hands a task out before it runs, so a job whose server (and
    worker) died mid-render must be queued again by the next server, not left running."""
    import subprocess
    import sys

    from tests.api.conftest import WORKER_READY_SECONDS, env_for, free_port, stop
    from workers.db import JobStatus, get_database
    from workers.db import jobs as job_store

    database = get_database(f"sqlite:///{tmp_path / 'spec2fractal.db'}")
    database.migrate()
    with database.session() as session:
        job = job_store.create_job(session, job_id=job_store.new_job_id(), model="fractal",
                                   request={"prompt": "a lake", "width": 64, "height": 64,
                                            "seed": 1})
        job_store.start_job(session, job.id)  # claimed by a worker that then died
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c",
                                f"from api.cli import serve; serve(port={port})"],
                               env=env_for(tmp_path), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + WORKER_READY_SECONDS
        while True:
            with database.session() as session:
                current = job_store.get_job(session, job.id)
            if current.status == JobStatus.SUCCEEDED:
                break
            assert process.poll() is None
            assert time.monotonic() < deadline, current.status
            time.sleep(0.1)
        assert current.attempts == 2 and current.outputs
    finally:
        stop(process)


def test_a_crashed_embedded_worker_is_restarted_and_its_job_finishes(tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.api.conftest import env_for, free_port, stop, wait_ready

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c",
                               f"from api.cli import serve; serve(port={port})"],
                              env=env_for(tmp_path, SPEC2FRACTAL_SYNC_TIMEOUT="60"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        job = httpx.post(base + "/generate", headers={"Prefer": "respond-async"}, timeout=10,
                         json={**SLOW, "n": 4}).json()
        while httpx.get(f"{base}/jobs/{job['id']}", timeout=5).json()["status"] != "running":
            time.sleep(0.02)
        children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert children, "the embedded worker is a child of the server"
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)  # the worker dies mid-render
        final = wait_status(lambda path: httpx.get(f"{base}/jobs/{job['id']}", timeout=5), "",
                            {"succeeded", "failed", "cancelled"}, timeout=120)
        assert final["status"] == "succeeded", final
        assert final["attempts"] == 2
    finally:
        stop(server)


def test_a_term_signal_stops_the_server_and_its_idle_worker_within_seconds(tmp_path) -> None:
    """``docker stop`` signals only the server (PID 1): its workers must stop with it, by
    itself, well inside the 5 s grace after which it would be killed."""
    import signal
    import subprocess

    from tests.api_server import serving

    with serving(tmp_path) as api:
        workers = subprocess.run(["pgrep", "-P", str(api.pid)], capture_output=True,
                                 text=True).stdout.split()
        assert workers
        time.sleep(2.5)  # the worker is now waiting for messages, idle
        started = time.monotonic()
        api.process.send_signal(signal.SIGTERM)
        api.process.wait(timeout=15)
        took = time.monotonic() - started
        log = (tmp_path / "server.log").read_text()
    assert took < 3, f"stopping took {took:.1f} s"
    assert "did not stop" not in log and "embedded worker stopped" in log
    for worker in workers:  # every one of them (the default starts one per core)
        assert subprocess.run(["ps", "-p", worker], capture_output=True).returncode == 1


def test_ready_waits_for_a_worker_that_has_loaded_the_default_model(tmp_path,
                                                                    tiny_sd) -> None:
    """Warm start: the embedded workers load the default model before their first job, and
    /ready answers 503 with the worker "warming" until one has."""
    from tests.api.conftest import env_for, free_port, stop, wait_ready
    from workers.db import Database
    from workers.db import presence as presence_store
    from workers.settings import Settings

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", f"from api.cli import serve; serve(port={port})"],
        env=env_for(tmp_path, SPEC2FRACTAL_MODEL=str(tiny_sd)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        waits = wait_ready(f"http://127.0.0.1:{port}", server, timeout=120)
        seen = {wait["checks"].get("worker") for wait in waits}
        assert seen <= {"warming"}, waits  # never "down" while it loads
        database = Database(Settings(data_dir=tmp_path).resolved_database_url)
        with database.session() as session:
            live = presence_store.live_workers(session, 30)
        assert any(worker.warm and str(tiny_sd) in worker.loaded for worker in live), live
    finally:
        stop(server)
