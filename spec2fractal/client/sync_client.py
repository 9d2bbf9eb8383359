"""``Spec2FractalClient``: the service from Python, blocking. See ``async_client`` for asyncio."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from spec2fractal.client.results import ImageResult
from spec2fractal.client.types import Batch, BatchItemResult, BatchPage, Job, JobEvent, JobPage

__all__ = ["Spec2FractalClient"]

T = TypeVar("T")


def _wait(read: Callable[[], T], done: Callable[[T], bool], describe: Callable[[T], str],
          timeout: float | None) -> T:
    """``read()`` again, backing off, until ``done``; APITimeoutError after ``timeout`` s."""
    deadline = None if timeout is None else time.monotonic() + timeout
    interval: float | None = None
    while True:
        value = read()
        if done(value):
            return value
        interval = poll_interval(interval)
        if deadline is not None and time.monotonic() + interval > deadline:
            raise APITimeoutError(f"{describe(value)} after {timeout} s")
        time.sleep(interval)


class Spec2FractalClient:
    """A Spec-2-Fractal server's API.

    ``api_key`` defaults to ``$SPEC2FRACTAL_API_KEY``, ``base_url`` to
    ``$SPEC2FRACTAL_BASE_URL`` or http://127.0.0.1:8000. ``timeout`` is seconds for each
    answer; 429 and 503 answers and lost connections are retried ``max_retries`` times with
    exponential backoff and jitter, after the server's Retry-After when it sends one. Every
    POST carries an Idempotency-Key, so a retry never makes a second job.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | httpx.Timeout | None = None,
                 max_retries: int = DEFAULT_MAX_RETRIES,
                 http_client: httpx.Client | None = None) -> None:
        self.config = ClientConfig.of(base_url, api_key, timeout, max_retries)
        self._http = http_client or httpx.Client(timeout=self.config.timeout,
                                                 follow_redirects=True)
        self.images = Images(self)
        self.jobs = Jobs(self)
        self.batches = Batches(self)

    @property
    def base_url(self) -> str:
        return self.config.base_url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Spec2FractalClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, stream: bool = False,
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
                response = self._http.send(request, stream=stream)
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
                    response.read()
                    response.close()
                    raise_error(response)
                response.close()
            attempt += 1
            time.sleep(delay)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def _fetch(self, url: str) -> bytes:
        return self.request("GET", url).content


class Images:
    def __init__(self, client: Spec2FractalClient) -> None:
        self._client = client

    def generate(self, prompt: str | None = None, *, image: ImageInput | None = None,
                 wait: bool = True, wait_timeout: float | None = None,
                 **options: Any) -> ImageResult:
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
        answer = self._client._json("POST", "/generate", headers=headers,
                                    **generate_request(prompt, image, options))
        job = Job.model_validate(answer["job"] if "job_id" in answer else answer)
        if wait and not job.finished:
            job = self._client.jobs.wait(job.id, timeout=wait_timeout)
        if wait:
            check_finished(job)
        return ImageResult(job=job).bind(self._client._fetch)



class Jobs:
    def __init__(self, client: Spec2FractalClient) -> None:
        self._client = client

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self._client._json("GET", f"/jobs/{job_id}"))

    def list(self, *, status: str | None = None, limit: int = 20,
             cursor: str | None = None) -> JobPage:
        params = {"limit": limit, "status": status, "cursor": cursor}
        return JobPage.model_validate(self._client._json(
            "GET", "/jobs", params={k: v for k, v in params.items() if v is not None}))

    def cancel(self, job_id: str) -> Job:
        return Job.model_validate(self._client._json("POST", f"/jobs/{job_id}/cancel"))

    def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job once it has finished (succeeded, failed or cancelled)."""
        return _wait(lambda: self.get(job_id), lambda job: job.finished,
                     lambda job: f"job {job_id} still {job.status}", timeout)

    def stream(self, job_id: str) -> Iterator[JobEvent]:
        """The job's events as they happen (GET /jobs/{id}/events), ending with succeeded,
        failed or cancelled, whose ``job`` is the finished job."""
        response = self._client.request("GET", f"/jobs/{job_id}/events", stream=True,
                                        headers={"Accept": "text/event-stream"})
        decoder = SSEDecoder()
        try:
            for line in response.iter_lines():
                event = decoder.feed(line)
                if event is not None:
                    yield event
                    if event.final:
                        return
        except httpx.TransportError as exc:
            raise APIConnectionError(f"the event stream of job {job_id} broke: {exc}") from exc
        finally:
            response.close()


class Batches:
    def __init__(self, client: Spec2FractalClient) -> None:
        self._client = client

    def create(self, items: Sequence[Mapping[str, Any]] | None = None, *,
               template: Mapping[str, Any] | None = None,
               grid: Mapping[str, Sequence[Any]] | None = None, name: str | None = None,
               output_format: str | None = None, webhook: str | None = None) -> Batch:
        """Queue many renders: ``items`` (POST /generate bodies), or a ``template`` and a
        ``grid`` whose combinations make the items."""
        body = batch_body(items, template, grid, name, output_format, webhook)
        return Batch.model_validate(self._client._json("POST", "/batches", json=body))

    def get(self, batch_id: str) -> Batch:
        return Batch.model_validate(self._client._json("GET", f"/batches/{batch_id}"))

    def list(self, *, limit: int = 20, cursor: str | None = None) -> BatchPage:
        params = {"limit": limit, "cursor": cursor}
        return BatchPage.model_validate(self._client._json(
            "GET", "/batches", params={k: v for k, v in params.items() if v is not None}))

    def cancel(self, batch_id: str) -> Batch:
        return Batch.model_validate(self._client._json("POST", f"/batches/{batch_id}/cancel"))

    def results(self, batch_id: str) -> list[BatchItemResult]:
        """One result per item, in order, with fresh image URLs."""
        text = self._client.request("GET", f"/batches/{batch_id}/results").text
        return [BatchItemResult.model_validate(json.loads(line))
                for line in text.splitlines() if line.strip()]

    def wait(self, batch_id: str, *, timeout: float | None = None) -> Batch:
        return _wait(lambda: self.get(batch_id), lambda batch: batch.done,
                     lambda _: f"batch {batch_id} still running", timeout)
