"""``spec2fractal serve --workers N``: several embedded worker processes on one job table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import env_for, free_port, stop, wait_ready
from tests.api.helpers import README_BODY, wait_status
from workers.cpu_share import worker_count, worker_threads
from workers.settings import Settings

# The built-in engine at this size takes a second or more: long enough to catch mid-render.
SLOW = {**README_BODY, "width": 1024, "height": 1024, "n": 4}
ENDED = {"succeeded", "failed", "cancelled"}


@contextmanager
def served_with_workers(data_dir: Path, workers: int) -> Iterator[tuple[str, int]]:
    """``serve(workers=N)`` as its own process; its URL and pid. Co-rendering off, so each
    job is one worker's."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", f"from api.cli import serve; serve(port={port}, "
                               f"workers={workers})"],
        env=env_for(data_dir, SPEC2FRACTAL_SYNC_TIMEOUT="60", SPEC2FRACTAL_MAX_CORENDER_SIZE="1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        yield base, server.pid
    finally:
        stop(server)


def worker_pids(server_pid: int) -> dict[int, int]:
    """slot → pid of the server's embedded workers (from their command lines)."""
    found = {}
    for pid in subprocess.run(["pgrep", "-P", str(server_pid)], capture_output=True,
                              text=True).stdout.split():
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"workers.embedded_worker" in command:
            found[int(command[command.index(b"--slot") + 1])] = int(pid)
    return found


def held(data_dir: Path, slot: int) -> list[str]:
    try:
        return json.loads((data_dir / "workers" / f"held-{slot}.json").read_text())
    except (OSError, ValueError):
        return []


def submit(base: str, seed: int) -> str:
    response = httpx.post(base + "/generate", headers={"Prefer": "respond-async"}, timeout=10,
                          json={**SLOW, "seed": seed})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def get_job(base: str, job_id: str) -> dict:
    return wait_status(lambda path: httpx.get(base + path, timeout=5), job_id, ENDED,
                       timeout=120)


def test_two_workers_serve_render_and_both_take_jobs(tmp_path: Path) -> None:
    with served_with_workers(tmp_path, 2) as (base, server_pid):
        assert sorted(worker_pids(server_pid)) == [0, 1]
        ready = httpx.get(base + "/ready", timeout=5).json()
        assert ready["checks"]["worker"] == "ok"
        response = httpx.post(base + "/generate", timeout=60,
                              json={**README_BODY, "width": 64, "height": 64})
        assert response.status_code == 200 and response.json()["status"] == "success"
        jobs = [submit(base, seed) for seed in range(4)]
        both, deadline = False, time.monotonic() + 60
        while not both and time.monotonic() < deadline:
            both = bool(held(tmp_path, 0)) and bool(held(tmp_path, 1))  # rendering side by side
            time.sleep(0.02)
        assert both, "the two workers never held jobs at the same time"
        assert all(get_job(base, job)["status"] == "succeeded" for job in jobs)
        assert held(tmp_path, 0) == held(tmp_path, 1) == []


def test_a_killed_workers_job_is_queued_again_and_the_others_run_on(tmp_path: Path) -> None:
    with served_with_workers(tmp_path, 2) as (base, server_pid):
        pids = worker_pids(server_pid)
        jobs = [submit(base, seed) for seed in range(2)]
        deadline = time.monotonic() + 60
        while not (held(tmp_path, 0) and held(tmp_path, 1)):
            assert time.monotonic() < deadline, "the two jobs never ran side by side"
            time.sleep(0.02)
        [victim_job] = held(tmp_path, 0)
        [other_job] = held(tmp_path, 1)
        os.kill(pids[0], signal.SIGKILL)  # worker 0 dies mid-render
        victim, other = get_job(base, victim_job), get_job(base, other_job)
        assert victim["status"] == "succeeded" and victim["attempts"] == 2, victim
        # The live worker's job was left alone: rendered once.
        assert other["status"] == "succeeded" and other["attempts"] == 1, other
        assert sorted(jobs) == sorted([victim_job, other_job])
        restarted = worker_pids(server_pid)
        assert sorted(restarted) == [0, 1] and restarted[0] != pids[0]
        assert restarted[1] == pids[1]


@pytest.mark.parametrize("value", ["0", "-1", "65", "abc", "NaN", "Infinity", "1.5", "",
                                   "\udcff", "9" * 400])
def test_bad_workers_values_are_refused_naming_the_option(value: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spec2fractal.cli", "serve", "--workers", value],
        env={**env_for(tmp_path), "PYTHONIOENCODING": "utf-8:surrogateescape"},
        capture_output=True, text=True, errors="replace", timeout=60)
    assert result.returncode != 0
    assert "--workers" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_workers_with_a_broker_is_refused_naming_the_option(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spec2fractal.cli", "serve", "--workers", "2"],
        env=env_for(tmp_path, SPEC2FRACTAL_BROKER_URL="redis://127.0.0.1:1/0"),
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "--workers" in result.stderr and "broker" in result.stderr, result.stderr


def test_the_default_shares_the_cores_and_a_gpu_keeps_one(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    cpu = Settings(device="cpu")
    assert worker_count(cpu) == 4 and worker_threads(cpu, 4) == 2
    assert worker_count(Settings(device="cuda:0")) == 1
    assert worker_threads(Settings(device="cuda:0"), 1) is None  # torch's own choice
    chosen = Settings(device="cpu", embedded_workers=3, worker_threads=5)
    assert worker_count(chosen) == 3 and worker_threads(chosen, 3) == 5
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert worker_count(cpu) == 1
