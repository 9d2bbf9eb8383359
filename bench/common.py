"""Helpers the bench scripts share (run them as ``python bench/NAME.py``)."""

from __future__ import annotations

import socket

__all__ = ["free_port", "percentile"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
