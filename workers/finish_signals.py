"""Signals that a job finished, from workers to API processes, so a waiting ``POST /generate``
answers the moment its image is stored instead of at its next look at the database; and that
a job started or made progress, so its event streams (``GET /jobs/{id}/events``) look at its
row when it has changed, not every few milliseconds.

A signal is only a wake-up call: the database stays the truth, and an API that misses one
(a restart, a dropped packet) still sees the job at its next look. With a Redis broker the
signal is a Redis pub/sub message; on one machine (the embedded mode), a UDP datagram on
loopback to every API process that registered a port under ``data_dir/signals``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from workers.datagrams import DatagramSender, register_port
from workers.settings import Settings

__all__ = ["CHANNEL", "FinishListener", "Publisher", "listener_for", "progress_signal",
           "publisher_for"]

logger = logging.getLogger(__name__)

CHANNEL = "spec2fractal:finished"
RECONNECT_SECONDS = 1.0
# A progress signal is the job id behind this prefix, on the same channel: a listener that
# does not know it (an older API) finds no one waiting for that name and drops it.
PROGRESS_PREFIX = "progress:"


def progress_signal(job_id: str) -> str:
    """What to publish when a job starts or makes progress (a finish is its bare id)."""
    return PROGRESS_PREFIX + job_id


def _uses_redis(settings: Settings) -> bool:
    return (settings.broker_url or "").startswith(("redis://", "rediss://"))


class Publisher(Protocol):
    def publish(self, job_ids: list[str]) -> None: ...


class RedisPublisher:
    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def publish(self, job_ids: list[str]) -> None:
        if len(job_ids) == 1:
            self._client.publish(CHANNEL, job_ids[0])
            return
        # A batch's jobs start together: one round trip for all their signals.
        with self._client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.publish(CHANNEL, job_id)
            pipe.execute()


class DatagramPublisher:
    """A datagram to every API process registered in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self._sender = DatagramSender(folder)

    def publish(self, job_ids: list[str]) -> None:
        self._sender.send([job_id.encode() for job_id in job_ids])


def publisher_for(settings: Settings) -> Publisher:
    if _uses_redis(settings):
        return RedisPublisher(settings.broker_url or "")
    return DatagramPublisher(settings.data_dir / "signals")


def publish_quietly(publisher: Publisher | None, job_ids: list[str]) -> None:
    """A lost signal only delays an answer; it must never fail a job."""
    if publisher is None or not job_ids:
        return
    try:
        publisher.publish(job_ids)
    except Exception as exc:
        logger.debug("finish signal not sent: %s", exc)


class FinishListener(abc.ABC):
    """Held by an API process; ``with listener.watch(job_id) as finished:`` gives an event
    set when a worker signals that job's end; ``watch(job_id, progress=True)``, one set by
    its start and progress too."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._following: dict[str, set[asyncio.Event]] = {}  # progress too
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watch(self, job_id: str, *, progress: bool = False) -> Iterator[asyncio.Event]:
        # Progress wakes only who asked for it: a sync POST /generate waits for the end,
        # and each needless wake-up would cost it a look at the database.
        table = self._following if progress else self._waiting
        event = asyncio.Event()
        table.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            events = table.get(job_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del table[job_id]

    def _signal(self, name: str) -> None:
        if name.startswith(PROGRESS_PREFIX):
            for event in self._following.get(name[len(PROGRESS_PREFIX):], ()):
                event.set()
            return
        for table in (self._waiting, self._following):
            for event in table.get(name, ()):
                event.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    @abc.abstractmethod
    async def _run(self) -> None: ...


class RedisFinishListener(FinishListener):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    async def _run(self) -> None:
        import redis.asyncio as aioredis

        while True:
            client = aioredis.Redis.from_url(self.url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._signal(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the database looks carry on meanwhile
                logger.warning("finish signals paused: %s", exc)
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_job: Callable[[str], None]) -> None:
        self.on_job = on_job

    def datagram_received(self, data: bytes, addr: Any) -> None:
        with contextlib.suppress(UnicodeDecodeError):
            self.on_job(data.decode())


class DatagramFinishListener(FinishListener):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self._transport: asyncio.DatagramTransport | None = None
        self._registration: Path | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self._signal), local_addr=("127.0.0.1", 0))
        self._transport = transport
        port = transport.get_extra_info("sockname")[1]
        self._registration = register_port(self.folder, port)

    async def _run(self) -> None:  # the event loop reads the socket; nothing to run
        return None

    async def stop(self) -> None:
        if self._registration is not None:
            self._registration.unlink(missing_ok=True)
        if self._transport is not None:
            self._transport.close()


def listener_for(settings: Settings) -> FinishListener:
    if _uses_redis(settings):
        return RedisFinishListener(settings.broker_url or "")
    return DatagramFinishListener(settings.data_dir / "signals")
