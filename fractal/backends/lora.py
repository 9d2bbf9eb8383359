"""The LoRAs loaded into one diffusion model: found, checked, loaded once, switched per call.

A plan's LoRAs (fractal.loras.PlannedLora) name files in the LoRA folder or on the hub.
``check`` finds each file and refuses one made for another model family, cheaply, from its
header; ``activate`` (under the library's render lock, before a pipeline call) loads those
not loaded yet with diffusers' ``load_lora_weights`` as peft adapters named after their hash,
then makes them the active set with their weights (``set_adapters``), or turns LoRAs off
for a plan without any. Pipelines made by ``from_pipe`` (image-to-image, inpainting,
ControlNet) share the UNet and text encoders, and so the adapters and their weights.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from fractal.errors import InvalidRequestError
from fractal.loras import (
    MAX_LORAS,
    LoraFile,
    PlannedLora,
    find_lora,
    inspect_lora,
    is_hub_id,
)

__all__ = ["DEFAULT_HUB_WEIGHTS", "MAX_HUB_BYTES", "LoraAdapters", "adapter_name"]

logger = logging.getLogger(__name__)

# The file diffusers' training scripts write, and load_lora_weights reads by default.
DEFAULT_HUB_WEIGHTS = "pytorch_lora_weights.safetensors"
MAX_HUB_BYTES = 2 * 1024**3  # SDXL LoRAs reach about 900 MB; a checkpoint is no LoRA
KEEP_LOADED = MAX_LORAS  # adapters kept loaded per model: at least one request's worth


def adapter_name(file: LoraFile) -> str:
    """A peft-safe adapter name (no dots) that changes with the file's contents."""
    return f"lora_{file.short_hash}"


class LoraAdapters:
    """LoRAs for ``pipeline`` (the model's text-to-image pipeline, of ``family``)."""

    def __init__(self, pipeline: Any, family: str | None, model: str,
                 lora_dir: Any = None, keep: int = KEEP_LOADED, hub: bool = True) -> None:
        self.pipeline, self.family, self.model, self.lora_dir = pipeline, family, model, lora_dir
        self.hub = hub  # whether hub ids may be downloaded
        self.supported = callable(getattr(pipeline, "load_lora_weights", None))
        self.keep = max(keep, MAX_LORAS)
        self.loaded: OrderedDict[str, LoraFile] = OrderedDict()  # adapter name -> file, LRU
        self.loads = 0  # files loaded so far (each once while it stays loaded)
        self._enabled = True  # diffusers' LoRA layers are on until disable_lora()
        self._hub: dict[str, LoraFile] = {}  # hub id -> its downloaded file
        self._resolved: dict[str, LoraFile] = {}  # name -> the file it last named

    # -- finding and checking ----------------------------------------------------------

    def resolve(self, lora: PlannedLora) -> LoraFile:
        """The file ``lora`` names: in the LoRA folder, or downloaded from the hub."""
        key = lora.name.casefold()
        if not is_hub_id(lora.name):
            file = find_lora(lora.name, self.lora_dir, lora.field)
        elif not self.hub:
            raise InvalidRequestError(lora.field, lora.name, "is a hub id; LoRAs come from "
                                      "the LoRA folder only here")
        elif key in self._hub:
            file = self._hub[key]
        else:
            file = self._hub[key] = self._download(lora)
        self._resolved[key] = file
        return file

    def _download(self, lora: PlannedLora) -> LoraFile:
        from huggingface_hub import (
            get_hf_file_metadata,
            hf_hub_download,
            hf_hub_url,
            try_to_load_from_cache,
        )

        parts = lora.name.split("/")
        repo, filename = "/".join(parts[:2]), parts[2] if len(parts) == 3 else DEFAULT_HUB_WEIGHTS
        try:
            path = try_to_load_from_cache(repo, filename)
            if not isinstance(path, str):
                # A request names the id: its size is asked before anything is downloaded.
                size = get_hf_file_metadata(hf_hub_url(repo, filename)).size
                if size is not None and size > MAX_HUB_BYTES:
                    raise InvalidRequestError(lora.field, lora.name, f"is {size} bytes; a "
                                              f"LoRA from the hub may be at most "
                                              f"{MAX_HUB_BYTES} bytes")
                path = hf_hub_download(repo_id=repo, filename=filename)
        except InvalidRequestError:
            raise
        except (OSError, ValueError) as exc:  # hub errors are OSErrors; bad ids ValueErrors
            raise InvalidRequestError(lora.field, lora.name, "could not be fetched from the "
                                      f"hub: {type(exc).__name__}") from None
        try:
            return inspect_lora(path, name=lora.name)
        except InvalidRequestError as exc:
            raise InvalidRequestError(lora.field, lora.name, exc.reason) from None

    def check(self, loras: Sequence[PlannedLora]) -> None:
        """Refuse, before any work, a LoRA this model cannot take, naming its field."""
        for lora in loras:
            if not self.supported:
                if lora.origin == "style":
                    continue  # skipped, and noted in the record (see describe)
                raise InvalidRequestError(lora.field, lora.name, f"is a LoRA, and model "
                                          f"{self.model!r} cannot load LoRAs")
            file = self.resolve(lora)
            if file.family is not None and self.family is not None \
                    and file.family != self.family:
                raise InvalidRequestError(lora.field, lora.name, f"was trained for "
                                          f"{file.family}; the model is {self.family}")

    def describe(self, loras: Sequence[PlannedLora]) -> list[dict[str, Any]] | None:
        """The record's ``loras``: each with its weight and short hash."""
        if not loras:
            return None
        if not self.supported:
            return [{"name": lora.name, "weight": lora.weight, "hash": None, "applied": False,
                     "note": f"model {self.model!r} cannot load LoRAs"} for lora in loras]
        return [{"name": lora.name, "weight": lora.weight, "hash": self._hash(lora),
                 "applied": True} for lora in loras]

    def _hash(self, lora: PlannedLora) -> str | None:
        # As resolved for the render: the file may have gone from the folder since.
        file = self._resolved.get(lora.name.casefold())
        return file.short_hash if file is not None else self.resolve(lora).short_hash

    # -- loading and switching (under the render lock) ---------------------------------

    def activate(self, loras: Sequence[PlannedLora]) -> None:
        """Make ``loras`` (with their weights) the pipeline's active LoRAs; none: LoRAs off."""
        if not self.supported:
            return
        if not loras:
            if self.loaded and self._enabled:
                self.pipeline.disable_lora()
                self._enabled = False
            return
        files = [(lora, self.resolve(lora)) for lora in loras]
        # Two names for the same bytes (a folder file and its hub copy) are one adapter,
        # applied with both weights: LoRAs add up.
        needed, weights = {adapter_name(file) for _, file in files}, dict[str, float]()
        for lora, file in files:
            self._load(lora, file, needed)
            weights[adapter_name(file)] = weights.get(adapter_name(file), 0.0) + lora.weight
        if not self._enabled:
            self.pipeline.enable_lora()
            self._enabled = True
        self.pipeline.set_adapters(list(weights), list(weights.values()))

    def _load(self, lora: PlannedLora, file: LoraFile, needed: set[str]) -> None:
        name = adapter_name(file)
        if name in self.loaded:
            self.loaded.move_to_end(name)
            return
        # Room first: the least recently used adapters this call does not need go.
        while len(self.loaded) >= self.keep:
            old = next((key for key in self.loaded if key not in needed), None)
            if old is None:
                break
            logger.info("unloading LoRA %s from %s", self.loaded[old].name, self.model)
            self.pipeline.delete_adapters(old)
            del self.loaded[old]
        logger.info("loading LoRA %s (%s, %s) into %s", file.name, file.format,
                    file.short_hash, self.model)
        try:
            with warnings.catch_warnings():
                # peft warns at each adapter after the first: several are what we want.
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                # ... and, when a load fails, diffusers deletes the half-made adapter.
                warnings.filterwarnings("ignore", message="Adapter .* was active")
                self.pipeline.load_lora_weights(str(file.path.parent),
                                                weight_name=file.path.name, adapter_name=name)
        except (ValueError, RuntimeError, KeyError, IndexError, TypeError, OSError) as exc:
            # peft raises on shape mismatches, and on keys naming no layer of this model;
            # diffusers on keys it cannot convert. What loaded half-way goes.
            self._discard(name)
            raise InvalidRequestError(lora.field, lora.name,
                                      f"does not fit {self.model}: {_reason(exc)}") from None
        if name not in self._present():
            # diffusers only warns when none of a file's keys match this model's layers.
            self._discard(name)
            raise InvalidRequestError(lora.field, lora.name,
                                      f"does not fit {self.model}: none of its keys match")
        self.loaded[name] = file
        self.loads += 1

    def _present(self) -> set[str]:
        return {name for names in self.pipeline.get_list_adapters().values() for name in names}

    def _discard(self, name: str) -> None:
        if name in self._present():
            with warnings.catch_warnings():
                # peft says the half-loaded adapter was active: it is, and it goes.
                warnings.filterwarnings("ignore", message="Adapter .* was active")
                self.pipeline.delete_adapters(name)


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "size mismatch" in text:
        return "its tensors' shapes differ from the model's layers (another model's LoRA?)"
    if "not found in the base model" in text:
        return "none of its keys match"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]
