"""Renderers: turn an item into PNG bytes, through the library here or through the service
(:mod:`spec2fractal.batch.service`, imported only for ``--server``: it brings the HTTP client).

A renderer raises :class:`ItemFailed` for a failure that belongs to the item (the batch goes
on) and :class:`Abandoned` when the batch is stopping and the item was left unfinished.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fractal.errors import GenerationCancelled, Spec2FractalError
from fractal.record import read_record

if TYPE_CHECKING:
    from spec2fractal.batch.items import Item

__all__ = [
    "Abandoned",
    "ItemFailed",
    "LocalRenderer",
    "Output",
    "Renderer",
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

    def __init__(self, model: str | None, workers: int, lora_dir: Path | None = None) -> None:
        from fractal.spec2fractal import Spec2Fractal

        first = Spec2Fractal(model, lora_dir=lora_dir)
        # An instance renders one request at a time: more threads need more instances.
        self._models = [first, *(Spec2Fractal(model, lora_dir=lora_dir)
                                 for _ in range(workers - 1))]
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
