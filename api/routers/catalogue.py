"""What can be asked for: models (styles: api/routers/styles.py, LoRAs: api/routers/loras.py)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.capabilities import BUILT_IN, capabilities_of
from api.deps import DatabaseDep, SettingsDep
from api.jsonbody import JsonRoute
from api.model_access import allowed_models
from api.routing import serving
from api.schemas import ModelInfo, ModelList, ModelWorker
from fractal.catalogue import KNOWN_MODELS
from fractal.naming import display_name
from workers.db import Database
from workers.db import presence as presence_store
from workers.settings import Settings

__all__ = ["router"]

router = APIRouter(tags=["catalogue"], route_class=JsonRoute)


@router.get("/models", response_model=ModelList)
async def list_models(settings: SettingsDep, database: DatabaseDep) -> ModelList:
    """The models requests may name here: the default first. Folders show by name only.
    Each says whether it takes a style reference and which control types, its live workers
    and its queued jobs."""
    return await run_in_threadpool(_models, settings, database)  # files and the database


def _models(settings: Settings, database: Database) -> ModelList:
    known = {model.id: model for model in KNOWN_MODELS}
    with database.session() as session:
        live = presence_store.live_workers(session, settings.worker_presence_ttl)
        queued = presence_store.queued_by_model(session)
    models = []
    for model in allowed_models(settings):
        # The embedded mode's worker takes every model, whatever it announced.
        workers = live if settings.embedded else serving(live, model)
        info = known.get(model)
        capabilities = capabilities_of(model, settings)
        models.append(ModelInfo(
            id=display_name(model), family=info.family if info else "configured",
            size=info.size if info else "", default=model == settings.model,
            notes=info.notes if info else "configured by this server's operator",
            adapter_family=capabilities.family,
            style_reference=capabilities.style_reference, controls=capabilities.controls,
            loras=capabilities.loras,
            speed=None if model == BUILT_IN else {"dtype": settings.dtype,
                                                  **settings.speed_options},
            workers=[ModelWorker(name=worker.name, warm=worker.warm,
                                 loaded=model in worker.loaded,
                                 speed=worker.speed.get(model)) for worker in workers],
            queued=queued.get(model, 0)))
    return ModelList(default=display_name(settings.model), models=models)

