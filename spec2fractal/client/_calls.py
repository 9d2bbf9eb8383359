"""Every call of the client, written once for both flavours.

A call is a generator, in the sans-I/O shape of httpx's ``Auth.auth_flow``: it yields the I/O
it needs as an :class:`Effect` (send a request, read a streamed body, sleep, the lines of a
streamed answer and each next line), is sent each outcome, and meets a transport error where
it asked. What a streaming call hands on to its caller it yields as :class:`Emit`.
:func:`run` and :func:`stream` carry a call out with blocking I/O, :func:`arun` and
:func:`astream` with ``await``. ``Spec2FractalClient`` and ``AsyncSpec2FractalClient`` only
declare the methods and do the effects (a line each), so a fix made here is made for both.
"""

from __future__ import annotations

import json
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast

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
from spec2fractal.client.types import Batch, BatchItemResult, BatchPage, Job, JobPage

T = TypeVar("T")
V = TypeVar("V")
H = TypeVar("H", httpx.Client, httpx.AsyncClient)
K = TypeVar("K", bound=type)

# -- effects: the I/O a call asks for ----------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """I/O a call asks for: each client's method ``handler`` (one of the names below),
    blocking or awaited, given ``argument``."""

    handler: str
    argument: Any


SEND = "_send"  # an Outgoing request; the outcome: its response, read unless streamed
READ = "_read"  # a streamed response: read its body (which closes it)
SLEEP = "_sleep"  # seconds
LINES = "_lines"  # a streamed response: its lines, an (async) iterator for NEXT_LINE
NEXT_LINE = "_next_line"  # such an iterator: its next line, or None after the last


@dataclass(frozen=True)
class Outgoing:
    method: str
    url: str
    headers: Mapping[str, str]
    options: Mapping[str, Any]  # more of httpx's build_request: json, data, files, params ...
    stream: bool = False

    def build(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return http.build_request(self.method, self.url, headers=dict(self.headers),
                                  **self.options)


@dataclass(frozen=True)
class Emit:
    """A value for the caller of a streaming call; no I/O."""

    value: Any


Call = Generator[Effect | Emit, Any, T]

# -- carrying a call out ------------------------------------------------------------------------


class Flow(Generic[T]):
    """One call under way. ``effect``: the I/O it waits on, None once it has ended with
    ``result``. ``take()``: what it emitted meanwhile. ``streams``: the streamed responses it
    opened, for the client to close however the call ends."""

    def __init__(self, call: Call[T]) -> None:
        self._call = call
        self._emitted: list[Any] = []
        self.effect: Effect | None = None
        self.result: T = cast(T, None)
        self.streams: list[httpx.Response] = []
        self._advance(call.send, None)

    def step(self, outcome: Any) -> None:
        """Resume the call with its effect's outcome; a transport error is raised in it."""
        if isinstance(outcome, httpx.Response) and isinstance(self.effect.argument, Outgoing) \
                and self.effect.argument.stream:
            self.streams.append(outcome)
        if isinstance(outcome, httpx.TransportError):
            self._advance(self._call.throw, outcome)
        else:
            self._advance(self._call.send, outcome)

    def take(self) -> list[Any]:
        emitted, self._emitted = self._emitted, []
        return emitted

    def _advance(self, resume: Callable[[Any], Effect | Emit], value: Any) -> None:
        try:
            effect = resume(value)
            while isinstance(effect, Emit):
                self._emitted.append(effect.value)
                effect = self._call.send(None)
        except StopIteration as stop:
            self.effect, self.result = None, stop.value
        else:
            self.effect = effect


def _outcome(perform: Callable[[Effect], Any], effect: Effect) -> Any:
    try:
        return perform(effect)
    except httpx.TransportError as exc:
        return exc  # for Flow.step to raise in the call, where it asked


async def _aoutcome(perform: Callable[[Effect], Awaitable[Any]], effect: Effect) -> Any:
    try:
        return await perform(effect)
    except httpx.TransportError as exc:
        return exc


def run(call: Call[T], perform: Callable[[Effect], Any]) -> T:
    """Carry a call out with blocking I/O: ``perform`` does one effect."""
    flow = Flow(call)
    while flow.effect is not None:
        flow.step(_outcome(perform, flow.effect))
    return flow.result


async def arun(call: Call[T], perform: Callable[[Effect], Awaitable[Any]]) -> T:
    flow = Flow(call)
    while flow.effect is not None:
        flow.step(await _aoutcome(perform, flow.effect))
    return flow.result


def stream(call: Call[None], perform: Callable[[Effect], Any]) -> Iterator[Any]:
    """Carry a streaming call out with blocking I/O, yielding what it emits as it comes."""
    flow = Flow(call)
    try:
        while True:
            yield from flow.take()
            if flow.effect is None:
                return
            flow.step(_outcome(perform, flow.effect))
    finally:  # also when the caller stops early
        for response in flow.streams:
            response.close()


async def astream(call: Call[None], perform: Callable[[Effect], Awaitable[Any]]
                  ) -> AsyncIterator[Any]:
    flow = Flow(call)
    try:
        while True:
            for value in flow.take():
                yield value
            if flow.effect is None:
                return
            flow.step(await _aoutcome(perform, flow.effect))
    finally:
        for response in flow.streams:
            await response.aclose()


# -- what both clients are ----------------------------------------------------------------------


class ClientBase(Generic[H]):
    """The constructor and settings of both clients (see ``Spec2FractalClient``)."""

    _http_class: ClassVar[type]
    _resources: ClassVar[tuple[type, ...]]  # images, jobs, batches, styles, loras

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | httpx.Timeout | None = None,
                 max_retries: int = DEFAULT_MAX_RETRIES, http_client: H | None = None) -> None:
        self.config = ClientConfig.of(base_url, api_key, timeout, max_retries)
        self._http: H = http_client or self._http_class(timeout=self.config.timeout,
                                                        follow_redirects=True)
        images, jobs, batches, styles, loras = self._resources
        self.images, self.jobs, self.batches = images(self), jobs(self), batches(self)
        self.styles, self.loras = styles(self), loras(self)

    @property
    def base_url(self) -> str:
        return self.config.base_url

    def _perform(self, effect: Effect) -> Any:
        return getattr(self, effect.handler)(effect.argument)


class Resource:
    """``client.images``, ``client.jobs``, ``client.batches``, ``client.styles``,
    ``client.loras``: calls run by their client."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._config: ClientConfig = client.config


def docs_from(source: type) -> Callable[[K], K]:
    """Each method of the decorated class without a docstring takes the one of ``source``'s
    method of that name: the async client is documented once, by the sync one."""
    def document(target: K) -> K:
        for name, member in vars(target).items():
            original = getattr(source, name, None)
            if callable(member) and member.__doc__ is None and original is not None:
                member.__doc__ = original.__doc__
        return target
    return document


# -- the calls ----------------------------------------------------------------------------------


def request(config: ClientConfig, method: str, path: str, *, stream: bool = False,
            headers: Mapping[str, str] | None = None, **options: Any) -> Call[httpx.Response]:
    """One HTTP call: retried on 429/503 (after Retry-After) and lost connections, under one
    Idempotency-Key for a POST; an error answer raises its APIError."""
    url = config.url(path)
    sent = {**config.headers_for(url), **(headers or {})}
    if method.upper() == "POST":
        sent.setdefault("Idempotency-Key", idempotency_key())
    attempt = 0
    while True:
        try:
            response = yield Effect(SEND, Outgoing(method, url, sent, options, stream))
        except httpx.TransportError as exc:
            delay = retry_delay(attempt, config.max_retries, error=exc)
            if delay is None:
                kind = APITimeoutError if isinstance(exc, httpx.TimeoutException) \
                    else APIConnectionError
                raise kind(f"{method} {url}: {exc or type(exc).__name__}") from exc
        else:
            if response.status_code < 400:
                return response
            if stream:  # an error answer is small: read it whole (which closes it)
                yield Effect(READ, response)
            delay = retry_delay(attempt, config.max_retries, response=response)
            if delay is None:
                raise_error(response)
        attempt += 1
        yield Effect(SLEEP, delay)


def call_json(config: ClientConfig, method: str, path: str, **options: Any) -> Call[Any]:
    return (yield from request(config, method, path, **options)).json()


def fetch(config: ClientConfig, url: str) -> Call[bytes]:
    return (yield from request(config, "GET", url)).content


def _drop_none(**params: Any) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}


def generate(config: ClientConfig, prompt: str | None, image: ImageInput | None,
             options: Mapping[str, Any], *, wait: bool, wait_timeout: float | None,
             idempotency_key: str | None) -> Call[Job]:
    return (yield from _render(config, "/generate", generate_request(prompt, image, options),
                               wait=wait, wait_timeout=wait_timeout,
                               idempotency_key=idempotency_key))


def upscale_job(config: ClientConfig, job_id: str, body: Mapping[str, Any], *, wait: bool,
                wait_timeout: float | None, idempotency_key: str | None) -> Call[Job]:
    """POST /jobs/{id}/upscale: one of a finished job's images, larger, as a new job."""
    return (yield from _render(config, f"/jobs/{job_id}/upscale",
                               {"json": _drop_none(**body)}, wait=wait,
                               wait_timeout=wait_timeout, idempotency_key=idempotency_key))


def _render(config: ClientConfig, path: str, content: Mapping[str, Any], *, wait: bool,
            wait_timeout: float | None, idempotency_key: str | None) -> Call[Job]:
    """A POST that makes a render job, answered as POST /generate answers; with ``wait``,
    the job once finished."""
    prefer = config.prefer_wait() if wait else None
    headers = {"Prefer": prefer or "respond-async"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    answer = yield from call_json(config, "POST", path, headers=headers, **content)
    job = Job.model_validate(answer["job"] if "job_id" in answer else answer)
    if wait and not job.finished:
        job = yield from wait_for_job(config, job.id, wait_timeout)
    if wait:
        check_finished(job)
    return job


def _poll(read: Callable[[], Call[V]], done: Callable[[V], bool],
          describe: Callable[[V], str], timeout: float | None) -> Call[V]:
    """``read()`` again, backing off, until ``done``; APITimeoutError after ``timeout`` s."""
    deadline = None if timeout is None else time.monotonic() + timeout
    interval: float | None = None
    while True:
        value = yield from read()
        if done(value):
            return value
        interval = poll_interval(interval)
        if deadline is not None and time.monotonic() + interval > deadline:
            raise APITimeoutError(f"{describe(value)} after {timeout} s")
        yield Effect(SLEEP, interval)


def get_job(config: ClientConfig, job_id: str) -> Call[Job]:
    return Job.model_validate((yield from call_json(config, "GET", f"/jobs/{job_id}")))


def list_jobs(config: ClientConfig, status: str | None, limit: int,
              cursor: str | None) -> Call[JobPage]:
    params = _drop_none(limit=limit, status=status, cursor=cursor)
    return JobPage.model_validate((yield from call_json(config, "GET", "/jobs", params=params)))


def cancel_job(config: ClientConfig, job_id: str) -> Call[Job]:
    answer = yield from call_json(config, "POST", f"/jobs/{job_id}/cancel")
    return Job.model_validate(answer)


def wait_for_job(config: ClientConfig, job_id: str, timeout: float | None) -> Call[Job]:
    return (yield from _poll(lambda: get_job(config, job_id), lambda job: job.finished,
                             lambda job: f"job {job_id} still {job.status}", timeout))


def job_events(config: ClientConfig, job_id: str) -> Call[None]:
    """GET /jobs/{id}/events: emits each JobEvent, the last one succeeded, failed or cancelled."""
    response = yield from request(config, "GET", f"/jobs/{job_id}/events", stream=True,
                                  headers={"Accept": "text/event-stream"})
    decoder = SSEDecoder()
    try:
        lines = yield Effect(LINES, response)
        while (line := (yield Effect(NEXT_LINE, lines))) is not None:
            event = decoder.feed(line)
            if event is not None:
                yield Emit(event)
                if event.final:
                    return
    except httpx.TransportError as exc:
        raise APIConnectionError(f"the event stream of job {job_id} broke: {exc}") from exc


def create_batch(config: ClientConfig, items: Sequence[Mapping[str, Any]] | None,
                 template: Mapping[str, Any] | None, grid: Mapping[str, Sequence[Any]] | None,
                 name: str | None, output_format: str | None,
                 webhook: str | None) -> Call[Batch]:
    body = batch_body(items, template, grid, name, output_format, webhook)
    return Batch.model_validate((yield from call_json(config, "POST", "/batches", json=body)))


def get_batch(config: ClientConfig, batch_id: str) -> Call[Batch]:
    return Batch.model_validate((yield from call_json(config, "GET", f"/batches/{batch_id}")))


def list_batches(config: ClientConfig, limit: int, cursor: str | None) -> Call[BatchPage]:
    answer = yield from call_json(config, "GET", "/batches",
                                  params=_drop_none(limit=limit, cursor=cursor))
    return BatchPage.model_validate(answer)


def cancel_batch(config: ClientConfig, batch_id: str) -> Call[Batch]:
    answer = yield from call_json(config, "POST", f"/batches/{batch_id}/cancel")
    return Batch.model_validate(answer)


def batch_results(config: ClientConfig, batch_id: str) -> Call[list[BatchItemResult]]:
    text = (yield from request(config, "GET", f"/batches/{batch_id}/results")).text
    return [BatchItemResult.model_validate(json.loads(line))
            for line in text.splitlines() if line.strip()]


def wait_for_batch(config: ClientConfig, batch_id: str, timeout: float | None) -> Call[Batch]:
    return (yield from _poll(lambda: get_batch(config, batch_id), lambda batch: batch.done,
                             lambda _: f"batch {batch_id} still running", timeout))
