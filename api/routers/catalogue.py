"""What can be asked for: models (styles: api/routers/styles.py, LoRAs: api/routers/loras.py)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.capabilities import BUILT_IN, capabilities_of
from api.deps import SettingsDep
from api.jsonbody import JsonRoute
from api.model_access import allowed_models
from api.schemas import ModelInfo, ModelList
from fractal.catalogue import KNOWN_MODELS
from fractal.naming import display_name
from workers.settings import Settings

__all__ = ["router"]

router = APIRouter(tags=["catalogue"], route_class=JsonRoute)


@router.get("/models", response_model=ModelList)
async def list_models(settings: SettingsDep) -> ModelList:
    """The models requests may name here: the default first. Folders show by name only.
    Each says whether it takes a style reference and which control types."""
    return await run_in_threadpool(_models, settings)  # reads model configs: files


def _models(settings: Settings) -> ModelList:
    known = {model.id: model for model in KNOWN_MODELS}
    models = []
    for model in allowed_models(settings):
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
                                                  **settings.speed_options}))
    return ModelList(default=display_name(settings.model), models=models)

