"""POST /batches' work before the queue: expand a grid, check every item exactly as
POST /generate would (all of them before anything is created), then create the batch row and
its jobs in one transaction and send them to the low-priority queue."""

from __future__ import annotations

import base64
import io
import itertools
import logging
import math
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.errors import ApiError, field_error, invalid_request
from api.generation import build_request, check_webhook, input_image
from api.limits import QUEUE_FULL_RETRY_AFTER
from api.references import DecodeCache, References
from api.routing import check_served
from api.schemas import BatchBody, GenerateBody
from api.styles import CallerStyles
from fractal import GenerationRequest, InvalidRequestError
from fractal.images import image_bytes
from fractal.request import UPSCALE_FACTORS
from fractal.validation import check_upscale
from workers.db import Database
from workers.db import batches as batch_store
from workers.db.batches import NewItem
from workers.db.jobs import new_job_id
from workers.job_errors import NOT_QUEUED
from workers.references import store_references
from workers.runner import input_key
from workers.settings import Settings
from workers.storage import Storage, StorageError
from workers.task_queue import EnqueueError, TaskQueue

__all__ = ["BatchPlan", "admit_batch", "create_batch", "expand_grid", "grid_size", "item_limit",
           "plan_batch"]

logger = logging.getLogger(__name__)

MAX_ERRORS = 20  # entries in one 422: a bad grid value fails thousands of items alike
_ADMISSION = threading.Lock()  # batch admission and insert, one batch at a time
PROMPT_ALIASES = {"content": "prompt", "prompt": "content"}


def _tiny_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# Items are checked with this in place of their image; each distinct image is decoded once.
_PLACEHOLDER = _tiny_png()


def grid_size(grid: dict[str, Sequence[Any]]) -> int:
    """How many items a grid makes, without making them."""
    return math.prod(len(values) for values in grid.values())


def expand_grid(template: dict[str, Any],
                grid: dict[str, Sequence[Any]]) -> Iterator[dict[str, Any]]:
    """The Cartesian product, the first key varying slowest (InvokeAI's order); grid values
    override the template's, and ``content``/``prompt`` override each other."""
    keys = list(grid)
    base = {key: value for key, value in template.items()
            if key not in grid and PROMPT_ALIASES.get(key) not in grid}
    for combination in itertools.product(*(grid[key] for key in keys)):
        yield {**base, **dict(zip(keys, combination, strict=True))}


@dataclass
class PlannedItem:
    request: GenerationRequest
    output_format: str
    image: int | None  # index into BatchPlan.images
    references: References  # its reference images, by hash (stored once per batch)


@dataclass
class BatchPlan:
    name: str | None
    output_format: str
    items: list[PlannedItem] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    image_refs: dict[str, int] = field(default_factory=dict)  # data URL -> index in images
    bad_images: set[str] = field(default_factory=set)  # reported once, never decoded again
    decoded: DecodeCache = field(default_factory=dict)  # reference images, each decoded once
    webhook_url: str | None = None  # gets batch.completed


class _Errors:
    """422 entries gathered over every item; the same place is named once."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.seen: set[tuple[Any, ...]] = set()

    def add(self, loc: list[Any], error: dict[str, Any], index: int | None = None) -> None:
        if tuple(loc) in self.seen or len(self.entries) >= MAX_ERRORS:
            return
        self.seen.add(tuple(loc))
        msg = error.get("msg", "is invalid")
        if index is not None:
            msg = f"item {index}: {msg}"
        self.entries.append({**error, "loc": loc, "msg": msg})

    def raise_any(self) -> None:
        if self.entries:
            raise RequestValidationError(self.entries)


def item_limit(settings: Settings, keyed: bool) -> tuple[int, str]:
    """The most items one batch may have, and the setting that says so: no batch larger than
    a queue or quota it must fit in whole can ever be admitted (``keyed``: the caller has a
    key, so its quota counts)."""
    limits = [(settings.max_batch_items, "max_batch_items"),
              (settings.max_queued_batch_items, "max_queued_batch_items")]
    if keyed:
        limits.append((settings.max_batch_items_per_key, "max_batch_items_per_key"))
    return min(limits)


def admit_batch(session: Session, settings: Settings, owner: str | None, size: int, *,
                lock: bool = False) -> None:
    """The caller's quota of batch work (429), then the batch queue's room (503), both with
    Retry-After and the limit named; as ``generation.admit`` for single jobs. A batch is
    admitted whole or not at all: its items count against both."""
    if owner is not None:
        mine = batch_store.count_unfinished_items(session, owner, lock=lock)
        quota = settings.max_batch_items_per_key
        if mine + size > quota:
            raise ApiError(429, f"this key has {mine} batch items queued or running; {size} "
                           f"more would pass its quota of {quota} (max_batch_items_per_key); "
                           f"wait for some to finish or cancel a batch",
                           headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER)},
                           limit="max_batch_items_per_key", quota=quota, unfinished=mine)
    queued = batch_store.count_queued_items(session)
    room = settings.max_queued_batch_items
    if queued + size > room:
        raise ApiError(503, f"the batch queue holds {queued} items; {size} more would pass "
                       f"its limit of {room} (max_queued_batch_items); try again later",
                       headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER)},
                       limit="max_queued_batch_items", queue_limit=room, queued=queued)


def plan_batch(body: BatchBody, settings: Settings, styles: CallerStyles,
               keyed: bool = False) -> BatchPlan:
    """Every item checked; a 422 naming the item (``items``, index) or the grid key. Blocking.
    ``keyed``: the caller has an API key, whose quota bounds a batch's size too."""
    if (body.items is None) == (body.grid is None):
        raise field_error(["body"], "give `items`, or `grid` (with an optional `template`)",
                          None, kind="missing" if body.items is None else "value_error")
    if body.items is not None and body.template is not None:
        raise field_error(["body", "template"], "a template goes with `grid`, not `items`",
                          "<template>")
    plan = BatchPlan(name=body.name, output_format=body.output_format or "png")
    if body.webhook is not None:
        check_webhook(["body", "webhook"], body.webhook, settings)
        plan.webhook_url = body.webhook
    errors = _Errors()
    limit, limit_name = item_limit(settings, keyed)
    if body.items is not None:
        if not body.items:
            raise field_error(["body", "items"], "must hold at least one item", [],
                              kind="too_short")
        if len(body.items) > limit:
            raise field_error(["body", "items"], f"at most {limit} items in one batch "
                              f"({limit_name})", f"<{len(body.items)} items>", kind="too_long")
        for index, item in enumerate(body.items):
            _plan_item(plan, item, index, body.output_format, settings, styles, errors,
                       lambda loc, index=index: ["body", "items", index, *loc])
        errors.raise_any()
        return plan

    assert body.grid is not None
    unknown = [key for key in body.grid if key not in GenerateBody.model_fields]
    if unknown:
        raise field_error(["body", "grid", unknown[0]], "is not a field of a generate body",
                          unknown[0], choices=sorted(GenerateBody.model_fields))
    size = grid_size(body.grid)
    if size > limit:
        raise field_error(["body", "grid"], f"makes {size} items; at most {limit} in one batch "
                          f"({limit_name})",
                          {key: len(values) for key, values in body.grid.items()},
                          kind="too_long")
    template = body.template.model_dump(exclude_unset=True) if body.template else {}
    grid_keys = set(body.grid) | {PROMPT_ALIASES[key] for key in body.grid
                                  if key in PROMPT_ALIASES}

    def where(loc: Sequence[Any]) -> list[Any]:
        name = loc[0] if loc else None
        if name in grid_keys:
            key = name if name in body.grid else PROMPT_ALIASES[name]
            return ["body", "grid", key]
        return ["body", "template", *loc]

    for index, data in enumerate(expand_grid(template, body.grid)):
        try:
            item = GenerateBody.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                errors.add(where(list(error["loc"])), error, index)
            continue
        _plan_item(plan, item, index, body.output_format, settings, styles, errors, where)
    errors.raise_any()
    return plan


def _plan_item(plan: BatchPlan, item: GenerateBody, index: int, default_format: str | None,
               settings: Settings, styles: CallerStyles, errors: _Errors,
               where: Callable[[list[Any]], list[Any]]) -> None:
    """Check one item with POST /generate's own code; on failure, note where and go on."""
    # A batch notifies once, as a whole; and thousands of items must not mean thousands of
    # fetches from one request.
    for name, reason in (("webhook", "give `webhook` on the batch, not on its items"),
                         ("image_url", "image URLs are not taken in batches; give the image "
                                       "as a data URL")):
        if getattr(item, name) is not None:
            errors.add(where([name]), {"msg": reason, "type": "value_error",
                                       "input": getattr(item, name)}, index)
            return
    image_ref = None
    image_size = None
    if item.image is not None:
        upscale = item.input_type == "upscale"
        # An upscale's input keeps its record (see input_image): stored apart from others.
        ref = f"upscale:{item.image}" if upscale else item.image
        image_ref = plan.image_refs.get(ref)
        if item.image in plan.bad_images:
            return
        if image_ref is None:
            try:
                plan.images.append(input_image(image_bytes(item.image), upscale))
            except InvalidRequestError as exc:
                plan.bad_images.add(item.image)
                for error in invalid_request(exc).errors():
                    errors.add(where(list(error["loc"][1:])), error, index)
                return
            image_ref = plan.image_refs[ref] = len(plan.images) - 1
        if upscale and item.scale in (None, *UPSCALE_FACTORS):
            try:  # checked here: the item is checked below with a placeholder image
                check_upscale(plan.images[image_ref].size, item.scale or 2)
            except InvalidRequestError as exc:
                for error in invalid_request(exc).errors():
                    errors.add(where(list(error["loc"][1:])), error, index)
                return
        item = item.model_copy(update={"image": _PLACEHOLDER})
        image_size = plan.images[image_ref].size  # a mask must have the image's, not 1x1
    try:
        request, _, references = build_request(item, None, settings, styles,
                                               plan.decoded, image_size)
    except RequestValidationError as exc:
        for error in exc.errors():
            errors.add(where(list(error["loc"][1:])), error, index)  # loc[0] is "body"
        return
    if errors.entries:
        return  # after the first bad item, only checking goes on
    own = "output_format" in item.model_fields_set
    output_format = item.output_format if own or default_format is None else default_format
    plan.items.append(PlannedItem(request=request, output_format=output_format,
                                  image=image_ref, references=references))


def create_batch(plan: BatchPlan, database: Database, storage: Storage,
                 queue: TaskQueue, settings: Settings, owner: str | None = None) -> str:
    """Admitted (see :func:`admit_batch`), inputs stored (each distinct image once), then
    the batch and its jobs in one transaction, then one message per job on the batch queue.
    Blocking."""
    # A first look before any input is stored: most refusals end here.
    with database.session() as session:
        admit_batch(session, settings, owner, len(plan.items))
    batch_id = uuid.uuid4().hex
    keys: list[str] = []
    try:
        for number, image in enumerate(plan.images):
            key = input_key(f"{batch_id}-{number}")
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=1)
            storage.put(key, buffer.getvalue(), "image/png")
            keys.append(key)
        # Each distinct reference once, however many items name it.
        store_references(storage, {sha256: image for planned in plan.items
                                   for sha256, image in planned.references.images.items()})
    except StorageError as exc:
        logger.error("batch %s: input image not stored: %s", batch_id, exc)
        raise ApiError(503, "image storage is unavailable; try again later",
                       headers={"Retry-After": "10"}) from None
    items = []
    for planned in plan.items:
        stored = planned.references.stored(planned.request)  # no image bytes in the row
        items.append(NewItem(job_id=new_job_id(), model=planned.request.model or "",
                             request=stored, output_format=planned.output_format,
                             input_key=keys[planned.image] if planned.image is not None
                             else None))
    # The look that counts, in the insert's transaction. One batch at a time per process
    # (and per key across replicas, by the key row's lock): otherwise one key's batches
    # sent together would each see the others' items not yet there, and all pass.
    with _ADMISSION, database.session() as session:
        admit_batch(session, settings, owner, len(items), lock=True)
        check_served(session, settings, [item.model for item in items])
        batch_store.create_batch(session, batch_id=batch_id, name=plan.name,
                                 output_format=plan.output_format, items=items,
                                 owner=owner, webhook_url=plan.webhook_url)
    try:
        queue.enqueue_many([item.job_id for item in items],
                           models=[item.model for item in items])
    except EnqueueError as exc:
        logger.error("batch %s: %d of %d items queued: %s", batch_id, exc.sent, len(items), exc)
        with database.session() as session:
            batch_store.fail_unsent(session, batch_id, exc.sent, NOT_QUEUED)
        raise ApiError(503, "the job queue is unavailable; try again later",
                       headers={"Retry-After": "10"}, batch_id=batch_id) from None
    return batch_id
