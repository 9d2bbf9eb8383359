"""GET /files/{key}: locally stored images behind signed, expiring URLs (embedded mode)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from api.deps import StorageDep
from api.errors import ApiError
from api.jsonbody import JsonRoute
from workers.storage import FILES_ROUTE, LocalStorage, StorageError

__all__ = ["router"]

router = APIRouter(tags=["files"], route_class=JsonRoute)

CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg",
                 "jpg": "image/jpeg", "json": "application/json"}


@router.get(FILES_ROUTE + "/{key:path}", responses={403: {"description": "Bad or expired "
                                                                          "signature."},
                                                    404: {"description": "No such file."}})
async def get_file(key: str, storage: StorageDep,
                   expires: Annotated[int | None, Query()] = None,
                   signature: Annotated[str | None, Query(max_length=128)] = None
                   ) -> FileResponse:
    assert isinstance(storage, LocalStorage)  # only registered for local storage
    if expires is None or signature is None or not storage.verify(key, expires, signature):
        raise ApiError(403, "this link is invalid or has expired")
    try:
        path = storage.path(key)
    except StorageError:
        raise ApiError(404, "file not found") from None
    if not path.is_file():
        raise ApiError(404, "file not found")
    media_type = CONTENT_TYPES.get(key.rsplit(".", 1)[-1].lower(), "application/octet-stream")
    return FileResponse(path, media_type=media_type,
                        headers={"Cache-Control": "private, max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})


# HEAD too: clients and caches ask for a file's size and type before (or instead of)
# fetching it. The answer is GET's, headers only (FileResponse sends no body for HEAD). Out
# of the schema: HTTP implies HEAD wherever GET is, and one path would get two operations.
@router.head(FILES_ROUTE + "/{key:path}", include_in_schema=False)
async def head_file(key: str, storage: StorageDep,
                    expires: Annotated[int | None, Query()] = None,
                    signature: Annotated[str | None, Query(max_length=128)] = None
                    ) -> FileResponse:
    return await get_file(key, storage, expires, signature)
