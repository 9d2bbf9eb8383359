"""``spec2fractal serve``: the HTTP API under uvicorn (wired in by ``spec2fractal.cli``)."""

from __future__ import annotations

import logging

__all__ = ["serve"]


def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API. With no broker configured, also runs the embedded worker."""
    import uvicorn

    from api.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=10)
