"""How a model is named to people: a hub id as is, a local folder by its name only.

Records and API responses must not show a server's file paths.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["display_name", "looks_like_path"]


def looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or "\\" in model or Path(model).exists()


def display_name(model: str) -> str:
    return Path(model).expanduser().name if looks_like_path(model) else model
