"""What can be asked for: models and styles."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SettingsDep, StylesDep
from api.schemas import ModelInfo, ModelList, StyleInfo, StyleList
from fractal.catalogue import KNOWN_MODELS
from fractal.naming import display_name

__all__ = ["router"]

router = APIRouter(tags=["catalogue"])


@router.get("/models", response_model=ModelList)
async def list_models(settings: SettingsDep) -> ModelList:
    """The server's default model first, then well-known ones (any hub id or path may work)."""
    models = [ModelInfo(id=known.id, family=known.family, size=known.size, notes=known.notes,
                        default=known.id == settings.model) for known in KNOWN_MODELS]
    if not any(model.default for model in models):
        models.insert(0, ModelInfo(id=display_name(settings.model), family="configured",
                                   size="",
                                   notes="this server's default model", default=True))
    models.sort(key=lambda model: not model.default)
    return ModelList(default=display_name(settings.model), models=models)


@router.get("/styles", response_model=StyleList)
async def list_styles(styles: StylesDep) -> StyleList:
    return StyleList(styles=[
        StyleInfo(name=style.name, description=style.description, effect=style.effect,
                  template=style.prompt, negative_prompt=style.negative_prompt,
                  palette=list(style.palette) if style.palette else None,
                  lighting=style.lighting, steps=style.steps, guidance=style.guidance,
                  strength=style.strength)
        for style in styles
    ])
