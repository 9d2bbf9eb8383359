"""How ``spec2fractal serve`` runs uvicorn: its timeouts and connection limits.

uvicorn bounds the wait *between* requests (``timeout_keep_alive``) but not the wait for a
request's headers: a connection that sends half its headers (slowloris), or nothing at all,
is held open for ever. 300 such connections held 300 sockets and their buffers. So the HTTP
protocol here is uvicorn's own with a deadline added: a request's headers must be complete
within ``header_timeout`` seconds of the connection opening or of the request's first byte
(trickling one byte at a time does not move it), and may not pass ``MAX_HEADER_BYTES``
(httptools, unlike h11, sets no limit of its own). A late connection gets a 408 if it sent
anything, and is closed.

A request's body, once its headers are in, is the application's to read; a reverse proxy in
front (nginx, Caddy, a cloud load balancer) bounds that and the number of connections per
client better than any one process can (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from api.limits import MAX_HEADER_BYTES
from workers.settings import Settings

__all__ = ["protocol_class", "uvicorn_options"]

logger = logging.getLogger(__name__)

_RESPONSES = {
    408: b"HTTP/1.1 408 Request Timeout\r\n",
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
}


class _HeaderDeadline:
    """Mixed in before one of uvicorn's HTTP protocols (``H11Protocol``,
    ``HttpToolsProtocol``); both make ``self.cycle`` anew when a request's headers are in."""

    header_timeout: float = 10.0
    max_header_bytes: int = MAX_HEADER_BYTES
    # Set by the protocol underneath:
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()  # a connection that never sends a byte is late too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        waiting = before is None or before.response_complete
        if waiting:
            self._arm()  # the first byte of a request on a kept-alive connection
            self._header_bytes += len(data)
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not before:
            self._disarm()  # a new request: its headers are complete
        elif waiting and self._header_bytes > self.max_header_bytes:
            self._refuse(431, "request headers too large")

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._header_bytes = 0

    def _late(self) -> None:
        self._header_timer = None
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            if self._header_bytes:
                self._refuse(408, "request headers not received in time")
            elif not self.transport.is_closing():
                self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        if self.transport.is_closing():
            return
        logger.debug("closing a connection: %s", message)
        body = message.encode()
        self.transport.write(_RESPONSES[status] + b"content-type: text/plain; charset=utf-8"
                             b"\r\nconnection: close\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()
        self._disarm()


def protocol_class(header_timeout: float, implementation: str = "auto") -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (``auto``: httptools when installed, as uvicorn picks it) with
    the header deadline; pass it as ``http=`` to uvicorn."""
    if implementation == "auto":
        try:
            import httptools  # noqa: F401
        except ImportError:
            implementation = "h11"
        else:
            implementation = "httptools"
    if implementation == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # type: ignore[assignment]
    return type(f"HeaderDeadline{base.__name__}", (_HeaderDeadline, base),
                {"header_timeout": header_timeout})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` that bound what one client can hold."""
    return {
        "http": protocol_class(settings.header_timeout),
        "timeout_keep_alive": settings.keep_alive_timeout,
        "limit_concurrency": settings.max_connections,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
    }
