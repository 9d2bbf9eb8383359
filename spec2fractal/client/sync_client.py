"""``Spec2FractalClient``: the service from Python, blocking. See ``async_client`` for asyncio.

Each method is one line: the calls are written once, for both clients, in ``_calls``; what is
here is the blocking I/O that carries them out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from spec2fractal.client import _calls as calls
from spec2fractal.client import _resources as more
from spec2fractal.client._calls import ClientBase, Outgoing, Resource
from spec2fractal.client._core import ImageInput, LorasInput
from spec2fractal.client._resources import LoraFileInput
from spec2fractal.client.results import ImageResult
from spec2fractal.client.types import (
    Batch,
    BatchItemResult,
    BatchPage,
    Job,
    JobEvent,
    JobPage,
    LoraInfo,
    StyleInfo,
)

__all__ = ["Spec2FractalClient"]

T = TypeVar("T")


class Images(Resource):
    def generate(self, prompt: str | None = None, *, image: ImageInput | None = None,
                 loras: LorasInput | None = None, wait: bool = True,
                 wait_timeout: float | None = None, idempotency_key: str | None = None,
                 **options: Any) -> ImageResult:
        """Render a prompt, an image, or both (``image``: PIL image, bytes or path).

        ``options`` are POST /generate's fields: ``n``, ``width``, ``height``, ``steps``,
        ``guidance``, ``seed``, ``style``, ``strength``, ``model``, ``output_format`` ...
        ``loras``: LoRA adapters from the server's folder (``client.loras.list()``), as
        ``[{"name": "ink", "weight": 0.8}]``, ``{"ink": 0.8}`` or ``["ink:0.8"]``.
        With ``wait`` (the default) the call returns once the images exist, raising
        JobFailedError or JobCancelledError if the job ends otherwise; else at once, with
        the job as it is (``client.jobs.wait`` finishes it). ``idempotency_key``: the POST's
        Idempotency-Key, for a caller that may send the same render again (default: a new
        one per call, kept over its retries).
        """
        job = self._client._run(calls.generate(
            self._config, prompt, image, {**options, "loras": loras}, wait=wait,
            wait_timeout=wait_timeout, idempotency_key=idempotency_key))
        return ImageResult(job=job).bind(self._client._fetch)

    def upscale(self, image: ImageInput, scale: int = 2, *, prompt: str | None = None,
                strength: float | None = None, seed: int | None = None, wait: bool = True,
                wait_timeout: float | None = None, idempotency_key: str | None = None,
                **options: Any) -> ImageResult:
        """``image`` made ``scale`` (2 or 4) times larger (input_type ``upscale``): an
        image the built-in engine drew is drawn again at the new size (send it as the PNG
        it came as: its record says what it shows). ``options`` as :meth:`generate`'s."""
        return self.generate(prompt, image=image, wait=wait, wait_timeout=wait_timeout,
                             idempotency_key=idempotency_key, **{
                                 **options, "input_type": "upscale", "scale": scale,
                                 "strength": strength, "seed": seed})


class Jobs(Resource):
    def get(self, job_id: str) -> Job:
        return self._client._run(calls.get_job(self._config, job_id))

    def list(self, *, status: str | None = None, limit: int = 20,
             cursor: str | None = None) -> JobPage:
        return self._client._run(calls.list_jobs(self._config, status, limit, cursor))

    def cancel(self, job_id: str) -> Job:
        return self._client._run(calls.cancel_job(self._config, job_id))

    def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job once it has finished (succeeded, failed or cancelled)."""
        return self._client._run(calls.wait_for_job(self._config, job_id, timeout))

    def upscale(self, job_id: str, *, index: int = 0, scale: int = 2,
                prompt: str | None = None, strength: float | None = None,
                seed: int | None = None, output_format: str | None = None, wait: bool = True,
                wait_timeout: float | None = None,
                idempotency_key: str | None = None) -> ImageResult:
        """Image ``index`` of a finished job, ``scale`` (2 or 4) times larger, as a new job
        (POST /jobs/{id}/upscale): the image is not sent again."""
        body = {"index": index, "scale": scale, "prompt": prompt, "strength": strength,
                "seed": seed, "output_format": output_format}
        job = self._client._run(calls.upscale_job(
            self._config, job_id, body, wait=wait, wait_timeout=wait_timeout,
            idempotency_key=idempotency_key))
        return ImageResult(job=job).bind(self._client._fetch)

    def stream(self, job_id: str) -> Iterator[JobEvent]:
        """The job's events as they happen (GET /jobs/{id}/events), ending with succeeded,
        failed or cancelled, whose ``job`` is the finished job."""
        return calls.stream(calls.job_events(self._config, job_id), self._client._perform)


class Batches(Resource):
    def create(self, items: Sequence[Mapping[str, Any]] | None = None, *,
               template: Mapping[str, Any] | None = None,
               grid: Mapping[str, Sequence[Any]] | None = None, name: str | None = None,
               output_format: str | None = None, webhook: str | None = None) -> Batch:
        """Queue many renders: ``items`` (POST /generate bodies), or a ``template`` and a
        ``grid`` whose combinations make the items."""
        return self._client._run(calls.create_batch(self._config, items, template, grid, name,
                                                    output_format, webhook))

    def get(self, batch_id: str) -> Batch:
        return self._client._run(calls.get_batch(self._config, batch_id))

    def list(self, *, limit: int = 20, cursor: str | None = None) -> BatchPage:
        return self._client._run(calls.list_batches(self._config, limit, cursor))

    def cancel(self, batch_id: str) -> Batch:
        return self._client._run(calls.cancel_batch(self._config, batch_id))

    def results(self, batch_id: str) -> list[BatchItemResult]:
        """One result per item, in order, with fresh image URLs."""
        return self._client._run(calls.batch_results(self._config, batch_id))

    def wait(self, batch_id: str, *, timeout: float | None = None) -> Batch:
        """The batch once every item has ended (or it was cancelled)."""
        return self._client._run(calls.wait_for_batch(self._config, batch_id, timeout))


class Styles(Resource):
    def list(self) -> list[StyleInfo]:
        """The server's styles (built-in, operator) and this key's own (``source`` "user")."""
        return self._client._run(more.list_styles(self._config))

    def get(self, name: str) -> StyleInfo:
        """A style by name, any case; another key's is NotFoundError."""
        return self._client._run(more.get_style(self._config, name))

    def create(self, name: str, prompt: str, **options: Any) -> StyleInfo:
        """A style of this key's own, usable by name in every request. ``prompt`` holds
        ``{prompt}``; ``options``: ``negative_prompt``, ``description``, ``effect``,
        ``palette``, ``lighting``, ``steps``, ``guidance``, ``strength``, ``loras``.
        ConflictError if the name is taken (or the key keeps as many as it may)."""
        return self._client._run(more.create_style(self._config,
                                                   more.style_body(name, prompt, options)))

    def update(self, name: str, prompt: str, **options: Any) -> StyleInfo:
        """Replace one of this key's styles (the whole style, as :meth:`create` takes it);
        PermissionDeniedError for the server's own."""
        return self._client._run(more.update_style(self._config, name,
                                                   more.style_body(None, prompt, options)))

    def delete(self, name: str) -> None:
        return self._client._run(more.delete_style(self._config, name))


class Loras(Resource):
    def list(self) -> list[LoraInfo]:
        """The server's LoRA files: name, family, format, size and short hash."""
        return self._client._run(more.list_loras(self._config))

    def upload(self, file: LoraFileInput, *, name: str | None = None,
               filename: str | None = None) -> LoraInfo:
        """Add a ``.safetensors`` LoRA (a path, or bytes with ``filename``) to the server's
        folder; an operator key's call (PermissionDeniedError otherwise). ``name``: what
        requests call it; default the file's name. PayloadTooLargeError over the cap."""
        return self._client._run(more.upload_lora(self._config, file, name, filename))

    def delete(self, name: str) -> None:
        return self._client._run(more.delete_lora(self._config, name))


class Spec2FractalClient(ClientBase[httpx.Client]):
    """A Spec-2-Fractal server's API.

    ``api_key`` defaults to ``$SPEC2FRACTAL_API_KEY``, ``base_url`` to
    ``$SPEC2FRACTAL_BASE_URL`` or http://127.0.0.1:8000. ``timeout`` is seconds for each
    answer; 429 and 503 answers and lost connections are retried ``max_retries`` times with
    exponential backoff and jitter, after the server's Retry-After when it sends one. Every
    POST carries an Idempotency-Key, so a retry never makes a second job.
    """

    _http_class = httpx.Client
    _resources = (Images, Jobs, Batches, Styles, Loras)
    images: Images
    jobs: Jobs
    batches: Batches
    styles: Styles
    loras: Loras

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Spec2FractalClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, stream: bool = False,
                headers: Mapping[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """One call, retried as the class says; an error answer raises its APIError."""
        return self._run(calls.request(self.config, method, path, stream=stream,
                                       headers=headers, **kwargs))

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._run(calls.call_json(self.config, method, path, **kwargs))

    def _fetch(self, url: str) -> bytes:
        return self._run(calls.fetch(self.config, url))

    # -- the effects, blocking ------------------------------------------------------------

    def _run(self, call: calls.Call[T]) -> T:
        return calls.run(call, self._perform)

    def _send(self, request: Outgoing) -> httpx.Response:
        return self._http.send(request.build(self._http), stream=request.stream)

    def _read(self, response: httpx.Response) -> bytes:
        return response.read()

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def _lines(self, response: httpx.Response) -> Iterator[str]:
        return response.iter_lines()

    def _next_line(self, lines: Iterator[str]) -> str | None:
        return next(lines, None)
