"""Run a batch: skip finished items, render the rest on worker threads, record each attempt.

Worker threads take items from a queue, render, write the images and then the manifest line.
Ctrl-C (or SIGTERM) reaches the main thread only: it sets ``stop``, so no new item starts and
renders in flight are abandoned at their next step (a service job is cancelled); an item whose
render already finished is still written whole. A second Ctrl-C leaves at once; even then the
manifest stays consistent (see :mod:`spec2fractal.batch.manifest`).
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fractal.errors import InvalidRequestError
from spec2fractal.batch.items import EXTENSIONS, Item, read_items
from spec2fractal.batch.manifest import BatchError, Manifest, write_file_atomic
from spec2fractal.batch.render import Abandoned, ItemFailed, Output, Renderer

__all__ = ["BatchOptions", "Summary", "run_batch"]

EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class BatchOptions:
    file: Path
    out: Path
    server: str | None = None
    concurrency: int | None = None  # default: 1 locally, 4 through a server
    model: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)  # e.g. width/height from --size
    api_key: str | None = None  # for a server that asks for one
    lora_dir: Path | None = None  # LoRA files, rendering in this process


@dataclass
class Summary:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0  # finished by an earlier run, or the same request earlier in the file
    images: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return 1 if self.failed else 0


def check_file(path: Path) -> None:
    if path.suffix.lower() not in EXTENSIONS:
        raise InvalidRequestError("FILE", str(path), "must end in .txt, .csv or .jsonl")
    if not path.is_file():
        raise BatchError(f"{path}: no such file" if not path.exists() else
                         f"{path}: not a file")


def make_renderer(options: BatchOptions, workers: int) -> Renderer:
    if options.server:
        from spec2fractal.batch.service import ServiceRenderer

        return ServiceRenderer(options.server, options.model, workers,
                               api_key=options.api_key)
    from spec2fractal.batch.render import LocalRenderer

    return LocalRenderer(options.model, workers, options.lora_dir)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """``kill`` (SIGTERM) stops a batch as Ctrl-C does: cleanly."""
    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Run:
    """The shared state of one run: the queue, the manifest, the counts, the progress bar."""

    def __init__(self, manifest: Manifest, renderer: Renderer, progress: Progress,
                 task: Any, summary: Summary, console: Console) -> None:
        self.manifest = manifest
        self.renderer = renderer
        self.progress = progress
        self.task = task
        self.summary = summary
        self.console = console
        self.waiting: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.fatal: Exception | None = None

    def record(self, item: Item, status: str, *, outputs: list[Output] | None = None,
               error: str | None = None, duration: float = 0.0) -> None:
        """Images first (each renamed into place), then the line that points at them."""
        files: list[str] = []
        if outputs:
            names = item.file_names()
            if len(names) != len(outputs):
                status, error = "failed", f"expected {len(names)} images, got {len(outputs)}"
                outputs = []
            for name, output in zip(names, outputs, strict=False):
                write_file_atomic(self.manifest.folder / name, output.data)
                files.append(name)
        self.manifest.append({
            "index": item.index, "line": item.line, "hash": item.hash, "status": status,
            "parameters": item.parameters(), "model": self.renderer.name,
            "seeds": [output.seed for output in outputs or []],
            "files": files, "error": error, "duration": round(duration, 3),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        })
        with self.lock:
            if status == "succeeded":
                self.summary.succeeded += 1
                self.summary.images += len(files)
            else:
                self.summary.failed += 1
                self.progress.console.print(
                    f"[red]failed[/] item {item.index} (line {item.line}): {escape(error or '')}",
                    highlight=False)
            elapsed = time.monotonic() - self.started
            rate = self.summary.images / elapsed if elapsed > 0 else 0.0
            self.progress.update(self.task, advance=1, rate=f"{rate:.1f} images/s",
                                 failed=f" [red]{self.summary.failed} failed[/]"
                                 if self.summary.failed else "")

    def work(self, worker: int) -> None:
        try:
            self._work(worker)
        except Exception as exc:  # writing failed (disk full, folder gone): stop the batch
            self.fatal = exc
            self.stop.set()

    def _work(self, worker: int) -> None:
        while not self.stop.is_set():
            try:
                item = self.waiting.get_nowait()
            except queue.Empty:
                return
            if item.request is None:
                self.record(item, "failed", error=item.error)
                continue
            begun = time.monotonic()
            try:
                outputs = self.renderer.render(item, worker, self.stop)
            except Abandoned:
                return
            except ItemFailed as exc:
                self.record(item, "failed", error=str(exc), duration=time.monotonic() - begun)
            except Exception as exc:  # a bug or an odd failure: this item's, not the batch's
                message = f"{type(exc).__name__}: {exc}".splitlines()[0]
                self.record(item, "failed", error=message, duration=time.monotonic() - begun)
            else:
                self.record(item, "succeeded", outputs=outputs,
                            duration=time.monotonic() - begun)


def _wait(threads: list[threading.Thread]) -> None:
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)  # short joins, so Ctrl-C reaches this thread promptly


def run_batch(options: BatchOptions, *, console: Console, errors: Console) -> Summary:
    """Everything but argument parsing. Raises BatchError/InvalidRequestError before any work
    when the batch cannot run (bad file, server unreachable, folder in use)."""
    check_file(options.file)
    concurrency = options.concurrency or (4 if options.server else 1)
    if concurrency < 1:
        raise InvalidRequestError("--concurrency", concurrency, "must be at least 1")
    summary = Summary()
    manifest = Manifest(options.out).open()
    left_running = False
    try:
        # The hash needs the model's name, so the renderer (and a local model) comes first.
        with errors.status(f"Loading {options.model or 'the fractal engine'}"
                           if not options.server else f"Connecting to {options.server}"):
            renderer = make_renderer(options, concurrency)
        try:
            items = read_items(options.file, model=renderer.name, defaults=options.defaults)
            summary.total = len(items)
            finished = manifest.finished(item.hash for item in items)
            pending: list[Item] = []
            seen: set[str] = set()
            done = repeats = 0
            for item in items:
                if item.hash in finished:
                    done += 1
                elif item.hash in seen:
                    repeats += 1  # the same request again: one render serves both
                else:
                    pending.append(item)
                    if item.request is not None:
                        seen.add(item.hash)
            summary.skipped = done + repeats
            if done:
                console.print(f"{done} of {summary.total} items already done; skipping them",
                              highlight=False)
            if repeats:
                console.print(f"{repeats} items repeat an earlier one; rendering each once",
                              highlight=False)
            left_running = not _render(pending, manifest, renderer, concurrency, summary,
                                       errors)
        finally:
            if not left_running:
                renderer.close()
    finally:
        # A thread still rendering (after a second Ctrl-C) may yet write a whole line: its
        # descriptor stays open until the process ends, never reused for another file.
        if not left_running:
            manifest.close()
    return summary


def _render(pending: list[Item], manifest: Manifest, renderer: Renderer, concurrency: int,
            summary: Summary, errors: Console) -> bool:
    """Render the pending items; False if worker threads were left running (forced exit)."""
    progress = Progress(
        TextColumn("Rendering{task.fields[failed]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=errors, transient=False)
    task = progress.add_task("batch", total=summary.total, completed=summary.skipped,
                             rate="", failed="")
    run = _Run(manifest, renderer, progress, task, summary, errors)
    for item in pending:
        run.waiting.put(item)
    threads = [threading.Thread(target=run.work, args=(worker,), daemon=True,
                                name=f"batch-{worker}")
               for worker in range(min(concurrency, len(pending)))]
    with progress, _sigterm_as_interrupt():
        for thread in threads:
            thread.start()
        try:
            _wait(threads)
        except KeyboardInterrupt:
            run.stop.set()
            summary.interrupted = True
            progress.console.print("[yellow]stopping[/]: no new items; unfinished ones are "
                                   "dropped (Ctrl-C again to leave at once)")
            # A second Ctrl-C leaves the daemon threads behind: a line or an image cut off
            # there is never a complete one, so the manifest stays consistent.
            with contextlib.suppress(KeyboardInterrupt):
                _wait(threads)
    summary.seconds = time.monotonic() - run.started
    if run.fatal is not None:
        _wait(threads)
        raise BatchError(f"cannot write to {manifest.folder}: {run.fatal}")
    return not any(thread.is_alive() for thread in threads)
