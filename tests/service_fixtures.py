"""Pytest fixtures over the real services of :mod:`tests.services`, for the whole suite
(``pytest_plugins`` in ``tests/conftest.py``): ``redis_server``, ``postgres_server`` and
``seaweedfs_s3`` (session), ``database_url`` (each test once on SQLite and once on PostgreSQL),
``celery_worker`` and ``render_stack`` (factories), and service logs in the report of a test
that fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.render_stack import RenderStack
from tests.services import (
    CeleryWorker,
    ManagedProcess,
    PostgresServer,
    RedisServer,
    SeaweedS3,
    ServiceError,
    start_celery_worker,
    start_postgres,
    start_redis,
    start_seaweedfs,
)

__all__ = ["DATABASES", "celery_worker", "database_url", "new_database", "postgres_server",
           "redis_server", "render_stack", "seaweedfs_s3", "show_logs_on_failure"]

# The job store's databases: SQLite, the embedded default, and PostgreSQL, the production one.
DATABASES = ("sqlite", "postgresql")

_STARTED: pytest.StashKey[list[ManagedProcess]] = pytest.StashKey()


def show_logs_on_failure(node: pytest.Item, process: ManagedProcess) -> None:
    """Put ``process``'s log tail into ``node``'s report if the test fails (for services a
    wider-scoped fixture started)."""
    started = node.stash.setdefault(_STARTED, [])
    if process not in started:
        started.append(process)


def _fail(exc: ServiceError) -> None:
    pytest.fail(str(exc), pytrace=False)


def _serve(start: Callable[[Path], Any], folder: Path) -> Iterator[Any]:
    """A service for as long as the fixture lives; a start that fails fails the test cleanly."""
    try:
        server = start(folder)
    except ServiceError as exc:
        _fail(exc)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis for the session; tests isolate themselves by database number or key."""
    yield from _serve(start_redis, tmp_path_factory.mktemp("redis"))


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One PostgreSQL for the session; tests isolate themselves with databases of their own
    (``database_url``, :func:`new_database`)."""
    yield from _serve(start_postgres, tmp_path_factory.mktemp("postgres"))


@contextmanager
def new_database(kind: str, request: pytest.FixtureRequest, folder: Path) -> Iterator[str]:
    """The URL of a new, empty job database of ``kind`` (one of :data:`DATABASES`): a SQLite
    file in ``folder``, or a PostgreSQL database of its own in the session's server, dropped
    afterwards. The server starts only when a test first asks for PostgreSQL."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'jobs.db'}"
        return
    assert kind == "postgresql", kind
    server: PostgresServer = request.getfixturevalue("postgres_server")
    show_logs_on_failure(request.node, server.process)
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty job database for one test, on each kind in turn (``[sqlite]``,
    ``[postgresql]``); nothing has migrated it yet."""
    with new_database(request.param, request, tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def seaweedfs_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 gateway for the session; tests use buckets of their own."""
    yield from _serve(start_seaweedfs, tmp_path_factory.mktemp("seaweedfs"))


@pytest.fixture
def celery_worker(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Callable[..., CeleryWorker]]:
    """A factory: ``celery_worker(env, name="worker")`` starts a worker and waits until it is
    ready. Every worker started is stopped when the test ends; a failed test shows their logs.
    """
    folder = tmp_path_factory.mktemp("celery")
    workers: list[CeleryWorker] = []
    started = request.node.stash.setdefault(_STARTED, [])

    def start(env: Mapping[str, str], name: str = "worker", timeout: float = 60) -> CeleryWorker:
        try:
            worker = start_celery_worker(env, folder, name=name, timeout=timeout)
        except ServiceError as exc:
            _fail(exc)
        workers.append(worker)
        started.append(worker.process)
        return worker

    try:
        yield start
    finally:
        for worker in workers:
            worker.stop(grace=5)


@pytest.fixture
def render_stack(request: pytest.FixtureRequest, seaweedfs_s3: SeaweedS3,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RenderStack]]:
    """A factory of :class:`RenderStack`: ``render_stack(appendonly=..., private_s3=...,
    settings={...}, database=...)``. Each stack has a Redis of its own (a fault test may
    crash or flush it), a job database of its own (``database``: "postgresql", the
    production shape, or "sqlite") and a bucket of its own in the session's SeaweedFS, or a
    SeaweedFS of its own with ``private_s3=True`` (a test that stops storage). Everything is
    stopped when the test ends; a failed test shows the logs of every service and worker it
    started.
    """
    stacks: list[RenderStack] = []
    owned: list[Any] = []
    databases = ExitStack()
    started = request.node.stash.setdefault(_STARTED, [])

    def build(*, appendonly: bool = False, private_s3: bool = False,
              settings: Mapping[str, str] | None = None,
              database: str = "postgresql") -> RenderStack:
        folder = tmp_path_factory.mktemp("stack")
        database_url = databases.enter_context(new_database(database, request, folder))
        try:
            redis = start_redis(folder / "redis", appendonly=appendonly,
                                appendfsync="always")
            owned.append(redis)
            s3 = seaweedfs_s3
            if private_s3:
                s3 = start_seaweedfs(folder / "seaweedfs")
                owned.append(s3)
        except ServiceError as exc:
            _fail(exc)
        started.extend(service.process for service in owned)
        stack = RenderStack(redis, s3, folder, bucket=f"faults-{len(stacks)}-"
                            f"{folder.name.lower().replace('_', '-')}", settings=settings,
                            database_url=database_url)
        stack.on_worker = lambda worker: started.append(worker.process)
        stacks.append(stack)
        return stack

    try:
        yield build
    finally:
        for stack in stacks:
            stack.close()
        for service in reversed(owned):
            service.stop()
        databases.close()  # after the workers: nothing is connected any more


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """A failed test that started services gets their log tails in its report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for process in item.stash.get(_STARTED, []):
            report.sections.append((f"{process.name} log", process.log_tail()))
