"""docker-compose.yml as Docker Compose itself reads it.

``docker-compose -f docker-compose.yml config`` (Debian's ``docker-compose``; scripts/test
installs it) validates the file against the Compose schema, merges the ``x-spec2fractal``
anchor into each service and fills in every ``${VARIABLE:-default}``. What it prints is what
``docker compose up`` would run; this checks that against the code: the commands parse as our
CLIs parse them, every SPEC2FRACTAL_* value parses as Settings, and every URL, credential,
port and volume names what the service it points at really has. No Docker engine is needed:
nothing runs.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.services import PostgresServer
from workers.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "SPEC2FRACTAL_"
OURS = ("api", "worker", "flower")  # the services that run this project's image
BACKING = {"redis": 6379, "postgres": 5432, "minio": 9000}  # service → the port it serves
# The variables the file offers for operators to set (its ${...}), set to values unlike
# every default: each must reach every place that has to agree on it.
CUSTOM = {"POSTGRES_PASSWORD": "pg-Secret-42", "MINIO_ROOT_USER": "ops-user",
          "MINIO_ROOT_PASSWORD": "minio-Secret-42", "SPEC2FRACTAL_MODEL": "stabilityai/sdxl",
          "SPEC2FRACTAL_WARMUP_MODEL": "stabilityai/sdxl",
          "SPEC2FRACTAL_PUBLIC_URL": "https://fractals.example",
          "SPEC2FRACTAL_S3_PUBLIC_ENDPOINT_URL": "https://images.example"}


# --------------------------------------------------------------------------- docker-compose


def compose_config(variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``docker-compose -f docker-compose.yml config``, parsed, with only ``variables`` in the
    environment (none of this machine's own); fails on any complaint, such as a variable
    that is used but has no default."""
    binary = shutil.which("docker-compose")
    assert binary, ("docker-compose is not on PATH: apt-get install docker-compose "
                    "(scripts/test does)")
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": tempfile.gettempdir(),
           "LANG": "C.UTF-8", **(variables or {})}
    result = subprocess.run([binary, "-f", "docker-compose.yml", "config"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"docker-compose rejects the file:\n{result.stderr}"
    assert result.stderr.strip() == "", f"docker-compose complains:\n{result.stderr}"
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict) and config.get("services"), result.stdout
    return config


@cache
def default_config() -> dict[str, Any]:
    """What a fresh checkout runs: no variable set, no .env file."""
    assert not (ROOT / ".env").exists(), "a .env file would change what is checked here"
    return compose_config()


def services() -> dict[str, dict[str, Any]]:
    return default_config()["services"]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # Compose may print either form
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command(service: Mapping[str, Any]) -> list[str]:
    value = service.get("command")
    assert value, "no command"
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def ports(service: Mapping[str, Any]) -> list[tuple[str | None, int, int]]:
    """(host address, published port, container port) of each published port, from the short
    (``[ip:]published:target[/proto]``) or the long form."""
    found = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            found.append((entry.get("host_ip"), int(entry["published"]), int(entry["target"])))
            continue
        *host, published, target = str(entry).split("/")[0].split(":")
        found.append((host[0] if host else None, int(published), int(target)))
    return found


def volumes(service: Mapping[str, Any]) -> dict[str, str]:
    """Mount point → source (a named volume or a host path), from either form."""
    mounts = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mounts[entry["target"]] = entry.get("source", "")
        else:
            source, target, *_ = str(entry).split(":")
            mounts[target] = source
    return mounts


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the service's process builds them: from its environment and nothing else."""
    for key in list(os.environ):
        if key.startswith(PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(PREFIX):
            monkeypatch.setenv(key, value)
    return Settings()


# --------------------------------------------------------------------------- the commands


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def parse_spec2fractal(argv: list[str]) -> dict[str, Any]:
    """``spec2fractal SUBCOMMAND OPTIONS`` parsed by the CLI itself (names, types and ranges
    checked), without running it; its parameters."""
    import typer

    script = pyproject()["project"]["scripts"]["spec2fractal"]
    module_name, _, function = script.partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, function)), script
    group = typer.main.get_command(module.app)
    name, *options = argv[1:]
    subcommand = group.commands.get(name)  # type: ignore[attr-defined]
    assert subcommand is not None, f"spec2fractal has no {name!r} command"
    try:
        return dict(subcommand.make_context(f"spec2fractal {name}", list(options)).params)
    except typer.TyperException as exc:  # a usage error: an unknown option, a bad value
        pytest.fail(f"`{shlex.join(argv)}` does not parse: {exc}")


def check_celery(argv: list[str]) -> None:
    """``celery -A MODULE SUBCOMMAND ...``: the module's Celery app, and a subcommand celery
    knows or that an extra the image installs provides (``flower``)."""
    from celery import Celery
    from celery.bin.celery import celery as celery_cli

    assert argv[1] in ("-A", "--app"), argv
    module, subcommand = argv[2], argv[3]
    assert isinstance(getattr(importlib.import_module(module), "app", None), Celery), \
        f"{module} has no Celery app"
    import click

    if celery_cli.get_command(click.Context(celery_cli), subcommand) is not None:
        return
    assert subcommand == "flower", f"celery has no {subcommand!r} command"
    dockerfile = (ROOT / "Dockerfile").read_text()
    extras = {extra for match in re.finditer(r"pip install [^\n&]*\.\[([\w,-]+)\]", dockerfile)
              for extra in match.group(1).split(",")}
    providing = [extra for extra, requirements in
                 pyproject()["project"]["optional-dependencies"].items()
                 if any(re.match(r"flower\b", requirement) for requirement in requirements)]
    assert set(providing) & extras, "`celery flower` needs an extra with flower that the " \
                                    "Dockerfile installs"


# --------------------------------------------------------------------------- tests


def test_compose_accepts_the_file_and_it_has_every_service() -> None:
    names = set(services())
    assert {*OURS, *BACKING, "minio-init"} <= names, names
    for name in OURS:  # our image, built from this repository
        build = services()[name]["build"]
        context = build["context"] if isinstance(build, dict) else build
        assert Path(context).resolve() == ROOT
        assert services()[name]["image"] == services()["api"]["image"]


def test_the_api_command_is_spec2fractal_serve_on_the_published_port() -> None:
    api = services()["api"]
    argv = command(api)
    assert argv[:2] == ["spec2fractal", "serve"]
    params = parse_spec2fractal(argv)
    assert params["host"] == "0.0.0.0"  # reachable from the published port; keys required
    assert Settings(host=params["host"]).auth_required
    assert [target for _, _, target in ports(api)] == [params["port"]]
    health = " ".join(api["healthcheck"]["test"])
    assert f"127.0.0.1:{params['port']}/" in health


def test_the_worker_command_is_spec2fractal_worker() -> None:
    argv = command(services()["worker"])
    assert argv[:2] == ["spec2fractal", "worker"]
    parse_spec2fractal(argv)
    assert not ports(services()["worker"]), "a worker serves nothing"


def test_flower_runs_celery_on_our_app_on_loopback_only() -> None:
    flower = services()["flower"]
    argv = command(flower)
    assert argv[0] == "celery"
    check_celery(argv)
    port = next(int(arg.split("=", 1)[1]) for arg in argv if arg.startswith("--port="))
    assert ports(flower) == [("127.0.0.1", port, port)], "flower has no authentication"


@pytest.mark.parametrize("name", OURS)
def test_every_spec2fractal_variable_is_a_setting_and_parses(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = environment(services()[name])
    fields = set(Settings.model_fields)
    unknown = [key for key in env
               if key.startswith(PREFIX) and key.removeprefix(PREFIX).lower() not in fields]
    assert unknown == [], f"{name}: not fields of workers.settings.Settings"
    settings = settings_from(env, monkeypatch)
    assert not settings.embedded, "the compose stack is the distributed shape"
    assert settings.broker_url and settings.database_url
    assert settings.storage_url and settings.storage_url.startswith("s3://")


@pytest.mark.parametrize("name", OURS)
def test_every_url_points_at_its_service(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(environment(services()[name]), monkeypatch)
    for url, service in ((settings.broker_url, "redis"), (settings.database_url, "postgres"),
                         (settings.s3_endpoint_url, "minio")):
        parts = urlsplit(url)
        assert parts.hostname == service, f"{name}: {url} is not the {service} service"
        assert (parts.port or BACKING[service]) == BACKING[service], url
    assert urlsplit(settings.broker_url).scheme == "redis"


def test_the_services_agree_on_one_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """API, workers and flower read and write the same jobs, queue and bucket."""
    shared = ("broker_url", "database_url", "storage_url", "s3_endpoint_url", "s3_region",
              "s3_public_endpoint_url", "model", "task_time_limit", "lora_dir")
    seen = {name: settings_from(environment(services()[name]), monkeypatch) for name in OURS}
    for field in shared:
        values = {name: getattr(settings, field) for name, settings in seen.items()}
        assert len(set(values.values())) == 1, f"{field} differs: {values}"
    credentials = {name: (environment(services()[name]).get("AWS_ACCESS_KEY_ID"),
                          environment(services()[name]).get("AWS_SECRET_ACCESS_KEY"))
                   for name in OURS}
    assert len(set(credentials.values())) == 1 and all(credentials["api"]), credentials


@pytest.mark.parametrize("variables", [{}, CUSTOM], ids=["defaults", "custom"])
def test_credentials_match_the_services_that_check_them(
        variables: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """With the defaults and with every variable set, the database URL logs in as the user
    PostgreSQL creates, to the database it creates, and the S3 keys are MinIO's root user."""
    config = compose_config(variables) if variables else default_config()
    postgres, minio = config["services"]["postgres"], config["services"]["minio"]
    pg_env, minio_env = environment(postgres), environment(minio)
    for name in OURS:
        env = environment(config["services"][name])
        url = urlsplit(settings_from(env, monkeypatch).database_url)
        assert (url.username, url.password, url.path.lstrip("/")) == (
            pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"]), name
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
            minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"]), name
    assert environment(config["services"]["minio-init"]) == {
        key: minio_env[key] for key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")}
    for key, value in variables.items():  # each reaches every service that reads it
        if key.startswith(PREFIX):
            readers = [name for name in OURS if key in environment(services()[name])]
            assert readers, f"{key} is offered but no service reads it"
            for name in readers:
                assert environment(config["services"][name])[key] == value, (name, key)
    check = " ".join(postgres["healthcheck"]["test"])
    assert f"-U {pg_env['POSTGRES_USER']}" in check and f"-d {pg_env['POSTGRES_DB']}" in check


def test_the_bucket_minio_init_makes_is_the_storage_url() -> None:
    bucket = Settings(storage_url=environment(services()["api"])[PREFIX + "STORAGE_URL"]) \
        .storage_url.removeprefix("s3://").split("/")[0]  # type: ignore[union-attr]
    init = services()["minio-init"]
    script = " ".join(command(init))
    endpoint = environment(services()["api"])[PREFIX + "S3_ENDPOINT_URL"]
    assert re.search(rf"mc alias set (\S+) {re.escape(endpoint)} ", script), script
    alias = re.search(r"mc alias set (\S+) ", script).group(1)  # type: ignore[union-attr]
    assert re.search(rf"mc mb (--ignore-existing )?{alias}/{re.escape(bucket)}\b", script)
    assert re.search(rf"mc anonymous set none {alias}/{re.escape(bucket)}\b", script)
    for name in ("api", "worker"):
        assert services()[name]["depends_on"]["minio-init"] == {
            "condition": "service_completed_successfully"}
        for backing in ("redis", "postgres"):
            assert services()[name]["depends_on"][backing] == {"condition": "service_healthy"}


def test_presigned_urls_name_the_published_minio_port() -> None:
    public = urlsplit(environment(services()["api"])[PREFIX + "S3_PUBLIC_ENDPOINT_URL"])
    published = {published for _, published, target in ports(services()["minio"])
                 if target == BACKING["minio"]}
    assert public.port in published, (public.geturl(), published)
    api_url = urlsplit(environment(services()["api"])[PREFIX + "PUBLIC_URL"])
    assert api_url.port in {published for _, published, _ in ports(services()["api"])}


def test_data_lives_on_declared_volumes_where_each_image_keeps_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    declared = set(default_config().get("volumes") or {})
    expected = {
        "postgres": "/var/lib/postgresql/data",  # the postgres image's PGDATA
        "redis": "/data",  # the redis image's working folder: its append-only file
        "minio": "/data",
        "worker": "/models",  # HF_HOME: models downloaded once, kept across new images
    }
    for name, target in expected.items():
        mounts = volumes(services()[name])
        assert target in mounts, f"{name}: nothing mounted at {target} ({mounts})"
        assert mounts[target] in declared, f"{name}: {mounts[target]} is not a named volume"
    # One LoRA folder: the API lists and takes uploads in it, the workers load from it.
    for name in ("api", "worker"):
        folder = str(settings_from(environment(services()[name]), monkeypatch)
                     .lora_dir)
        mounts = volumes(services()[name])
        assert mounts.get(folder) == "loras" and "loras" in declared, (name, mounts)
    assert command(services()["minio"])[:2] == ["server", "/data"]
    assert environment(services()["worker"])["HF_HOME"] == "/models"
    assert "--appendonly" in command(services()["redis"])


@pytest.fixture
def compose_database(postgres_server: PostgresServer) -> Iterator[str]:
    """The compose file's database URL, pointed at this session's PostgreSQL: its user and
    password made there, and its database, owned by that user (as the postgres image does)."""
    url = urlsplit(environment(services()["api"])[PREFIX + "DATABASE_URL"])
    user, password, name = url.username, url.password, url.path.lstrip("/")
    with postgres_server.connect() as connection:
        connection.execute(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'")
        connection.execute(f'CREATE DATABASE "{name}" OWNER "{user}"')
    try:
        yield url._replace(netloc=f"{user}:{password}@{postgres_server.host}:"
                                  f"{postgres_server.port}").geturl()
    finally:
        postgres_server.drop_database(name)
        with postgres_server.connect() as connection:
            connection.execute(f'DROP ROLE "{user}"')


def test_the_compose_database_url_works_with_postgresql(compose_database: str) -> None:
    """Its driver is installed and speaks to PostgreSQL; the schema is made by the user the
    URL names, and the job store works."""
    from workers.db import Database
    from workers.db import jobs as job_store

    database = Database(compose_database)
    try:
        database.migrate()
        with database.session() as session:
            job_store.create_job(session, job_id="compose", model="fractal", request={})
            assert job_store.start_job(session, "compose") is not None
    finally:
        database.engine.dispose()
