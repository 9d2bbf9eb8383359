"""``AsyncSpec2FractalClient``: the same client as ``Spec2FractalClient``, for asyncio.

The calls are the sync client's, written once in ``_calls``; so are the docstrings. What is
here is the asyncio I/O that carries the calls out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from spec2fractal.client import _calls as calls
from spec2fractal.client import _resources as more
from spec2fractal.client import sync_client
from spec2fractal.client._calls import Outgoing, Resource, docs_from
from spec2fractal.client._core import ImageInput, LorasInput
from spec2fractal.client._resources import LoraFileInput
from spec2fractal.client.results import AsyncImageResult
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

__all__ = ["AsyncSpec2FractalClient"]

T = TypeVar("T")


@docs_from(sync_client.Images)
class Images(Resource):
    async def generate(self, prompt: str | None = None, *, image: ImageInput | None = None,
                       loras: LorasInput | None = None, wait: bool = True,
                       wait_timeout: float | None = None, idempotency_key: str | None = None,
                       **options: Any) -> AsyncImageResult:
        job = await self._client._run(calls.generate(
            self._config, prompt, image, {**options, "loras": loras}, wait=wait,
            wait_timeout=wait_timeout, idempotency_key=idempotency_key))
        return AsyncImageResult(job=job).bind(self._client._fetch)

    async def upscale(self, image: ImageInput, scale: int = 2, *, prompt: str | None = None,
                      strength: float | None = None, seed: int | None = None,
                      wait: bool = True, wait_timeout: float | None = None,
                      idempotency_key: str | None = None,
                      **options: Any) -> AsyncImageResult:
        return await self.generate(prompt, image=image, wait=wait, wait_timeout=wait_timeout,
                                   idempotency_key=idempotency_key, **{
                                       **options, "input_type": "upscale", "scale": scale,
                                       "strength": strength, "seed": seed})


@docs_from(sync_client.Jobs)
class Jobs(Resource):
    async def get(self, job_id: str) -> Job:
        return await self._client._run(calls.get_job(self._config, job_id))

    async def list(self, *, status: str | None = None, limit: int = 20,
                   cursor: str | None = None) -> JobPage:
        return await self._client._run(calls.list_jobs(self._config, status, limit, cursor))

    async def cancel(self, job_id: str) -> Job:
        return await self._client._run(calls.cancel_job(self._config, job_id))

    async def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        return await self._client._run(calls.wait_for_job(self._config, job_id, timeout))

    async def upscale(self, job_id: str, *, index: int = 0, scale: int = 2,
                      prompt: str | None = None, strength: float | None = None,
                      seed: int | None = None, output_format: str | None = None,
                      wait: bool = True, wait_timeout: float | None = None,
                      idempotency_key: str | None = None) -> AsyncImageResult:
        body = {"index": index, "scale": scale, "prompt": prompt, "strength": strength,
                "seed": seed, "output_format": output_format}
        job = await self._client._run(calls.upscale_job(
            self._config, job_id, body, wait=wait, wait_timeout=wait_timeout,
            idempotency_key=idempotency_key))
        return AsyncImageResult(job=job).bind(self._client._fetch)

    async def stream(self, job_id: str) -> AsyncIterator[JobEvent]:
        # aclosing: a caller that stops early closes the stream's response now, not at exit.
        async with contextlib.aclosing(calls.astream(calls.job_events(self._config, job_id),
                                                     self._client._perform)) as events:
            async for event in events:
                yield event


@docs_from(sync_client.Batches)
class Batches(Resource):
    async def create(self, items: Sequence[Mapping[str, Any]] | None = None, *,
                     template: Mapping[str, Any] | None = None,
                     grid: Mapping[str, Sequence[Any]] | None = None, name: str | None = None,
                     output_format: str | None = None, webhook: str | None = None) -> Batch:
        return await self._client._run(calls.create_batch(
            self._config, items, template, grid, name, output_format, webhook))

    async def get(self, batch_id: str) -> Batch:
        return await self._client._run(calls.get_batch(self._config, batch_id))

    async def list(self, *, limit: int = 20, cursor: str | None = None) -> BatchPage:
        return await self._client._run(calls.list_batches(self._config, limit, cursor))

    async def cancel(self, batch_id: str) -> Batch:
        return await self._client._run(calls.cancel_batch(self._config, batch_id))

    async def results(self, batch_id: str) -> list[BatchItemResult]:
        return await self._client._run(calls.batch_results(self._config, batch_id))

    async def wait(self, batch_id: str, *, timeout: float | None = None) -> Batch:
        return await self._client._run(calls.wait_for_batch(self._config, batch_id, timeout))


@docs_from(sync_client.Styles)
class Styles(Resource):
    async def list(self) -> list[StyleInfo]:
        return await self._client._run(more.list_styles(self._config))

    async def get(self, name: str) -> StyleInfo:
        return await self._client._run(more.get_style(self._config, name))

    async def create(self, name: str, prompt: str, **options: Any) -> StyleInfo:
        return await self._client._run(more.create_style(
            self._config, more.style_body(name, prompt, options)))

    async def update(self, name: str, prompt: str, **options: Any) -> StyleInfo:
        return await self._client._run(more.update_style(
            self._config, name, more.style_body(None, prompt, options)))

    async def delete(self, name: str) -> None:
        return await self._client._run(more.delete_style(self._config, name))


@docs_from(sync_client.Loras)
class Loras(Resource):
    async def list(self) -> list[LoraInfo]:
        return await self._client._run(more.list_loras(self._config))

    async def upload(self, file: LoraFileInput, *, name: str | None = None,
                     filename: str | None = None) -> LoraInfo:
        return await self._client._run(more.upload_lora(self._config, file, name, filename))

    async def delete(self, name: str) -> None:
        return await self._client._run(more.delete_lora(self._config, name))


@docs_from(sync_client.Spec2FractalClient)
class AsyncSpec2FractalClient(calls.ClientBase[httpx.AsyncClient]):
    """A Spec-2-Fractal server's API, for asyncio (``await client.images.generate(...)``);
    otherwise as ``Spec2FractalClient``."""

    _http_class = httpx.AsyncClient
    _resources = (Images, Jobs, Batches, Styles, Loras)
    images: Images
    jobs: Jobs
    batches: Batches
    styles: Styles
    loras: Loras

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSpec2FractalClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, *, stream: bool = False,
                      headers: Mapping[str, str] | None = None, **kwargs: Any
                      ) -> httpx.Response:
        return await self._run(calls.request(self.config, method, path, stream=stream,
                                             headers=headers, **kwargs))

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self._run(calls.call_json(self.config, method, path, **kwargs))

    async def _fetch(self, url: str) -> bytes:
        return await self._run(calls.fetch(self.config, url))

    # -- the effects, awaited -------------------------------------------------------------

    async def _run(self, call: calls.Call[T]) -> T:
        return await calls.arun(call, self._perform)

    async def _send(self, request: Outgoing) -> httpx.Response:
        return await self._http.send(request.build(self._http), stream=request.stream)

    async def _read(self, response: httpx.Response) -> bytes:
        return await response.aread()

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _lines(self, response: httpx.Response) -> AsyncIterator[str]:
        return response.aiter_lines()

    async def _next_line(self, lines: AsyncIterator[str]) -> str | None:
        return await anext(lines, None)
