"""Request dependencies, as ``Annotated`` aliases; everything lives on ``app.state``.

All ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, a trip that
costs each request far more than reading an attribute.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.styles import CallerStyles
from workers.db import Database
from workers.finish_signals import FinishListener
from workers.settings import Settings
from workers.storage import Storage
from workers.task_queue import TaskQueue

__all__ = ["DatabaseDep", "FinishedDep", "QueueDep", "SettingsDep", "StorageDep", "StylesDep"]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_database(request: Request) -> Database:
    return request.app.state.database


async def get_storage(request: Request) -> Storage:
    return request.app.state.storage


async def get_queue(request: Request) -> TaskQueue:
    return request.app.state.queue


async def get_styles(request: Request) -> CallerStyles:
    # The server's styles and the caller's own (read from the database when named).
    caller = request.scope.get("state", {}).get("caller")
    return CallerStyles(request.app.state.styles, request.app.state.database,
                        caller.owner if caller is not None else None)


async def get_finished(request: Request) -> FinishListener:
    return request.app.state.finished


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
StorageDep = Annotated[Storage, Depends(get_storage)]
QueueDep = Annotated[TaskQueue, Depends(get_queue)]
StylesDep = Annotated[CallerStyles, Depends(get_styles)]
FinishedDep = Annotated[FinishListener, Depends(get_finished)]
