"""The Celery application. Configured from Settings when first used, never at import time.

Run a worker with ``spec2fractal worker`` (or ``celery -A workers.celery_app worker``).
The API sends tasks by name through :func:`enqueue_render`, so it never imports task code.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

from celery import Celery
from celery.worker import state as worker_state
from kombu import Queue
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps
from kombu.utils.scheduling import FairCycle

from workers.datagrams import DatagramSender, DatagramWaker
from workers.db.models import BATCH_QUEUE, INTERACTIVE_QUEUE
from workers.settings import Settings, get_settings

__all__ = ["BATCH_QUEUE", "QUEUE", "QUEUES", "RENDER_TASK", "app", "celery_config",
           "enqueue_render"]

RENDER_TASK = "spec2fractal.render"
QUEUE = INTERACTIVE_QUEUE  # POST /generate
# Workers consume these in this order, and always look at the first one first
# (``queue_order_strategy: priority``): a batch item starts only when no interactive job waits.
QUEUES = (INTERACTIVE_QUEUE, BATCH_QUEUE)
FILE_TRANSPORT = f"{__name__}:PriorityFileTransport"  # used by the embedded mode
WAKE_FOLDER = "wake"  # beside the queue's messages: the ports of waiting workers


class _InOrderCycle(FairCycle):
    """Every poll starts at the first queue: kombu's ``priority`` order for virtual channels."""

    def get(self, callback, **kwargs):  # type: ignore[no-untyped-def]
        self.pos = 0
        return super().get(callback, **kwargs)


class _PriorityFileChannel(filesystem.Channel):
    # Redis reads ``queue_order_strategy``; kombu's virtual channels (the file queue among
    # them) ignore it and round-robin between queues. This channel honours "priority".
    queue_order_strategy = "round_robin"
    from_transport_options = (*filesystem.Channel.from_transport_options,
                              "queue_order_strategy")

    def _reset_cycle(self) -> None:
        if self.queue_order_strategy == "priority":
            self._cycle = _InOrderCycle(self._get_and_deliver, self._active_queues,
                                        Empty)
        else:
            super()._reset_cycle()

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        """Write the message whole under a name no reader matches, then rename it into place.

        kombu creates the message file and then writes it; a worker polling at that moment
        reads an empty file and dies on the JSON. A rename within a folder is atomic.
        """
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".partial-{name}")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc
        self.connection.wake_workers()

    def queue_bind(self, queue: str, exchange: str | None = None, routing_key: str = "",
                   arguments: Any = None, **kwargs: Any) -> None:
        """Bind, and make sure the binding is in the exchange file before returning.

        kombu keeps this transport's bindings in one process-wide table and writes the file
        only for the first connection that declares one. Another connection of the process
        declaring at that moment skips its own write and may publish before the file has
        the binding: kombu finds no queue for the message and drops it.
        """
        super().queue_bind(queue, exchange, routing_key, arguments, **kwargs)
        exchange = exchange or "amq.direct"
        meta = self.typeof(exchange).prepare_bind(queue, exchange, routing_key, arguments)
        self._queue_bind(exchange, *meta)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        """Add a binding to the exchange file by whole-file replacement, under a lock file.

        kombu truncates the exchange file before it locks it, so a process reading the table
        at that moment finds it empty and fails on the JSON.
        """
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(exist_ok=True)
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with open(f"{file}.lock", "a") as guard:
            filesystem.lock(guard, filesystem.LOCK_EX)
            try:
                table = [filesystem.exchange_queue_t(*row) for row in self.get_table(exchange)]
                if binding in table:
                    return
                partial = f"{file}.{uuid.uuid4().hex}.partial"
                with open(partial, "wb") as handle:
                    handle.write(str_to_bytes(dumps([binding, *table])))
                os.replace(partial, file)
            except OSError as exc:
                raise ChannelError(f"Cannot open {file}") from exc
            finally:
                filesystem.unlock(guard)


def _shutting_down() -> bool:
    # Celery sets these to the exit code, 0 included: unset is None (or False).
    return any(flag is not None and flag is not False
               for flag in (worker_state.should_stop, worker_state.should_terminate))


class PriorityFileTransport(filesystem.Transport):
    """kombu's filesystem transport with ``queue_order_strategy`` support, whole writes, and
    wake-ups: a sender pokes the waiting workers (a loopback datagram) after each message, so
    a worker takes it at once instead of at its next look at the folder; the looks remain,
    rarer, for a poke that went astray."""

    Channel = _PriorityFileChannel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sender: DatagramSender | None = None
        self._waker: DatagramWaker | None = None

    def _wake_folder(self) -> Path:
        options = self.client.transport_options
        return Path(options["data_folder_out"]).parent / WAKE_FOLDER

    def wake_workers(self) -> None:
        if self._sender is None:
            self._sender = DatagramSender(self._wake_folder())
        self._sender.send([b"message"])

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        # kombu's loop, with the sleep between looks replaced by a wait for a poke.
        if self._waker is None:
            self._waker = DatagramWaker(self._wake_folder())
        started = monotonic()
        interval = self.polling_interval or 0.0
        if timeout is not None:
            interval = min(interval, timeout)
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                if timeout is not None and monotonic() - started >= timeout:
                    raise TimeoutError() from None
                if _shutting_down():
                    # Celery's loop drains once more after a shutdown signal; with nothing
                    # to take, waiting out its timeout would only delay the exit by seconds.
                    raise TimeoutError() from None
                self._waker.wait(interval)

    def close_connection(self, connection: Any) -> None:
        if self._waker is not None:
            self._waker.close()
            self._waker = None
        super().close_connection(connection)


def celery_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker_url": settings.resolved_broker_url,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": QUEUE,
        # A worker started without -Q consumes both, interactive first (-Q renders,batch).
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,  # the database is the truth about a job
        # A job survives its worker: acknowledged only when done, re-queued if the worker dies.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Redis gone for a moment: the render in hand goes on (the job row is the truth);
        # its unacknowledged message comes back later and finds the job finished.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        "worker_hijack_root_logger": False,
        "include": ["workers.tasks", "workers.webhook_tasks"],
    }
    if settings.embedded:
        folder = settings.queue_dir
        for sub in ("messages", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_transport"] = FILE_TRANSPORT
        config["broker_transport_options"] = {
            "queue_order_strategy": "priority",
            "data_folder_in": str(folder / "messages"),
            "data_folder_out": str(folder / "messages"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),  # else kombu writes into the cwd
            "store_processed": False,
            # Senders poke waiting workers; a look at the folder is only the fallback.
            "polling_interval": 0.25,
        }
    else:
        # Redis re-delivers an unacknowledged task after this long: longer than any render.
        config["broker_transport_options"] = {
            "visibility_timeout": settings.task_time_limit * 2,
            "queue_order_strategy": "priority",  # BRPOP on the queues in -Q order
        }
    return config


app = Celery("spec2fractal", set_as_current=False)
app.add_defaults(lambda: celery_config(get_settings()))


def enqueue_render(job_id: str, queue: str = QUEUE) -> None:
    """Queue a job by id: the payload is the id alone, never image bytes."""
    app.send_task(RENDER_TASK, args=[job_id], queue=queue)
