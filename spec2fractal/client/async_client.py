"""``AsyncSpec2FractalClient``: the same client as ``Spec2FractalClient``, for asyncio."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from spec2fractal.client._core import (
    DEFAULT_MAX_RETRIES,
    ClientConfig,
    ImageInput,
    SSEDecoder,
    batch_body,
    check_finished,
    generate_request,
    idempotency_key,
    poll_interval,
    raise_error,
    retry_delay,
)
from spec2fractal.client.errors import APIConnectionError, APITimeoutError
from spec2fractal.client.results import AsyncImageResult
from spec2fractal.client.types import Batch, BatchItemResult, BatchPage, Job, JobEvent, JobPage

__all__ = ["AsyncSpec2FractalClient"]

T = TypeVar("T")


async def _wait(read: Callable[[], Awaitable[T]], done: Callable[[T], bool],
                describe: Callable[[T], str], timeout: float | None) -> T:
    """``await read()`` again, backing off, until ``done``; APITimeoutError after ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    interval: float | None = None
    while True:
        value = await read()
        if done(value):
            return value
        interval = poll_interval(interval)
        if deadline is not None and time.monotonic() + interval > deadline:
            raise APITimeoutError(f"{describe(value)} after {timeout} s")
        await asyncio.sleep(interval)


class AsyncSpec2FractalClient:
    """A Spec-2-Fractal server's API, for asyncio (``await client.images.generate(...)``).

    ``api_key`` defaults to ``$SPEC2FRACTAL_API_KEY``, ``base_url`` to
    ``$SPEC2FRACTAL_BASE_URL`` or http://127.0.0.1:8000. ``timeout`` is seconds for each
    answer; 429 and 503 answers and lost connections are retried ``max_retries`` times with
    exponential backoff and jitter, after the server's Retry-After when it sends one. Every
    POST carries an Idempotency-Key, so a retry never makes a second job.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | httpx.Timeout | None = None,
                 max_retries: int = DEFAULT_MAX_RETRIES,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self.config = ClientConfig.of(base_url, api_key, timeout, max_retries)
        self._http = http_client or httpx.AsyncClient(timeout=self.config.timeout,
                                                 follow_redirects=True)
        self.images = Images(self)
        self.jobs = Jobs(self)
        self.batches = Batches(self)

    @property
    def base_url(self) -> str:
        return self.config.base_url

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSpec2FractalClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, *, stream: bool = False,
                headers: Mapping[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """One call, retried as the class says; an error answer raises its APIError."""
        url = self.config.url(path)
        sent = {**self.config.headers_for(url), **(headers or {})}
        if method.upper() == "POST":
            sent.setdefault("Idempotency-Key", idempotency_key())
        attempt = 0
        while True:
            request = self._http.build_request(method, url, headers=sent, **kwargs)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                delay = retry_delay(attempt, self.config.max_retries, error=exc)
                if delay is None:
                    kind = APITimeoutError if isinstance(exc, httpx.TimeoutException) \
                        else APIConnectionError
                    raise kind(f"{method} {url}: {exc or type(exc).__name__}") from exc
            else:
                if response.status_code < 400:
                    return response
                delay = retry_delay(attempt, self.config.max_retries, response=response)
                if delay is None:
                    await response.aread()
                    await response.aclose()
                    raise_error(response)
                await response.aclose()
            attempt += 1
            await asyncio.sleep(delay)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self.request(method, path, **kwargs)).json()

    async def _fetch(self, url: str) -> bytes:
        return (await self.request("GET", url)).content


class Images:
    def __init__(self, client: AsyncSpec2FractalClient) -> None:
        self._client = client

    async def generate(self, prompt: str | None = None, *, image: ImageInput | None = None,
                 wait: bool = True, wait_timeout: float | None = None,
                 **options: Any) -> AsyncImageResult:
        """Render a prompt, an image, or both (``image``: PIL image, bytes or path).

        ``options`` are POST /generate's fields: ``n``, ``width``, ``height``, ``steps``,
        ``guidance``, ``seed``, ``style``, ``strength``, ``model``, ``output_format`` ...
        With ``wait`` (the default) the call returns once the images exist, raising
        JobFailedError or JobCancelledError if the job ends otherwise; else at once, with
        the job as it is (``client.jobs.wait`` finishes it).
        """
        headers = {"Prefer": "respond-async"}
        if wait and self._client.config.prefer_wait():
            headers = {"Prefer": str(self._client.config.prefer_wait())}
        answer = await self._client._json("POST", "/generate", headers=headers,
                                    **generate_request(prompt, image, options))
        job = Job.model_validate(answer["job"] if "job_id" in answer else answer)
        if wait and not job.finished:
            job = await self._client.jobs.wait(job.id, timeout=wait_timeout)
        if wait:
            check_finished(job)
        return AsyncImageResult(job=job).bind(self._client._fetch)



class Jobs:
    def __init__(self, client: AsyncSpec2FractalClient) -> None:
        self._client = client

    async def get(self, job_id: str) -> Job:
        return Job.model_validate(await self._client._json("GET", f"/jobs/{job_id}"))

    async def list(self, *, status: str | None = None, limit: int = 20,
             cursor: str | None = None) -> JobPage:
        params = {"limit": limit, "status": status, "cursor": cursor}
        return JobPage.model_validate(await self._client._json(
            "GET", "/jobs", params={k: v for k, v in params.items() if v is not None}))

    async def cancel(self, job_id: str) -> Job:
        return Job.model_validate(await self._client._json("POST", f"/jobs/{job_id}/cancel"))

    async def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job once it has finished (succeeded, failed or cancelled)."""
        return await _wait(lambda: self.get(job_id), lambda job: job.finished,
                           lambda job: f"job {job_id} still {job.status}", timeout)

    async def stream(self, job_id: str) -> AsyncIterator[JobEvent]:
        """The job's events as they happen (GET /jobs/{id}/events), ending with succeeded,
        failed or cancelled, whose ``job`` is the finished job."""
        response = await self._client.request("GET", f"/jobs/{job_id}/events", stream=True,
                                        headers={"Accept": "text/event-stream"})
        decoder = SSEDecoder()
        try:
            async for line in response.aiter_lines():
                event = decoder.feed(line)
                if event is not None:
                    yield event
                    if event.final:
                        return
        except httpx.TransportError as exc:
            raise APIConnectionError(f"the event stream of job {job_id} broke: {exc}") from exc
        finally:
            await response.aclose()


class Batches:
    def __init__(self, client: AsyncSpec2FractalClient) -> None:
        self._client = client

    async def create(self, items: Sequence[Mapping[str, Any]] | None = None, *,
               template: Mapping[str, Any] | None = None,
               grid: Mapping[str, Sequence[Any]] | None = None, name: str | None = None,
               output_format: str | None = None, webhook: str | None = None) -> Batch:
        """Queue many renders: ``items`` (POST /generate bodies), or a ``template`` and a
        ``grid`` whose combinations make the items."""
        body = batch_body(items, template, grid, name, output_format, webhook)
        return Batch.model_validate(await self._client._json("POST", "/batches", json=body))

    async def get(self, batch_id: str) -> Batch:
        return Batch.model_validate(await self._client._json("GET", f"/batches/{batch_id}"))

    async def list(self, *, limit: int = 20, cursor: str | None = None) -> BatchPage:
        params = {"limit": limit, "cursor": cursor}
        return BatchPage.model_validate(await self._client._json(
            "GET", "/batches", params={k: v for k, v in params.items() if v is not None}))

    async def cancel(self, batch_id: str) -> Batch:
        answer = await self._client._json("POST", f"/batches/{batch_id}/cancel")
        return Batch.model_validate(answer)

    async def results(self, batch_id: str) -> list[BatchItemResult]:
        """One result per item, in order, with fresh image URLs."""
        text = (await self._client.request("GET", f"/batches/{batch_id}/results")).text
        return [BatchItemResult.model_validate(json.loads(line))
                for line in text.splitlines() if line.strip()]

    async def wait(self, batch_id: str, *, timeout: float | None = None) -> Batch:
        return await _wait(lambda: self.get(batch_id), lambda batch: batch.done,
                           lambda _: f"batch {batch_id} still running", timeout)
