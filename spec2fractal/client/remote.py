"""``Spec2Fractal(server=...)``: the library's calls, rendered by a Spec-2-Fractal server.

The same ``generate``, ``generate_from_text``, ``generate_from_image`` and ``upscale`` as local
mode, with the same arguments and results: PIL images carrying their generation record in
``image.info`` (``read_record`` works), one image for ``n=1`` else a list. A request the
server refuses raises the library's InvalidRequestError naming the argument; a cancelled
render GenerationCancelled. ``on_progress`` and ``cancel`` follow the job's event stream.
"""

from __future__ import annotations

import base64
import contextlib
import io
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from fractal.errors import GenerationCancelled, Spec2FractalError
from fractal.request import GenerationRequest
from spec2fractal.client._core import ImageInput, check_finished
from spec2fractal.client.errors import (
    ConflictError,
    JobCancelledError,
    UnprocessableEntityError,
)
from spec2fractal.client.results import ImageResult
from spec2fractal.client.sync_client import Spec2FractalClient
from workers.job_errors import INVALID_REQUEST, JobError

__all__ = ["RemoteSpec2Fractal"]



class RemoteSpec2Fractal:
    """A Spec2Fractal whose renders run on a server (``model``: one the server serves;
    None for its default)."""

    def __init__(self, model: str | None = None, *, server: str, api_key: str | None = None,
                 timeout: float | None = None, max_retries: int = 3,
                 client: Spec2FractalClient | None = None) -> None:
        self.client = client or Spec2FractalClient(server, api_key, timeout=timeout,
                                                   max_retries=max_retries)
        self.server = self.client.base_url
        self._requested = model.strip() if model and model.strip() else None
        self._model: str | None = self._requested

    @property
    def model(self) -> str:
        """The model renders use: the one asked for, else the server's default."""
        if self._model is None:
            self._model = str(self.client._json("GET", "/models")["default"])
        return self._model

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RemoteSpec2Fractal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def generate(self, request: GenerationRequest | Mapping[str, Any], *,
                 on_progress: Any = None, cancel: Any = None) -> list[Image.Image]:
        """Render a request; returns its ``n`` images, each with its record in ``image.info``."""
        if not isinstance(request, GenerationRequest):
            request = GenerationRequest.from_dict(request)
        options = {key: value for key, value in request.to_dict().items()
                   if value is not None and key != "prompt"}
        return self._render(request.prompt, None, options, on_progress, cancel)

    def generate_from_text(self, prompt: str, *, n: int = 1, on_progress: Any = None,
                           cancel: Any = None, **options: Any) -> Image.Image | list[Image.Image]:
        """Text-to-image. One image for ``n=1``, else a list of ``n``. The options are the
        local ``generate_from_text``'s (width, height, steps, guidance, seed, style ...)."""
        images = self._render(prompt, None, {**options, "n": n, "input_type": "text"},
                              on_progress, cancel)
        return images[0] if n == 1 else images

    def generate_from_image(self, image: ImageInput, prompt: str | None = None, *, n: int = 1,
                            on_progress: Any = None, cancel: Any = None,
                            **options: Any) -> Image.Image | list[Image.Image]:
        """Image-to-image (hybrid when a prompt is given). ``image``: PIL image, path or
        bytes; a ``data:`` URL or base64 string also works."""
        if isinstance(image, str) and (image.startswith("data:") or _is_base64(image)):
            options = {**options, "image": image}
            image_file: ImageInput | None = None
        else:
            image_file = image
        images = self._render(prompt, image_file, {**options, "n": n}, on_progress, cancel)
        return images[0] if n == 1 else images

    def upscale(self, image: ImageInput, scale: int = 2, prompt: str | None = None,
                strength: float | None = None, seed: int | None = None, *,
                on_progress: Any = None, cancel: Any = None) -> Image.Image:
        """``image`` made ``scale`` (2 or 4) times larger: one image, as the local
        ``upscale`` gives it (an engine image keeps its record, so it is drawn again)."""
        return self._render(prompt, image, {"input_type": "upscale", "scale": scale,
                                            "strength": strength, "seed": seed},
                            on_progress, cancel)[0]

    # -- the work --------------------------------------------------------------------------

    def _render(self, prompt: str | None, image: ImageInput | None, options: dict[str, Any],
                on_progress: Any, cancel: Any) -> list[Image.Image]:
        options = {key: value for key, value in options.items() if value is not None}
        if self._requested is not None:
            options.setdefault("model", self._requested)
        options["output_format"] = "png"  # the format that carries the record
        if isinstance(options.get("colors"), tuple | list):
            options["colors"] = list(options["colors"])
        follow = on_progress is not None or cancel is not None
        try:
            result = self.client.images.generate(prompt, image=image, wait=not follow,
                                                 **options)
            if follow:
                result = self._follow(result, on_progress, cancel)
        except UnprocessableEntityError as exc:
            raise _invalid(exc) from None
        except JobCancelledError as exc:
            progress = exc.job.progress
            raise GenerationCancelled(progress.step, progress.total) from None
        return result.images()

    def _follow(self, result: ImageResult, on_progress: Any, cancel: Any) -> ImageResult:
        should_stop = cancel.is_set if isinstance(cancel, threading.Event) else cancel
        job = result.job
        for event in self.client.jobs.stream(job.id):
            if should_stop is not None and should_stop():
                with contextlib.suppress(ConflictError):  # it finished meanwhile
                    self.client.jobs.cancel(job.id)
                step, total = event.step or 0, event.total or 0
                raise GenerationCancelled(step, total)
            if event.type == "progress" and on_progress is not None and event.step:
                on_progress(event.step, event.total or 0, _preview(event.preview))
            if event.final and event.job is not None:
                job = event.job
        if not job.finished:
            job = self.client.jobs.wait(job.id)
        check_finished(job)
        return ImageResult(job=job).bind(self.client._fetch)


def _invalid(exc: UnprocessableEntityError) -> Spec2FractalError:
    """A 422 as the library's exception. The server's own checks send their reason and
    choices as data (``ctx``); a schema error's message is its reason."""
    first = exc.errors[0] if exc.errors else {}
    ctx = first.get("ctx") or {}
    choices = ctx.get("choices")
    return JobError(str(ctx.get("code") or INVALID_REQUEST), str(first.get("msg") or
                    exc.message), exc.field or "request", first.get("input"),
                    choices=list(choices) if isinstance(choices, Sequence) else None,
                    reason=ctx.get("reason") or str(first.get("msg") or exc.message)
                    ).to_exception()


def _preview(data_url: str | None) -> Image.Image | None:
    if not data_url or "," not in data_url:
        return None
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
        image.load()
        return image
    except Exception:  # a broken preview is no reason to fail the render
        return None


def _is_base64(text: str) -> bool:
    return len(text) > 256 and re.fullmatch(r"[A-Za-z0-9+/=\s]+", text[:1024]) is not None
