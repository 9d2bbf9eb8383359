"""Tiny random LoRAs for the tiny pipelines of tests/tiny_models.py, built offline with peft.

- ``build_lora``: a LoRA on the UNet's attention projections (and, when asked, the text
  encoder's), saved by diffusers'
  ``save_lora_weights`` (the diffusers/peft key layout), its B matrices random so that it
  visibly changes a render.
- ``to_kohya``: the same weights under kohya-ss/Civitai key names
  (``lora_unet_<module>.lora_down.weight``, ``.lora_up.weight``, ``.alpha``; ``lora_te_``
  for the text encoder's).
- ``build_sdxl_lora``: one for the tiny SDXL (its UNet and second text encoder): a wrong fit
  for the tiny SD, whose family its keys tell.
- ``write_pickle``: a pickled tensor dict named ``.safetensors``, which must be refused.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

__all__ = ["RANK", "build_lora", "build_sdxl_lora", "to_kohya", "write_pickle",
           "write_unmatched"]

RANK = 4
_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def _config() -> LoraConfig:
    # lora_alpha == r: scale 1, as the kohya copy's alpha says too.
    return LoraConfig(r=RANK, lora_alpha=RANK, target_modules=_TARGETS,
                      init_lora_weights=False)


def _unet_layers(model: Path, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", use_safetensors=True)
    unet.add_adapter(_config())
    return get_peft_model_state_dict(unet)


def _encoder_layers(model: Path, subfolder: str, seed: int) -> dict[str, torch.Tensor]:
    from peft import inject_adapter_in_model
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed + 100)
    kind = CLIPTextModelWithProjection if subfolder.endswith("_2") else CLIPTextModel
    encoder = kind.from_pretrained(model, subfolder=subfolder, use_safetensors=True)
    # peft itself: transformers' own add_adapter wants a newer peft than the lock's.
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights=False,
                                       target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]),
                            encoder)
    return get_peft_model_state_dict(encoder)


def build_lora(model: Path, path: Path, seed: int = 0, text_encoder: bool = False) -> Path:
    """``path`` (``name.safetensors``): a random LoRA for ``model``'s UNet (and its text
    encoder when asked), diffusers' keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        path.parent, unet_lora_layers=_unet_layers(model, seed), weight_name=path.name,
        text_encoder_lora_layers=_encoder_layers(model, "text_encoder", seed)
        if text_encoder else None, safe_serialization=True)
    return path


def to_kohya(source: Path, path: Path) -> Path:
    """``source``'s weights under kohya's names: ``unet.a.b.lora_A.weight`` ->
    ``lora_unet_a_b.lora_down.weight`` (B -> ``lora_up``), with an ``alpha`` per module."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in load_file(source).items():
        module, kind = key.rsplit(".lora_", 1)
        part, _, module = module.partition(".")  # unet / text_encoder
        prefix = {"unet": "lora_unet_", "text_encoder": "lora_te_"}[part] \
            + module.replace(".", "_")
        tensors[f"{prefix}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value
        tensors[f"{prefix}.alpha"] = torch.tensor(float(RANK))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path)
    return path


def build_sdxl_lora(model: Path, path: Path, seed: int = 0) -> Path:
    """A LoRA for the tiny SDXL at ``model``: its UNet and its second text encoder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(
        path.parent, unet_lora_layers=_unet_layers(model, seed),
        text_encoder_2_lora_layers=_encoder_layers(model, "text_encoder_2", seed),
        weight_name=path.name, safe_serialization=True)
    return path


def write_unmatched(path: Path) -> Path:
    """A well-formed LoRA whose modules no UNet has."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"unet.nowhere.proj.lora_A.weight": torch.randn(RANK, 32),
               "unet.nowhere.proj.lora_B.weight": torch.randn(32, RANK)}, path)
    return path


def write_pickle(path: Path) -> Path:
    """A pickled state dict under a ``.safetensors`` name (a pickle can run code on load)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        pickle.dump({"unet.a.lora_A.weight": torch.zeros(1)}, file)
    return path
