"""The embedded mode's file queue under a producer and a consumer racing each other."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
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


def test_a_waiting_consumer_is_poked_instead_of_polling(tmp_path: Path) -> None:
    """With looks at the folder 5 s apart, a message still arrives at once: the sender pokes."""
    transport = "workers.celery_app:PriorityFileTransport"
    name = f"poke-{uuid.uuid4().hex[:8]}"
    options = {**_options(tmp_path), "polling_interval": 5.0}
    arrived: list[float] = []

    def consume() -> None:
        with Connection("filesystem://", transport=transport,
                        transport_options=options) as connection:
            queue = connection.SimpleQueue(name)
            for _ in range(3):
                queue.get(timeout=20).ack()
                arrived.append(time.monotonic())

    consumer = threading.Thread(target=consume)
    consumer.start()
    delays = []
    with Connection("filesystem://", transport=transport,
                    transport_options=options) as connection:
        queue = connection.SimpleQueue(name)
        time.sleep(1.0)  # the consumer is waiting between looks
        for i in range(3):
            sent = time.monotonic()
            queue.put({"i": i})
            while len(arrived) <= i and time.monotonic() - sent < 20:
                time.sleep(0.005)
            delays.append(arrived[i] - sent)
            time.sleep(0.5)
    consumer.join(30)
    assert max(delays) < 1.0, delays


def test_port_files_of_dead_processes_are_cleared(tmp_path: Path) -> None:
    from workers.datagrams import DatagramSender, DatagramWaker, register_port

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / f"{dead}-0000.port").write_text("9")
    waker = DatagramWaker(tmp_path)
    assert [path.name for path in tmp_path.glob("*.port")] == [waker.registration.name]
    DatagramSender(tmp_path).send([b"hello"])
    assert waker.wait(2.0) is True
    assert waker.wait(0.05) is False  # every pending poke was used up
    waker.close()
    assert list(tmp_path.glob("*.port")) == []
    assert register_port(tmp_path, 1).exists()
