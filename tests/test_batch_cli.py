"""`spec2fractal batch` as a user runs it: real processes, real files, a real server."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from fractal import read_record
from tests.api.conftest import served  # noqa: F401  (the `spec2fractal serve` fixture)

ENTRY_KEYS = {"index", "line", "hash", "status", "parameters", "model", "seeds", "files",
              "error", "duration", "finished_at"}


def batch_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "spec2fractal.cli", "batch", *args]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(batch_command(*args), capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def check_consistent(out: Path) -> list[dict[str, Any]]:
    """Every line complete; every file it names exists and decodes; no temp file left."""
    entries = manifest(out)
    for entry in entries:
        assert set(entry) == ENTRY_KEYS, entry
        assert entry["status"] in ("succeeded", "failed")
        if entry["status"] == "succeeded":
            assert entry["error"] is None and entry["files"]
            assert len(entry["files"]) == len(entry["seeds"]) == entry["parameters"]["n"]
            for name in entry["files"]:
                assert name.startswith(f"{entry['index']:05d}-{entry['hash'][:12]}")
                with Image.open(out / name) as image:
                    image.load()
        else:
            assert entry["error"] and entry["files"] == []
    assert not [path.name for path in out.iterdir() if path.name.endswith(".tmp")]
    return entries


def test_txt_csv_and_jsonl_render_locally(tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text(
        "# sunsets\na lake at sunrise\n\n   \n# more\na mountain in fog\n")
    (tmp_path / "grid.csv").write_text(
        "prompt,seed,width,height,style,colors,guidance,texture,n\n"
        '"a lake, at dawn",7,64,48,watercolor,"#ff0000 navy, teal",3,0.5,2\n'
        'a forest,,32,64,,"rgb(10, 20, 30) red",,,\n')
    (tmp_path / "requests.jsonl").write_text(
        '{"prompt": "a desert", "width": 64, "height": 64, "seed": 11, "lighting": "sunset"}\n'
        "\n"
        '{"content": "a glacier", "width": 48, "height": 32, "colors": ["navy"], "n": 1}\n')

    result = run("prompts.txt", "--out", "txt", "--size", "64x64", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 succeeded, 0 failed, 0 skipped" in result.stdout
    entries = check_consistent(tmp_path / "txt")
    assert [(e["index"], e["line"], e["parameters"]["prompt"]) for e in entries] == [
        (1, 2, "a lake at sunrise"), (2, 6, "a mountain in fog")]
    for entry in entries:  # no seed given: one derived from the item, and recorded
        image = Image.open(tmp_path / "txt" / entry["files"][0])
        assert image.size == (64, 64)
        assert read_record(image).seed == entry["seeds"][0] == entry["parameters"]["seed"]

    result = run("grid.csv", "-o", "csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first, second = sorted(check_consistent(tmp_path / "csv"), key=lambda e: e["index"])
    params = first["parameters"]
    assert params["seed"] == 7 and params["width"] == 64 and params["height"] == 48
    assert params["guidance"] == 3.0 and isinstance(params["guidance"], float)
    assert params["texture"] == 0.5 and params["n"] == 2 and params["style"] == "watercolor"
    assert params["colors"] == ["#ff0000", "navy", "teal"]
    assert params["prompt"] == "a lake, at dawn"
    assert first["seeds"] == [7, 8] and [name[-6:] for name in first["files"]] == [
        "-1.png", "-2.png"]
    record = read_record(Image.open(tmp_path / "csv" / first["files"][1]))
    assert record.seed == 8 and record.style == "Watercolor" and record.texture == 0.5
    assert second["parameters"]["colors"] == ["rgb(10, 20, 30)", "red"]
    assert second["parameters"]["seed"] is not None
    assert Image.open(tmp_path / "csv" / second["files"][0]).size == (32, 64)

    result = run("requests.jsonl", "-o", "jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    desert, glacier = check_consistent(tmp_path / "jsonl")
    assert desert["seeds"] == [11] and desert["parameters"]["lighting"] == "sunset"
    assert glacier["parameters"]["prompt"] == "a glacier" and glacier["line"] == 3
    assert Image.open(tmp_path / "jsonl" / glacier["files"][0]).size == (48, 32)

    # The same command again: nothing to do, nothing written.
    result = run("grid.csv", "-o", "csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "0 succeeded, 0 failed, 2 skipped" in result.stdout
    assert len(manifest(tmp_path / "csv")) == 2


def test_resumes_after_kill_9_and_after_reordering(tmp_path: Path) -> None:
    prompts = [f"scene {k}: a lake, mountains and a sky" for k in range(30)]
    (tmp_path / "many.txt").write_text("\n".join(prompts) + "\n")
    out = tmp_path / "out"
    args = ("many.txt", "--out", "out", "--size", "256x256")
    process = subprocess.Popen(batch_command(*args), cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    path = out / "manifest.jsonl"
    while not (path.exists() and path.read_bytes().count(b"\n") >= 3):
        assert process.poll() is None, "the batch ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    lines = path.read_bytes().splitlines()
    assert 3 <= len(lines) < 30, "the kill came too late to test a resume"

    started = time.monotonic()
    result = run(*args, cwd=tmp_path)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert f"{30 - len(lines)} succeeded" in result.stdout or len(lines) == 0
    entries = check_consistent(out)
    succeeded = [entry["hash"] for entry in entries if entry["status"] == "succeeded"]
    assert len(succeeded) == len(set(succeeded)) == 30  # each item exactly once
    assert len(list(out.glob("*.png"))) == 30
    assert sorted(path.name for path in out.iterdir()) == sorted(
        [*(name for entry in entries for name in entry["files"]), "manifest.jsonl"])

    # Reordered: the same items by their hashes, so there is nothing left to do.
    (tmp_path / "many.txt").write_text("\n".join(reversed(prompts)) + "\n")
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "0 succeeded, 0 failed, 30 skipped" in result.stdout
    assert len(manifest(out)) == 30
    print(f"resume run: {took:.1f} s")


def _as_in_a_terminal() -> None:
    # A shell starts background jobs with Ctrl-C ignored, and Python keeps an ignored SIGINT
    # ignored: run from such a job (`.ci/run &`), the CLI would never see the test's Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_cleanly_with_exit_130(tmp_path: Path) -> None:
    (tmp_path / "many.txt").write_text(
        "".join(f"scene {k}: a forest by a river\n" for k in range(30)))
    out = tmp_path / "out"
    process = subprocess.Popen(batch_command("many.txt", "-o", "out", "--size", "256x256"),
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=_as_in_a_terminal)
    path = out / "manifest.jsonl"
    deadline = time.monotonic() + 60
    while not (path.exists() and path.read_bytes().count(b"\n") >= 2):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    entries = check_consistent(out)
    assert 2 <= len(entries) < 30 and f"{len(entries)} succeeded" in stdout
    assert len(list(out.glob("*.png"))) == len(entries)


def test_a_bad_item_fails_alone_and_is_retried(tmp_path: Path) -> None:
    (tmp_path / "items.jsonl").write_text(
        '{"prompt": "a lake", "width": 64, "height": 64}\n'
        '{"prompt": "too wide", "width": 100, "height": 64}\n'
        "{not json\n"
        '{"prompt": "a hill", "width": 64, "height": 64, "n": 2}\n')
    result = run("items.jsonl", "-o", "out", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "2 succeeded, 2 failed, 0 skipped" in result.stdout
    assert "item 2 (line 2): `width` must be a positive multiple of 8 (got 100)" in (
        result.stderr)
    entries = {entry["line"]: entry for entry in check_consistent(tmp_path / "out")}
    assert entries[2]["status"] == "failed" and "`width`" in entries[2]["error"]
    assert entries[3]["status"] == "failed" and "not valid JSON" in entries[3]["error"]
    assert entries[1]["status"] == entries[4]["status"] == "succeeded"
    assert len(list((tmp_path / "out").glob("*.png"))) == 3

    result = run("items.jsonl", "-o", "out", cwd=tmp_path)  # failures again, the rest kept
    assert result.returncode == 1
    assert "0 succeeded, 2 failed, 2 skipped" in result.stdout
    assert len(manifest(tmp_path / "out")) == 6


@pytest.mark.parametrize(("args", "message"), [
    (["missing.txt", "-o", "out"], "error: missing.txt: no such file"),
    (["prompts.doc", "-o", "out"], "error: `FILE` must end in .txt, .csv or .jsonl"),
    (["bad.csv", "-o", "out"], "error: bad.csv: column `sed` is not a generation option"),
    (["prompts.txt", "-o", "out", "--server", "http://127.0.0.1:9"],
     "error: cannot reach the server at http://127.0.0.1:9"),
])
def test_bad_arguments_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "prompts.txt").write_text("a lake\n")
    (tmp_path / "prompts.doc").write_text("a lake\n")
    (tmp_path / "bad.csv").write_text("prompt,sed\na lake,3\n")
    result = run(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out" / "manifest.jsonl").exists() or not manifest(tmp_path / "out")


def test_through_the_service(tmp_path: Path, served: str) -> None:  # noqa: F811
    (tmp_path / "prompts.txt").write_text("a lake\na mountain\n# skipped\na forest\n")
    result = run("prompts.txt", "-o", "out", "--size", "64x48", "--server", served,
                 "--concurrency", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "3 succeeded, 0 failed, 0 skipped" in result.stdout
    entries = check_consistent(tmp_path / "out")
    assert len(entries) == 3
    for entry in entries:
        assert entry["model"] == "fractal"
        image = Image.open(tmp_path / "out" / entry["files"][0])
        assert image.size == (64, 48) and image.format == "PNG"
        assert read_record(image).seed == entry["seeds"][0] == entry["parameters"]["seed"]
    # The same items rendered locally have the same hashes (same model): nothing to redo.
    result = run("prompts.txt", "-o", "out", "--size", "64x48", cwd=tmp_path)
    assert "0 succeeded, 0 failed, 3 skipped" in result.stdout, result.stderr


def test_busy_server_is_retried_honouring_retry_after() -> None:
    """503/429 with Retry-After and a dropped connection, then the job: retried, not failed."""
    from fractal import GenerationRequest
    from spec2fractal.batch.items import Item
    from spec2fractal.batch.service import ServiceRenderer

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    calls: list[str] = []
    answers = iter(["drop", 503, 429, "job"])
    # The fields every job answer of the API has (the client reads jobs as typed objects).
    job = {"id": "j1", "model": "fractal", "timings": {"created_at": "2025-01-01T00:00:00Z"}}

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.url.path == "/models":
            return httpx.Response(200, json={"default": "fractal", "models": []})
        if request.url.path == "/generate":
            answer = next(answers)
            if answer == "drop":
                raise httpx.ConnectError("connection reset")
            if answer != "job":
                return httpx.Response(answer, headers={"Retry-After": "0"},
                                      json={"detail": "busy"})
            return httpx.Response(202, json={
                **job, "status": "queued",
                "links": {"self": "http://s/jobs/j1", "cancel": "http://s/jobs/j1/cancel"}})
        if request.url.path == "/jobs/j1":
            return httpx.Response(200, json={
                **job, "status": "succeeded", "links": {},
                "outputs": [{"index": 0, "url": "http://s/files/a.png", "seed": 5,
                             "width": 8, "height": 8, "format": "png"}]})
        return httpx.Response(200, content=buffer.getvalue())

    renderer = ServiceRenderer("http://s", None, 1, transport=httpx.MockTransport(handle))
    item = Item(1, 1, "0" * 64, GenerationRequest(prompt="x", seed=5))
    started = time.monotonic()
    outputs = renderer.render(item, 0, threading.Event())
    assert time.monotonic() - started < 5  # the first backoff is short; Retry-After: 0 is 0
    assert [output.seed for output in outputs] == [5]
    assert outputs[0].data == buffer.getvalue()
    assert calls.count("POST /generate") == 4


def test_a_lost_answer_to_a_post_makes_no_second_job_and_keys_are_sent(tmp_path: Path) -> None:
    """The real app behind a link that loses the answer to the first POST: the retry carries
    the same Idempotency-Key, so the server replays the job instead of making another."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from fractal import GenerationRequest
    from spec2fractal.batch.items import Item
    from spec2fractal.batch.manifest import BatchError
    from spec2fractal.batch.service import ServiceRenderer
    from tests.api.auth_helpers import make_key
    from workers.settings import Settings

    settings = Settings(data_dir=tmp_path, auth="required", sync_timeout=30)
    key = make_key(settings, "batch")
    with TestClient(create_app(settings, start_worker=True)) as client:
        real = client._transport
        lost: list[str] = []

        class LosesFirstAnswer(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                answer = real.handle_request(request)
                answer.read()
                if request.url.path == "/generate" and not lost:
                    lost.append(request.headers["Idempotency-Key"])
                    raise httpx.ReadError("connection reset after the request was sent")
                return httpx.Response(answer.status_code, headers=answer.headers,
                                      content=answer.content)

        with pytest.raises(BatchError, match="wants an API key"):
            ServiceRenderer("http://testserver", None, 1, transport=LosesFirstAnswer())
        renderer = ServiceRenderer("http://testserver", None, 1, api_key=key,
                                   transport=LosesFirstAnswer())
        item = Item(1, 1, "ab" * 32, GenerationRequest(prompt="a lake", seed=3, width=64,
                                                       height=48))
        outputs = renderer.render(item, 0, threading.Event())
        assert [output.seed for output in outputs] == [3]
        assert lost and lost[0].endswith("ab" * 32)
        jobs = client.get("/jobs", headers={"Authorization": f"Bearer {key}"}).json()["jobs"]
        assert len(jobs) == 1 and jobs[0]["status"] == "succeeded"


def test_jsonl_items_carry_references_locally_and_through_the_service(
        tmp_path: Path, served: str) -> None:  # noqa: F811
    import base64

    from fractal.references import pixel_hash

    buffer = io.BytesIO()
    style = Image.new("RGB", (24, 24), (180, 40, 200))
    style.save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    items = [{"prompt": "a lake", "style_image": url, "style_strength": 0.8},
             {"prompt": "a dune", "control": [{"type": "canny", "image": url, "end": 0.7}]}]
    (tmp_path / "refs.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    for out, server in (("local", []), ("served", ["--server", served])):
        result = run("refs.jsonl", "-o", out, "--size", "64x64", *server, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        entries = sorted(check_consistent(tmp_path / out), key=lambda entry: entry["index"])
        # The manifest names the references by hash, never by their data.
        assert "base64" not in (tmp_path / out / "manifest.jsonl").read_text()
        assert entries[0]["parameters"]["style_image"].startswith("sha256:")
        first = read_record(Image.open(tmp_path / out / entries[0]["files"][0]))
        second = read_record(Image.open(tmp_path / out / entries[1]["files"][0]))
        assert first.style_reference["sha256"] == pixel_hash(style)
        assert second.controls[0]["sha256"] == pixel_hash(style)
