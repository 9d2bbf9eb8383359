"""``spec2fractal worker``: one render worker process, e.g. one per GPU."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["worker"]


def worker(
    device: Annotated[str | None, typer.Option(help="cuda:N, mps or cpu; default: auto.")] = None,
    concurrency: Annotated[int, typer.Option(help="Jobs at once (one per GPU is right); "
                                                  "with a broker only.")] = 1,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    warmup_model: Annotated[str | None, typer.Option(help="Load this model before the first "
                                                          "job.")] = None,
    models: Annotated[str | None, typer.Option(help="The models this worker serves, `a,b` "
                                                    "(default: every configured model); "
                                                    "it takes only their jobs.")] = None,
) -> None:
    """Start a render worker: on the configured broker (SPEC2FRACTAL_BROKER_URL) with Celery,
    or, with none, on the embedded mode's queue in the job database."""
    import os

    # The worker's own settings come from the environment, like every other process's.
    if device is not None:
        os.environ["SPEC2FRACTAL_DEVICE"] = device
    if warmup_model is not None:
        os.environ["SPEC2FRACTAL_WARMUP_MODEL"] = warmup_model
    if models is not None:
        os.environ["SPEC2FRACTAL_WORKER_MODELS"] = models
    from workers.settings import get_settings

    get_settings.cache_clear()
    if get_settings().embedded:
        from workers.embedded_worker import main

        if concurrency != 1:
            raise typer.BadParameter("the embedded queue runs one job at a time per worker; "
                                     "start more workers instead", param_hint="--concurrency")
        main(["--loglevel", loglevel])
        return
    from workers.celery_app import app
    from workers.routing import served_models, worker_queues
    from workers.task_queue import QUEUES

    # A solo pool renders in the worker's main process: the model stays loaded between jobs
    # and a GPU is never shared by forked children.
    pool = "solo" if concurrency == 1 else "threads"
    # Its models' queues, interactive first: a batch item starts only when no /generate job
    # waits; then the plain queues, for messages a server sent before routing existed.
    queues = [*worker_queues(served_models(get_settings())), *QUEUES]
    app.worker_main(["worker", f"--concurrency={concurrency}", f"--pool={pool}",
                     f"--loglevel={loglevel}", f"--queues={','.join(queues)}"])
