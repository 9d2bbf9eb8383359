"""Renderers: turn an item into PNG bytes, through the library or through the service.

A renderer raises :class:`ItemFailed` for a failure that belongs to the item (the batch goes
on) and :class:`Abandoned` when the batch is stopping and the item was left unfinished.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import random
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from fractal.errors import GenerationCancelled, InvalidRequestError, Spec2FractalError
from fractal.record import read_record
from spec2fractal.batch.manifest import BatchError

if TYPE_CHECKING:
    import httpx

    from spec2fractal.batch.items import Item

__all__ = [
    "Abandoned",
    "ItemFailed",
    "LocalRenderer",
    "Output",
    "Renderer",
    "ServiceRenderer",
]


class ItemFailed(Exception):
    """This item cannot be rendered; the message is one line for the manifest."""


class Abandoned(Exception):
    """The batch is stopping; this item was dropped unfinished and must leave no trace."""


@dataclass(frozen=True)
class Output:
    data: bytes  # a complete PNG
    seed: int | None


class Renderer(Protocol):
    name: str  # the model an item without one is rendered by (part of every item's hash)

    def render(self, item: Item, worker: int, stop: threading.Event) -> list[Output]: ...

    def close(self) -> None: ...


class LocalRenderer:
    """The library in this process: one loaded model per worker thread (usually one)."""

    def __init__(self, model: str | None, workers: int) -> None:
        from fractal.spec2fractal import Spec2Fractal

        first = Spec2Fractal(model)
        # An instance renders one request at a time: more threads need more instances.
        self._models = [first, *(Spec2Fractal(model) for _ in range(workers - 1))]
        self.name = (model or first.model).strip()

    def render(self, item: Item, worker: int, stop: threading.Event) -> list[Output]:
        assert item.request is not None
        try:
            images = self._models[worker].generate(item.request, cancel=stop)
        except GenerationCancelled:
            raise Abandoned from None
        except Spec2FractalError as exc:  # a bad request or a model failure: this item only
            raise ItemFailed(str(exc)) from None
        outputs = []
        for image in images:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")  # the record rides along (see attach_record)
            record = read_record(image)
            outputs.append(Output(buffer.getvalue(), record.seed if record else None))
        return outputs

    def close(self) -> None:
        self._models.clear()


# -- the service -----------------------------------------------------------------------------

RETRY_STATUSES = frozenset({429, 503, 504})
MAX_TRIES = 8  # per HTTP call: about a minute and a half of backoff before the item fails
MAX_BACKOFF = 30.0
MAX_RETRY_AFTER = 120.0
POLL_FIRST, POLL_MAX = 0.1, 1.0
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER)


def backoff(attempt: int) -> float:
    """Exponential with jitter: 0.5 s, 1 s, 2 s ... up to 30 s."""
    return min(MAX_BACKOFF, 0.5 * 2 ** attempt) * random.uniform(0.8, 1.2)


def _detail(response: httpx.Response) -> str:
    """The error a service response gives, as one line naming the field when it is a 422."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text.strip()[:200]}"
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):
        parts = []
        for error in detail:
            if not isinstance(error, dict):
                parts.append(str(error))
                continue
            loc = [str(part) for part in error.get("loc", []) if part != "body"]
            msg = str(error.get("msg", "is invalid"))
            name = loc[-1] if loc else "request"
            parts.append(msg if msg.startswith(f"`{name}`") else f"`{name}` {msg}")
        return "; ".join(parts)
    return str(detail)


class ServiceRenderer:
    """``POST /generate`` with ``Prefer: respond-async``, poll the job, download the PNGs."""

    def __init__(self, server: str, model: str | None, workers: int, *,
                 api_key: str | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        import httpx

        self._httpx = httpx
        self.server = server.rstrip("/")
        if not self.server.startswith(("http://", "https://")):
            raise InvalidRequestError("--server", server, "must be an http:// or https:// URL")
        self.model = model
        # One Idempotency-Key per item per run: a POST retried after a lost answer replays
        # the job it made instead of making a second one.
        self._run = secrets.token_hex(8)
        self._client = httpx.Client(
            base_url=self.server, timeout=httpx.Timeout(60.0, connect=10.0),
            limits=httpx.Limits(max_connections=workers * 2 + 2), follow_redirects=True,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            transport=transport)
        self.name = model.strip() if model else self._default_model()

    def _default_model(self) -> str:
        """The server's default model (part of each item's hash); fails if it is unreachable."""
        try:
            response = self._client.get("/models")
        except self._httpx.HTTPError as exc:
            self._client.close()
            raise BatchError(f"cannot reach the server at {self.server}: {exc}") from None
        try:
            response.raise_for_status()
            return str(response.json()["default"])
        except (self._httpx.HTTPStatusError, ValueError, KeyError, TypeError):
            self._client.close()
            if response.status_code == 401:
                raise BatchError(f"{self.server} wants an API key: pass --api-key or set "
                                 "SPEC2FRACTAL_API_KEY") from None
            raise BatchError(f"{self.server} is not a Spec-2-Fractal server (GET /models "
                             f"answered {response.status_code})") from None

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, url: str, stop: threading.Event, **kwargs: Any
              ) -> httpx.Response:
        """One HTTP call, retried on 429/503/504 (honouring Retry-After) and transport errors."""
        for attempt in range(MAX_TRIES):
            if stop.is_set():
                raise Abandoned
            try:
                response = self._client.request(method, url, **kwargs)
            except self._httpx.TransportError as exc:
                if attempt == MAX_TRIES - 1:
                    raise ItemFailed(f"the server did not answer: {exc or type(exc).__name__}"
                                     ) from None
                delay = backoff(attempt)
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                if attempt == MAX_TRIES - 1:
                    raise ItemFailed(f"the server stayed busy: {_detail(response)}")
                delay = retry_after(response.headers.get("Retry-After"))
                if delay is None:
                    delay = backoff(attempt)
            if stop.wait(delay):
                raise Abandoned
        raise AssertionError("unreachable")

    def _body(self, item: Item) -> dict[str, Any]:
        assert item.request is not None
        body = {key: value for key, value in item.request.to_dict().items()
                if value is not None}
        if self.model and "model" not in body:
            body["model"] = self.model
        body["output_format"] = "png"
        return body

    def render(self, item: Item, worker: int, stop: threading.Event) -> list[Output]:
        response = self._call("POST", "/generate", stop, json=self._body(item),
                              headers={"Prefer": "respond-async",
                                       "Idempotency-Key": f"batch-{self._run}-{item.hash}"})
        if response.status_code == 200:
            job = response.json()["job"]
        elif response.status_code == 202:
            job = response.json()
        else:
            raise ItemFailed(_detail(response))
        job = self._wait(job, stop)
        if job["status"] == "failed":
            raise ItemFailed(job.get("error") or "the render failed on the server")
        if job["status"] == "cancelled":
            raise ItemFailed("the job was cancelled on the server")
        outputs = []
        for out in sorted(job["outputs"], key=lambda out: out["index"]):
            data = self._call("GET", out["url"], stop).content
            try:
                with Image.open(io.BytesIO(data)) as image:
                    image.verify()
                    if image.format != "PNG":
                        raise ValueError(f"a {image.format} image, not a PNG")
            except Exception as exc:  # Pillow raises many kinds for a broken file
                raise ItemFailed(f"output {out['index']} did not download whole: {exc}"
                                 ) from None
            outputs.append(Output(data, out.get("seed")))
        return outputs

    def _wait(self, job: dict[str, Any], stop: threading.Event) -> dict[str, Any]:
        interval = POLL_FIRST
        while job["status"] not in TERMINAL:
            if stop.wait(interval):
                self._cancel(job)
                raise Abandoned
            interval = min(POLL_MAX, interval * 1.5)
            try:
                response = self._call("GET", job["links"]["self"], stop)
            except Abandoned:
                self._cancel(job)
                raise
            if response.status_code != 200:
                raise ItemFailed(f"job {job['id']}: {_detail(response)}")
            job = response.json()
        return job

    def _cancel(self, job: dict[str, Any]) -> None:
        """Best effort: a job nobody will collect should not keep a worker busy."""
        with contextlib.suppress(self._httpx.HTTPError, KeyError):
            self._client.post(job["links"]["cancel"], timeout=5.0)
