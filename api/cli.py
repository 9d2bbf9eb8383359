"""``spec2fractal serve``: the HTTP API under uvicorn (wired in by ``spec2fractal.cli``)."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

__all__ = ["serve"]


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; beyond localhost, API "
                                           "keys and SPEC2FRACTAL_PUBLIC_URL are "
                                           "required.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    auth: Annotated[bool, typer.Option("--auth", help="Require API keys even on localhost "
                                                      "(SPEC2FRACTAL_AUTH=required).")] = False,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, max=64,
        help="Embedded worker processes, each with its share of the cores "
             "(SPEC2FRACTAL_EMBEDDED_WORKERS). Default: one per core up to 4 on a CPU-only "
             "machine, 1 with a GPU.")] = None,
) -> None:
    """Serve the API. With no broker configured, also runs the embedded workers."""
    import uvicorn

    from api.app import check_public_url, create_app
    from api.server import uvicorn_options
    from workers.settings import get_settings

    # Through the environment, so the embedded worker child sees the same settings.
    os.environ["SPEC2FRACTAL_HOST"] = host
    if auth:
        os.environ["SPEC2FRACTAL_AUTH"] = "required"
    if workers is not None:
        os.environ["SPEC2FRACTAL_EMBEDDED_WORKERS"] = str(workers)
    get_settings.cache_clear()
    settings = get_settings()
    if workers is not None and not settings.embedded:
        raise typer.BadParameter("a broker is configured, so this server runs no worker of "
                                 "its own: start `spec2fractal worker` processes instead",
                                 param_hint="--workers")
    try:
        check_public_url(settings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--host") from None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if settings.auth_required:
        logging.getLogger(__name__).info(
            "API keys required; make one with `spec2fractal keys create --name NAME`")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=10, **uvicorn_options(settings))
