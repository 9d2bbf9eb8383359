"""Styles: the server's presets and each caller's own (GET, POST, PUT, DELETE /styles).

A caller's style is stored per API key (one shared owner when auth is off) and usable by
name in every request; another key's is 404 here and unknown in requests. The server's
styles (built-in, operator files) are read-only: 403 to change.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Response
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, CallerDep
from api.deps import DatabaseDep, SettingsDep, StylesDep
from api.errors import ApiError, field_error
from api.jsonbody import JsonRoute
from api.schemas import StyleInfo, StyleList
from api.styles import CallerStyles, StyleBody, check_style_body, stored_style, style_info
from fractal.styles import Style
from fractal.styles.library import MAX_STYLE_NAME_CHARS
from workers.db import Database
from workers.db import styles as style_store
from workers.settings import Settings

__all__ = ["router"]

router = APIRouter(prefix="/styles", tags=["styles"], route_class=JsonRoute)

StyleName = Annotated[str, Path(max_length=MAX_STYLE_NAME_CHARS * 4,
                                description="A style's name, any case.")]
NOT_FOUND = {404: {"description": "No such style (another key's is not shown)."}}
READ_ONLY = {403: {"description": "A built-in or operator style: read-only."}}


@router.get("", response_model=StyleList)
async def list_styles(styles: StylesDep, database: DatabaseDep, caller: CallerDep
                      ) -> StyleList:
    """Built-in and operator styles, then the caller's own (`source`)."""
    def own() -> list[StyleInfo]:
        with database.session() as session:
            stored = [stored_style(row.style)
                      for row in style_store.list_styles(session, caller.owner)]
        return [style_info(style) for style in stored if style is not None]

    server = [style_info(style) for style in styles]
    return StyleList(styles=server + await run_in_threadpool(own))


@router.get("/{name}", response_model=StyleInfo, responses=NOT_FOUND)
async def get_style(name: StyleName, styles: StylesDep) -> StyleInfo:
    found = await run_in_threadpool(lambda: styles.server(name) or styles.own(name))
    if found is None:
        raise ApiError(404, "style not found", name=name)
    return style_info(found)


def _reserved(styles: CallerStyles, name: str) -> None:
    if styles.server(name) is not None:
        raise ApiError(409, f"{name!r} is the name of one of this server's styles; choose "
                       "another", name=name)


@router.post("", response_model=StyleInfo, status_code=201,
             responses={409: {"description": "The name is taken, or the key has as many "
                                             "styles as it may keep."}})
async def create_style(body: StyleBody, response: Response, styles: StylesDep,
                       database: DatabaseDep, settings: SettingsDep, caller: CallerDep
                       ) -> StyleInfo:
    """A style of the caller's own, usable by name in every request (`"style": name`)."""
    if body.name is None:
        raise field_error(["body", "name"], "is required", None, kind="missing")
    style = check_style_body(body, None, settings.lora_hub)
    created = await run_in_threadpool(_create, style, styles, database, settings, caller)
    response.headers["Location"] = f"/styles/{quote(created.name, safe='')}"
    return style_info(created)


def _create(style: Style, styles: CallerStyles, database: Database, settings: Settings,
            caller: Caller) -> Style:
    _reserved(styles, style.name)
    with database.session() as session:
        count = style_store.count_styles(session, caller.owner)
        if count >= settings.max_styles_per_key:
            raise ApiError(409, f"this key already has {count} styles, the most allowed; "
                           "delete one first", limit=settings.max_styles_per_key)
        try:
            style_store.create_style(session, caller.owner, style.to_table())
        except style_store.StyleExists:
            raise ApiError(409, f"a style named {style.name!r} exists already (names "
                           "match in any case); PUT /styles/{name} replaces it",
                           name=style.name) from None
    return style


@router.put("/{name}", response_model=StyleInfo, responses={**NOT_FOUND, **READ_ONLY})
async def replace_style(name: StyleName, body: StyleBody, styles: StylesDep,
                        database: DatabaseDep, settings: SettingsDep, caller: CallerDep
                        ) -> StyleInfo:
    """Replace one of the caller's styles (the body's `name`, if given, must match; its case
    may change)."""
    if body.name is not None and style_store.fold(body.name) != style_store.fold(name):
        raise field_error(["body", "name"], "must be the path's style name (a style is "
                          "renamed by creating the new one and deleting the old)", body.name)
    style = check_style_body(body, body.name or name, settings.lora_hub)

    def replace() -> Style:
        with database.session() as session:
            if style_store.replace_style(session, caller.owner, name, style.to_table()):
                return style
        _refuse_change(styles, name)
        raise AssertionError("unreachable")

    return style_info(await run_in_threadpool(replace))


@router.delete("/{name}", status_code=204, responses={**NOT_FOUND, **READ_ONLY})
async def delete_style(name: StyleName, styles: StylesDep, database: DatabaseDep,
                       caller: CallerDep) -> Response:
    def delete() -> None:
        with database.session() as session:
            if style_store.delete_style(session, caller.owner, name):
                return
        _refuse_change(styles, name)

    await run_in_threadpool(delete)
    return Response(status_code=204)


def _refuse_change(styles: CallerStyles, name: str) -> Any:
    """Not one of the caller's: 403 for the server's styles, else 404."""
    if styles.server(name) is not None:
        raise ApiError(403, f"{name!r} is one of this server's styles, which are read-only; "
                       "create a style of your own (POST /styles)", name=name)
    raise ApiError(404, "style not found", name=name)
