"""The embedded mode's file queue under a producer and a consumer racing each other."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from kombu import Connection

MESSAGES = 2000


def _options(folder: Path) -> dict[str, object]:
    for sub in ("messages", "processed", "control"):
        (folder / sub).mkdir(exist_ok=True)
    return {"data_folder_in": str(folder / "messages"),
            "data_folder_out": str(folder / "messages"),
            "processed_folder": str(folder / "processed"), "store_processed": False,
            "control_folder": str(folder / "control"), "polling_interval": 0.001}


@pytest.mark.parametrize("run", range(3))  # the races are timing-bound: give them chances
def test_a_consumer_never_reads_a_half_written_message(tmp_path: Path, run: int) -> None:
    # kombu's own filesystem transport fails this: an empty message or exchange file read
    # while it is being written (ours writes whole files and renames them into place), and
    # early messages dropped when the consumer's connection recorded the binding in kombu's
    # process-wide table before writing it (ours writes it on every bind).
    transport = "workers.celery_app:PriorityFileTransport"
    # kombu remembers declared queues per transport class and process (not per folder):
    # a name of its own makes this test declare and bind in its own folder.
    name = f"race-{uuid.uuid4().hex[:8]}"
    options = _options(tmp_path)
    received: list[int] = []
    errors: list[BaseException] = []

    def consume() -> None:
        with Connection("filesystem://", transport=transport,
                        transport_options=options) as connection:
            queue = connection.SimpleQueue(name)
            try:
                while len(received) < MESSAGES:
                    message = queue.get(timeout=10)
                    received.append(message.payload["i"])
                    message.ack()
            except BaseException as exc:  # a torn message surfaces as a JSON error here
                errors.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    with Connection("filesystem://", transport=transport,
                    transport_options=options) as connection:
        queue = connection.SimpleQueue(name)
        for i in range(MESSAGES):
            queue.put({"i": i, "padding": "x" * 4096})
    consumer.join(60)
    assert not errors, (errors, len(received))
    assert sorted(received) == list(range(MESSAGES))
