"""Callers' own styles: stored per owner (an API key's id, or one shared owner when auth
is off) as inline style objects, and found by name case-insensitively.

The store keeps plain data; the API checks a style with ``fractal.styles.Style.inline``
before it comes here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from workers.db.models import UserStyle, utcnow

__all__ = ["NO_OWNER", "StyleExists", "count_styles", "create_style", "delete_style",
           "fold", "get_style", "list_styles", "replace_style"]

NO_OWNER = ""  # the owner of every style when auth is off (no key to own it)


class StyleExists(Exception):
    """The owner already has a style by that name (any case)."""


def fold(name: str) -> str:
    return name.strip().casefold()


def _owner(owner: str | None) -> str:
    return owner if owner is not None else NO_OWNER


def list_styles(session: Session, owner: str | None) -> list[UserStyle]:
    query = select(UserStyle).where(UserStyle.owner == _owner(owner)) \
        .order_by(UserStyle.folded_name)
    return list(session.scalars(query))


def get_style(session: Session, owner: str | None, name: str) -> UserStyle | None:
    return session.scalars(select(UserStyle).where(
        UserStyle.owner == _owner(owner), UserStyle.folded_name == fold(name))).first()


def count_styles(session: Session, owner: str | None) -> int:
    return session.scalar(select(func.count()).select_from(UserStyle)
                          .where(UserStyle.owner == _owner(owner))) or 0


def create_style(session: Session, owner: str | None, style: dict[str, Any]) -> UserStyle:
    """A new style (``style["name"]`` names it); StyleExists when the name is taken, also
    by a request racing this one (the unique constraint decides)."""
    now = utcnow()
    row = UserStyle(owner=_owner(owner), name=style["name"], folded_name=fold(style["name"]),
                    style=style, created_at=now, updated_at=now)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise StyleExists(style["name"]) from None
    return row


def replace_style(session: Session, owner: str | None, name: str,
                  style: dict[str, Any]) -> UserStyle | None:
    """The style ``name`` replaced by ``style`` (same name, any case); None if there is none."""
    row = get_style(session, owner, name)
    if row is None:
        return None
    row.name = style["name"]
    row.style = style
    row.updated_at = utcnow()
    session.flush()
    return row


def delete_style(session: Session, owner: str | None, name: str) -> bool:
    result = session.execute(delete(UserStyle).where(
        UserStyle.owner == _owner(owner), UserStyle.folded_name == fold(name)))
    return bool(result.rowcount)
