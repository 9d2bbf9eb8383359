"""Which models a request may name: the operator's list, never a client's path.

A request naming a model makes a worker load it, so an open choice would let any caller read
folders on the server (``"model": "/home/..."``) or start a 24 GB download. The server serves
its default model, the built-in engine, and the ``models`` setting; a configured folder is
named by its folder name, as ``GET /models`` shows it.
"""

from __future__ import annotations

from api.errors import field_error
from fractal.naming import display_name
from workers.settings import Settings

__all__ = ["allowed_models", "resolve_model"]

BUILT_IN = "fractal"


def allowed_models(settings: Settings) -> list[str]:
    """The models this server serves, default first, each once."""
    return list(dict.fromkeys([settings.model, BUILT_IN, *settings.models]))


def resolve_model(requested: str | None, settings: Settings) -> str:
    """The configured model a request names (by id or shown name); 422 for anything else."""
    name = (requested or "").strip()
    if not name:
        return settings.model
    allowed = allowed_models(settings)
    for model in allowed:
        if name in (model, display_name(model)):
            return model
    raise field_error(["body", "model"], "this server does not serve that model; ask for "
                      "one of the listed ones (the operator adds more with the `models` "
                      "setting)", name, choices=[display_name(model) for model in allowed])
