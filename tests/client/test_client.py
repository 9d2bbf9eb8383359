"""``Spec2FractalClient`` and ``AsyncSpec2FractalClient`` against the real running service."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time

import pytest
from PIL import Image

from fractal import read_record
from spec2fractal.client import (
    APIConnectionError,
    AsyncSpec2FractalClient,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    RateLimitError,
    ServiceUnavailableError,
    Spec2FractalClient,
    UnprocessableEntityError,
    ValidationError,
)
from spec2fractal.client.types import JobEvent
from tests.client.conftest import Flaky, Server

SMALL = {"width": 96, "height": 64}


@pytest.fixture(scope="module")
def client(service: Server) -> Spec2FractalClient:
    with Spec2FractalClient(service.url, api_key=service.key, timeout=60) as made:
        yield made


def test_importing_the_client_loads_no_server_code() -> None:
    code = ("import sys, spec2fractal.client; "
            "heavy = {'torch', 'diffusers', 'fastapi', 'celery', 'starlette', 'sqlalchemy'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_the_key_comes_from_the_environment(service: Server, monkeypatch) -> None:
    monkeypatch.setenv("SPEC2FRACTAL_API_KEY", service.key)
    with Spec2FractalClient(service.url) as from_env:
        assert from_env.jobs.list(limit=1).jobs is not None
    monkeypatch.delenv("SPEC2FRACTAL_API_KEY")
    with Spec2FractalClient(service.url) as keyless, pytest.raises(AuthenticationError):
        keyless.jobs.list()


def test_generate_several_and_download(client: Spec2FractalClient, tmp_path) -> None:
    result = client.images.generate("a lighthouse at dusk", n=3, seed=7, **SMALL)
    assert result.job.status == "succeeded"
    assert len(result.urls) == 3 and result.seeds == [7, 8, 9]
    images = result.images()
    assert [image.size for image in images] == [(96, 64)] * 3
    record = read_record(images[1])
    assert record is not None and record.seed == 8 and record.user_prompt == \
        "a lighthouse at dusk"
    paths = result.save(tmp_path)
    assert [path.name for path in paths] == [f"{result.job_id}-{i}.png" for i in range(3)]
    # saved as downloaded: the record is still in the file
    assert read_record(Image.open(paths[0])).seed == 7  # type: ignore[union-attr]


def test_generate_from_an_image_file(client: Spec2FractalClient) -> None:
    source = Image.new("RGB", (80, 48), (200, 30, 30))
    result = client.images.generate("in watercolor", image=source, strength=0.5)
    image = result.images()[0]
    assert image.size == (80, 48)
    assert read_record(image).input_type == "hybrid"  # type: ignore[union-attr]


def test_jobs_get_list_cancel(client: Spec2FractalClient, quiet: Server) -> None:
    done = client.images.generate("a quiet bay", **SMALL)
    job = client.jobs.get(done.job_id)
    assert job.status == "succeeded" and job.outputs[0].width == 96
    listed = client.jobs.list(status="succeeded", limit=100)
    assert done.job_id in {item.id for item in listed.jobs}
    with pytest.raises(ConflictError):
        client.jobs.cancel(done.job_id)  # it has already succeeded
    with pytest.raises(NotFoundError):
        client.jobs.get("no-such-job")
    # a queued job (no worker on the quiet server) is cancelled at once
    with Spec2FractalClient(quiet.url, quiet.keys["d"], max_retries=0) as waiting:
        pending = waiting.images.generate("never rendered", wait=False, **SMALL)
        assert pending.job.status == "queued" and pending.urls == []
        cancelled = waiting.jobs.cancel(pending.job_id)
        assert cancelled.status == "cancelled"


def test_stream_progress_events(client: Spec2FractalClient) -> None:
    pending = client.images.generate("a slow nebula", wait=False, n=2, width=768, height=768)
    events: list[JobEvent] = list(client.jobs.stream(pending.job_id))
    kinds = [event.type for event in events]
    assert kinds[0] == "queued" and kinds[-1] == "succeeded"
    progress = [event for event in events if event.type == "progress"]
    assert len(progress) >= 2, kinds
    steps = [event.step for event in progress]
    assert steps == sorted(steps) and all(event.total == 20 for event in progress)
    final = events[-1].job
    assert final is not None and final.status == "succeeded" and len(final.outputs) == 2


def test_batches_create_get_results(client: Spec2FractalClient) -> None:
    batch = client.batches.create(template={"width": 64, "height": 64, "seed": 3},
                                  grid={"prompt": ["a red fox", "a blue whale"]},
                                  name="client test")
    assert batch.total == 2 and batch.name == "client test"
    finished = client.batches.wait(batch.id, timeout=60)
    assert finished.status == "finished" and finished.counts.succeeded == 2
    assert client.batches.get(batch.id).id == batch.id
    results = client.batches.results(batch.id)
    assert [result.index for result in results] == [0, 1]
    assert [result.parameters["prompt"] for result in results] == ["a red fox", "a blue whale"]
    assert all(result.status == "succeeded" and len(result.urls) == 1 for result in results)
    assert batch.id in {item.id for item in client.batches.list().batches}


def test_errors_map_to_exceptions(service: Server, quiet: Server) -> None:
    with Spec2FractalClient(service.url, api_key="wrong", max_retries=0) as wrong, \
            pytest.raises(AuthenticationError) as caught:
        wrong.images.generate("a cat")
    assert caught.value.status_code == 401

    with Spec2FractalClient(service.url, api_key=service.key) as client, \
            pytest.raises(ValidationError) as invalid:
        client.images.generate("a cat", width=100, height=64)
    assert isinstance(invalid.value, UnprocessableEntityError)
    assert invalid.value.loc == ["body", "width"] and invalid.value.field == "width"
    assert "multiple of 8" in invalid.value.message

    # One unfinished job per key on the quiet server: the second is a 429.
    first = Spec2FractalClient(quiet.url, quiet.keys["a"], max_retries=0)
    second = Spec2FractalClient(quiet.url, quiet.keys["b"], max_retries=0)
    held = [first.images.generate("one", wait=False, **SMALL)]
    try:
        with pytest.raises(RateLimitError) as limited:
            first.images.generate("two", wait=False, **SMALL)
        assert limited.value.status_code == 429 and limited.value.retry_after == 5
        # Two queued jobs fill its queue: the next key's job is a 503.
        held.append(second.images.generate("three", wait=False, **SMALL))
        with Spec2FractalClient(quiet.url, quiet.keys["c"], max_retries=0) as third, \
                pytest.raises(ServiceUnavailableError) as full:
            third.images.generate("four", wait=False, **SMALL)
        assert full.value.status_code == 503 and full.value.retry_after == 30
    finally:  # free the quiet server's queue for the other tests
        first.jobs.cancel(held[0].job_id)
        if len(held) > 1:
            second.jobs.cancel(held[1].job_id)
        first.close()
        second.close()

    with Spec2FractalClient("http://127.0.0.1:9", max_retries=1) as nowhere, \
            pytest.raises(APIConnectionError):
        nowhere.jobs.list()


def test_503_is_retried_after_retry_after_with_one_idempotency_key(
        flaky: Flaky, service: Server) -> None:
    flaky.refuse = 2
    started = time.monotonic()
    with Spec2FractalClient(flaky.url, api_key=service.key, max_retries=3) as client:
        result = client.images.generate("worth the wait", **SMALL)
    assert result.job.status == "succeeded"
    assert time.monotonic() - started >= 2.0  # Retry-After: 1, twice
    posts = [seen for seen in flaky.seen if seen[0] == "POST"]
    assert len(posts) == 3 and len({key for _, _, key in posts}) == 1 and posts[0][2]
    # and without retries left, the 503 is raised
    flaky.refuse = 1
    with Spec2FractalClient(flaky.url, api_key=service.key, max_retries=0) as client, \
            pytest.raises(ServiceUnavailableError) as caught:
        client.jobs.list()
    assert caught.value.retry_after == 1


def test_async_client(service: Server, quiet: Server) -> None:
    async def scenario() -> None:
        async with AsyncSpec2FractalClient(service.url, api_key=service.key) as client:
            result = await client.images.generate("a quiet harbour", n=2, seed=11, **SMALL)
            images = await result.images()
            assert [read_record(image).seed for image in images] == [11, 12]  # type: ignore[union-attr]
            assert (await client.jobs.get(result.job_id)).status == "succeeded"
            assert result.job_id in {job.id for job in (await client.jobs.list(limit=50)).jobs}
            pending = await client.images.generate("an async nebula", wait=False, n=2,
                                                   width=768, height=768)
            kinds = [event.type async for event in client.jobs.stream(pending.job_id)]
            assert kinds[0] == "queued" and kinds[-1] == "succeeded" and "progress" in kinds
            batch = await client.batches.create([{"prompt": "one", **SMALL},
                                                 {"prompt": "two", **SMALL}])
            await client.batches.wait(batch.id, timeout=60)
            results = await client.batches.results(batch.id)
            assert [r.status for r in results] == ["succeeded", "succeeded"]
            assert (await client.batches.get(batch.id)).counts.succeeded == 2
            with pytest.raises(UnprocessableEntityError) as invalid:
                await client.images.generate("a cat", style="no such style")
            assert invalid.value.field == "style"
        async with AsyncSpec2FractalClient(quiet.url, quiet.keys["d"]) as waiting:
            queued = await waiting.images.generate("never", wait=False, **SMALL)
            assert (await waiting.jobs.cancel(queued.job_id)).status == "cancelled"
        async with AsyncSpec2FractalClient(service.url, api_key="wrong") as wrong:
            with pytest.raises(AuthenticationError):
                await wrong.jobs.list()

    asyncio.run(scenario())


def test_downloads_open_as_pil_with_metadata(client: Spec2FractalClient) -> None:
    data = client.images.generate("a tiny moon", **SMALL).download()[0]
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and "a tiny moon" in image.info["parameters"]
