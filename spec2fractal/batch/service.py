"""The service renderer: a job per item through :class:`Spec2FractalClient`, which does the
HTTP (retries, Retry-After, Idempotency-Keys, waiting on the job). What is here is the batch's
part: stopping with the batch, the server's default model, and messages for the manifest.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import threading
from typing import TYPE_CHECKING, Any

import httpx
from PIL import Image

from fractal.errors import InvalidRequestError
from spec2fractal.batch.manifest import BatchError
from spec2fractal.batch.render import Abandoned, ItemFailed, Output
from spec2fractal.client import (
    APIConnectionError,
    APIError,
    APIStatusError,
    AuthenticationError,
    ImageResult,
    Job,
    JobCancelledError,
    JobFailedError,
    RateLimitError,
    ServiceUnavailableError,
    Spec2FractalClient,
)
from spec2fractal.client._core import check_finished

if TYPE_CHECKING:
    from spec2fractal.batch.items import Item

__all__ = ["ServiceRenderer"]

MAX_RETRIES = 7  # per HTTP call: about half a minute of backoff before the item fails
CANCEL_TIMEOUT = 5.0  # seconds for the best-effort cancel of an abandoned job


class _BatchClient(Spec2FractalClient):
    """The client, but its waits (backoff, polling a job) end a render when the batch stops:
    the thread rendering an item sets its stop event in ``stopping``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopping = threading.local()

    def _sleep(self, seconds: float) -> None:
        stop: threading.Event | None = getattr(self.stopping, "event", None)
        if stop is None:
            super()._sleep(seconds)
        elif stop.wait(seconds):
            raise Abandoned


class ServiceRenderer:
    """A job per item through :class:`Spec2FractalClient` (its retries, Retry-After and
    Idempotency-Keys), waited on, its PNGs downloaded."""

    def __init__(self, server: str, model: str | None, workers: int, *,
                 api_key: str | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.server = server.rstrip("/")
        if not self.server.startswith(("http://", "https://")):
            raise InvalidRequestError("--server", server, "must be an http:// or https:// URL")
        self.model = model
        # One Idempotency-Key per item per run: a POST retried after a lost answer replays
        # the job it made instead of making a second one.
        self._run = secrets.token_hex(8)
        timeout = httpx.Timeout(60.0, connect=10.0)
        http = httpx.Client(timeout=timeout, follow_redirects=True, transport=transport,
                            limits=httpx.Limits(max_connections=workers * 2 + 2))
        self._client = _BatchClient(self.server, api_key, timeout=timeout,
                                    max_retries=MAX_RETRIES, http_client=http)
        self.name = model.strip() if model else self._default_model(api_key, timeout, http)

    def _default_model(self, api_key: str | None, timeout: httpx.Timeout,
                       http: httpx.Client) -> str:
        """The server's default model (part of each item's hash); fails if it is unreachable."""
        # Asked once, unretried: a wrong --server should fail at once, not after the backoff.
        probe = Spec2FractalClient(self.server, api_key, timeout=timeout, max_retries=0,
                                   http_client=http)
        try:
            return str(probe.request("GET", "/models").json()["default"])
        except APIConnectionError as exc:
            self.close()
            raise BatchError(f"cannot reach the server at {self.server}: "
                             f"{exc.__cause__ or exc}") from None
        except AuthenticationError:
            self.close()
            raise BatchError(f"{self.server} wants an API key: pass --api-key or set "
                             "SPEC2FRACTAL_API_KEY") from None
        except (APIStatusError, ValueError, KeyError, TypeError) as exc:
            self.close()
            answered = exc.status_code if isinstance(exc, APIStatusError) else 200
            raise BatchError(f"{self.server} is not a Spec-2-Fractal server (GET /models "
                             f"answered {answered})") from None

    def close(self) -> None:
        self._client.close()

    def _options(self, item: Item) -> dict[str, Any]:
        assert item.request is not None
        options = {key: value for key, value in item.request.to_dict().items()
                   if value is not None and key != "prompt"}
        if self.model and "model" not in options:
            options["model"] = self.model
        options["output_format"] = "png"
        return options

    def render(self, item: Item, worker: int, stop: threading.Event) -> list[Output]:
        assert item.request is not None
        self._client.stopping.event = stop
        try:
            pending = self._client.images.generate(
                item.request.prompt, wait=False, idempotency_key=f"batch-{self._run}-{item.hash}",
                **self._options(item))
            job = self._finish(pending.job)
            result = ImageResult(job=job).bind(self._client._fetch)
            files = result.download()
        except (RateLimitError, ServiceUnavailableError) as exc:
            raise ItemFailed(f"the server stayed busy: {exc.message}") from None
        except APIConnectionError as exc:
            raise ItemFailed(f"the server did not answer: {exc.message}") from None
        except JobCancelledError:
            raise ItemFailed("the job was cancelled on the server") from None
        except JobFailedError as exc:
            raise ItemFailed(exc.job.error or "the render failed on the server") from None
        except APIError as exc:
            raise ItemFailed(exc.message) from None
        finally:
            self._client.stopping.event = None
        return [Output(_whole_png(data, index), seed)
                for index, (data, seed) in enumerate(zip(files, result.seeds, strict=True))]

    def _finish(self, job: Job) -> Job:
        """The job once it has ended; cancelled on the server if the batch stops first."""
        try:
            job = self._client.jobs.wait(job.id)
        except Abandoned:
            # Best effort: a job nobody will collect should not keep a worker busy.
            with contextlib.suppress(APIError, Abandoned):
                self._client.request("POST", f"/jobs/{job.id}/cancel", timeout=CANCEL_TIMEOUT)
            raise
        check_finished(job)
        return job


def _whole_png(data: bytes, index: int) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            if image.format != "PNG":
                raise ValueError(f"a {image.format} image, not a PNG")
    except Exception as exc:  # Pillow raises many kinds for a broken file
        raise ItemFailed(f"output {index} did not download whole: {exc}") from None
    return data
