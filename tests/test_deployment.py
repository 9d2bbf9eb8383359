"""The Dockerfile and docker-compose.yml checked against the code they deploy.

No Docker engine is needed: the files are parsed and every command, setting, driver and port
they name is looked up in the package, Settings and pyproject.toml.
"""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from workers.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PREFIX = "SPEC2FRACTAL_"
ESSENTIAL = ("BROKER_URL", "DATABASE_URL", "STORAGE_URL", "S3_ENDPOINT_URL")
# SQLAlchemy driver name → the distribution that provides it.
DRIVERS = {"psycopg": "psycopg", "psycopg2": "psycopg2", "asyncpg": "asyncpg",
           "pg8000": "pg8000", "pysqlite": None}


# --------------------------------------------------------------------------- parsing


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}``/``${NAME-default}``/``${NAME}`` with nothing set in the
    environment (what a fresh checkout gets), and ``$$`` → ``$``."""
    value = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}",
                   lambda match: match.group(2) or "", value)
    return value.replace("$$", "$")


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value)) for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    value = service.get("command")
    assert value, "no command"
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def distribution(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower()


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        instruction, _, arguments = current.partition(" ")
        lines.append((instruction.upper(), arguments.strip()))
        current = ""
    return lines


def exec_form(arguments: str) -> list[str]:
    """CMD/ENTRYPOINT arguments as a list; the JSON (exec) form is the only one used."""
    import json

    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(part, str) for part in value), arguments
    return value


def extras_installed_by_dockerfile() -> set[str]:
    extras: set[str] = set()
    for instruction, arguments in dockerfile():
        if instruction == "RUN":
            for match in re.finditer(r"pip install [^&|;]*?[\"']?\.\[([A-Za-z0-9_,\-]+)\]",
                                     arguments):
                extras.update(part.strip() for part in match.group(1).split(","))
    return extras


def declared(name: str) -> str | None:
    """Where pyproject declares distribution ``name`` for the image: "dependencies", an extra
    the Dockerfile installs, or None."""
    project = pyproject()["project"]
    if name in {distribution(req) for req in project.get("dependencies", [])}:
        return "dependencies"
    installed = extras_installed_by_dockerfile()
    for extra, requirements in project.get("optional-dependencies", {}).items():
        if extra in installed and name in {distribution(req) for req in requirements}:
            return f"extra {extra!r}"
    return None


@cache
def cli_commands() -> dict[str, Any]:
    """The ``spec2fractal`` console script's subcommands, as click commands."""
    import typer

    script = pyproject()["project"]["scripts"]["spec2fractal"]
    module_name, _, function = script.partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, function))
    group = typer.main.get_command(module.app)
    return dict(group.commands)  # type: ignore[attr-defined]


def check_command(argv: list[str]) -> None:
    """``argv`` names a real console script, subcommand and options."""
    program, *rest = argv
    if program == "spec2fractal":
        assert "spec2fractal" in pyproject()["project"]["scripts"]
        subcommand, *options = rest
        commands = cli_commands()
        assert subcommand in commands, f"spec2fractal has no {subcommand!r} command"
        known = {opt for param in commands[subcommand].params for opt in param.opts}
        for option in options:
            if option.startswith("-"):
                assert option.split("=", 1)[0] in known, \
                    f"spec2fractal {subcommand} has no option {option}"
    elif program == "celery":
        assert distribution("celery") in {distribution(r) for r in
                                          pyproject()["project"]["dependencies"]}
        app_path = rest[rest.index("-A") + 1] if "-A" in rest else \
            next(a.split("=", 1)[1] for a in rest if a.startswith("--app="))
        module = importlib.import_module(app_path.split(":")[0])
        from celery import Celery

        assert isinstance(getattr(module, "app", None), Celery), f"{app_path} has no Celery app"
        if "flower" in rest:
            assert declared("flower"), "`celery flower` needs flower in pyproject (an extra " \
                                       "the Dockerfile installs)"
    else:
        pytest.fail(f"unknown program {program!r}")


def our_services() -> dict[str, dict[str, Any]]:
    """The services that run this project's image."""
    return {name: service for name, service in services().items()
            if "build" in service or str(service.get("image", "")).startswith("spec2fractal")}


# --------------------------------------------------------------------------- compose


def test_compose_has_the_whole_stack() -> None:
    names = set(services())
    assert {"api", "worker", "redis", "postgres", "minio", "flower"} <= names
    assert names & {"minio-init", "createbuckets"}
    assert set(our_services()) == {"api", "worker", "flower"}


@pytest.mark.parametrize("name", ["api", "worker", "flower"])
def test_service_commands_exist(name: str) -> None:
    check_command(command(services()[name]))


def test_api_and_worker_run_the_service_commands() -> None:
    assert command(services()["api"])[:2] == ["spec2fractal", "serve"]
    assert command(services()["worker"])[:2] == ["spec2fractal", "worker"]


def test_every_spec2fractal_variable_is_a_setting() -> None:
    fields = set(Settings.model_fields)
    for name, service in services().items():
        for key in environment(service):
            if key.startswith(PREFIX):
                assert key.removeprefix(PREFIX).lower() in fields, \
                    f"{name}: {key} is not a field of workers.settings.Settings"


@pytest.mark.parametrize("name", ["api", "worker", "flower"])
def test_services_are_configured_for_the_distributed_shape(name: str) -> None:
    env = environment(services()[name])
    for key in ESSENTIAL:
        assert env.get(PREFIX + key), f"{name}: {PREFIX}{key} is not set"
    values = {key.removeprefix(PREFIX).lower(): value for key, value in env.items()
              if key.startswith(PREFIX) and value != ""}
    settings = Settings(**values)  # every value validates
    assert not settings.embedded
    assert settings.storage_url is not None and settings.storage_url.startswith("s3://")
    assert env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")
    # Every host named is a service of this file, on that service's port.
    ports = {"redis": 6379, "postgres": 5432, "minio": 9000}
    for url in (settings.broker_url, settings.database_url, settings.s3_endpoint_url):
        parts = urlsplit(url)
        assert parts.hostname in services(), f"{url}: no service {parts.hostname!r}"
        assert parts.port == ports[parts.hostname]


def test_api_and_worker_share_one_configuration() -> None:
    api, worker = environment(services()["api"]), environment(services()["worker"])
    for key in (*ESSENTIAL, "S3_REGION", "MODEL"):
        assert api.get(PREFIX + key) == worker.get(PREFIX + key), key
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert api[key] == worker[key]


def test_the_database_driver_is_installed_in_the_image() -> None:
    from sqlalchemy.engine import make_url

    url = make_url(environment(services()["api"])[PREFIX + "DATABASE_URL"])
    assert url.get_backend_name() == "postgresql"
    driver = url.get_driver_name()
    assert driver in DRIVERS, f"unknown driver {driver!r}"
    dist = DRIVERS[driver]
    if dist is not None:
        where = declared(dist)
        assert where, (f"{url.drivername} needs {dist!r} in pyproject.toml: e.g. "
                       f'[project.optional-dependencies] postgres = ["psycopg[binary]>=3.1"], '
                       f"installed by the Dockerfile with pip install '.[postgres]'")


def test_the_bucket_is_created_private_and_matches_the_storage_url() -> None:
    init = services().get("minio-init") or services()["createbuckets"]
    script = " ".join(command(init))
    bucket = Settings(storage_url=environment(services()["api"])[PREFIX + "STORAGE_URL"]) \
        .storage_url.removeprefix("s3://").split("/")[0]  # type: ignore[union-attr]
    assert re.search(rf"mc mb (--ignore-existing |-p )*\S+/{re.escape(bucket)}\b", script)
    assert re.search(rf"mc anonymous set none \S+/{re.escape(bucket)}\b", script)
    assert not re.search(r"anonymous set (public|download)|policy set (public|download)",
                         script)
    depends = init.get("depends_on", {})
    assert "minio" in depends
    for name in ("api", "worker"):
        condition = services()[name]["depends_on"]["minio-init" if "minio-init" in services()
                                                   else "createbuckets"]
        assert condition == {"condition": "service_completed_successfully"}


def test_the_worker_reserves_one_gpu() -> None:
    devices = services()["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(device.get("driver") == "nvidia" and device.get("count") == 1
               and "gpu" in device.get("capabilities", []) for device in devices), devices


def test_the_worker_keeps_models_on_a_volume() -> None:
    worker = services()["worker"]
    assert environment(worker).get("HF_HOME", "/models") == "/models"
    mounts = [str(volume).split(":") for volume in worker.get("volumes", [])]
    assert any(len(mount) >= 2 and mount[1] == "/models" for mount in mounts)


def test_redis_keeps_the_queue() -> None:
    argv = command(services()["redis"])
    options = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert options.get("--appendonly") == "yes"
    assert options.get("--maxmemory-policy") == "noeviction"
    assert any(":/data" in str(volume) for volume in services()["redis"].get("volumes", []))


@pytest.mark.parametrize("name", ["api", "redis", "postgres", "minio"])
def test_long_running_services_have_healthchecks(name: str) -> None:
    test = services()[name]["healthcheck"]["test"]
    assert test and test[0] in ("CMD", "CMD-SHELL")


def test_the_api_healthcheck_uses_a_real_route_and_port(tmp_path: Path) -> None:
    from api.app import create_app

    api = services()["api"]
    argv = command(api)
    port = argv[argv.index("--port") + 1]
    check = " ".join(api["healthcheck"]["test"])
    route = re.search(rf":{port}(/[\w/-]*)", check)
    assert route, f"the healthcheck does not call port {port}: {check}"
    app = create_app(Settings(data_dir=tmp_path), start_worker=False)
    assert route.group(1) in app.openapi()["paths"]
    assert any(str(mapping).endswith(f":{port}") for mapping in api["ports"])


# --------------------------------------------------------------------------- Dockerfile


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [arguments for instruction, arguments in dockerfile() if instruction == "USER"]
    assert users, "no USER: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_the_image_command_is_the_api_and_its_port_is_exposed() -> None:
    instructions = dockerfile()
    cmd = [exec_form(args) for instruction, args in instructions if instruction == "CMD"][-1]
    entrypoint = [exec_form(args) for instruction, args in instructions
                  if instruction == "ENTRYPOINT"]
    argv = (entrypoint[-1] if entrypoint else []) + cmd
    check_command(argv)
    assert argv == command(services()["api"])
    port = argv[argv.index("--port") + 1]
    exposed = {part.split("/")[0] for instruction, args in instructions
               if instruction == "EXPOSE" for part in args.split()}
    assert port in exposed


def test_the_image_installs_every_package_and_the_model_volume() -> None:
    instructions = dockerfile()
    copied = {args.split()[0].rstrip("/") for instruction, args in instructions
              if instruction == "COPY"}
    packages = {include.rstrip("*") for include in
                pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied | {"."}, f"not copied into the image: {packages - copied}"
    assert any(instruction == "RUN" and re.search(r"pip install [^&]*[\"']?\.(\[|[\"' ]|$)", args)
               for instruction, args in instructions)
    env = " ".join(args for instruction, args in instructions if instruction == "ENV")
    assert re.search(r"HF_HOME[= ]/models\b", env)
    assert any(instruction == "VOLUME" and "/models" in args for instruction, args in instructions)
    base = next(args for instruction, args in instructions if instruction == "FROM")
    assert "cuda" in base or "pytorch" in base


def test_every_setting_is_documented_in_deploy_md() -> None:
    documented = set(re.findall(r"^\| `SPEC2FRACTAL_([A-Z0-9_]+)` \|",
                                (ROOT / "docs" / "deploy.md").read_text(), re.MULTILINE))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - documented == set(), "settings missing from docs/deploy.md"
    assert documented - fields == set(), "docs/deploy.md documents settings that do not exist"
