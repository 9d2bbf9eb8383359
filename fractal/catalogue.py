"""Models worth knowing about: the built-in engine, well-known hub ids, and what is cached."""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = ["KNOWN_MODELS", "KnownModel", "cached_diffusers_models"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownModel:
    id: str
    family: str
    size: str
    notes: str


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("fractal", "built-in", "any", "offline fractal engine; no download, no GPU"),
    KnownModel("stabilityai/sd-turbo", "SD 2.1 turbo", "512²", "1–4 steps, guidance 0; fast"),
    KnownModel("stabilityai/sdxl-turbo", "SDXL turbo", "512²", "1–4 steps, guidance 0"),
    KnownModel("stable-diffusion-v1-5/stable-diffusion-v1-5", "SD 1.5", "512²", "classic"),
    KnownModel("stabilityai/stable-diffusion-2-1", "SD 2.1", "768²", ""),
    KnownModel("stabilityai/stable-diffusion-xl-base-1.0", "SDXL", "1024²", "~7 GB"),
    KnownModel("stabilityai/stable-diffusion-3-medium-diffusers", "SD3", "1024²",
               "gated on the hub"),
    KnownModel("black-forest-labs/FLUX.1-schnell", "FLUX", "1024²", "4 steps; ~24 GB GPU"),
)


def cached_diffusers_models() -> list[str]:
    """Hub ids of diffusers pipelines already in the local Hugging Face cache."""
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception as exc:  # no cache yet, or an unreadable one: nothing is cached
        logger.debug("no Hugging Face cache: %s", exc)
        return []
    found = []
    for repo in cache.repos:
        if repo.repo_type != "model":
            continue
        if any(file.file_name == "model_index.json"
               for revision in repo.revisions for file in revision.files):
            found.append(repo.repo_id)
    return sorted(found)
