"""The ``spec2fractal`` console script: the library's commands plus the service's.

The library (``fractal``) knows nothing of the service, so the commands are put together here,
in the facade, where every layer may be imported.
"""

from __future__ import annotations

from fractal.cli import app, main

__all__ = ["app", "main"]


def _register_service_commands() -> None:
    from api.cli import serve
    from spec2fractal.batch.command import batch
    from workers.cli import worker
    from workers.keys_cli import keys

    app.command(help="Run the HTTP API (embedded: with its own worker, SQLite and folders).")(
        serve)
    app.command(help="Run a render worker on the configured broker.")(worker)
    app.command(help="Render every request in a file (.txt, .csv, .jsonl), locally or "
                     "through a server; a re-run resumes.")(batch)
    app.add_typer(keys, name="keys")


_register_service_commands()

if __name__ == "__main__":
    main()
