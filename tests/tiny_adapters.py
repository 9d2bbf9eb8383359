"""Tiny random-weight adapters for the tiny pipelines of tests/tiny_models.py, built offline.

- A ControlNet shaped from the tiny UNet (``ControlNetModel.from_unet``), its zero
  convolutions (zero when trained from scratch, so a fresh ControlNet changes nothing) given
  small random weights so that a control visibly steers the render.
- An IP-Adapter: one safetensors file of ``image_proj.*`` and ``ip_adapter.*`` tensors, the
  layout diffusers' ``load_ip_adapter`` reads, shaped from the UNet's cross-attention layers
  (one ``to_k_ip``/``to_v_ip`` pair per cross-attention, numbered 1, 3, 5, … in
  ``attn_processors`` order, as the published checkpoints are), and a tiny
  ``CLIPVisionModelWithProjection`` with its ``CLIPImageProcessor`` in a folder.

Each is saved the way an operator's adapters are, and loaded back through
``Spec2Fractal(model, adapters={...})``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

__all__ = [
    "IP_WEIGHTS",
    "adapters_config",
    "build_adapters",
    "build_controlnet",
    "build_image_encoder",
    "build_ip_adapter",
]

IP_WEIGHTS = "ip-adapter_tiny.safetensors"
ENCODER_SIZE = 32  # the tiny CLIP's input side, in pixels


def _unet(model: Path) -> UNet2DConditionModel:
    return UNet2DConditionModel.from_pretrained(model, subfolder="unet", use_safetensors=True)


def build_controlnet(model: Path, folder: Path, seed: int = 0) -> Path:
    """A ControlNet for ``model``'s UNet; ``seed`` makes different ones (canny, depth, …)."""
    torch.manual_seed(seed)
    unet = _unet(model)
    # The tiny VAE halves the image once (two blocks), so the control embedding does too.
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    with torch.no_grad():
        for module in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            torch.nn.init.normal_(module.weight, std=0.2)
            torch.nn.init.zeros_(module.bias)
        # A strong control embedding: the output then follows the control image's content
        # (two different control images give visibly different renders), not only its presence.
        torch.nn.init.normal_(controlnet.controlnet_cond_embedding.conv_out.weight, std=5.0)
        torch.nn.init.zeros_(controlnet.controlnet_cond_embedding.conv_out.bias)
    controlnet.save_pretrained(folder, safe_serialization=True)
    return folder


def build_image_encoder(folder: Path, seed: int = 0) -> Path:
    """A tiny CLIP vision encoder with projection, and its image processor, in ``folder``."""
    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, projection_dim=32,
                              num_hidden_layers=2, num_attention_heads=4,
                              image_size=ENCODER_SIZE, patch_size=4)
    CLIPVisionModelWithProjection(config).save_pretrained(folder, safe_serialization=True)
    CLIPImageProcessor(size=ENCODER_SIZE, crop_size=ENCODER_SIZE).save_pretrained(folder)
    return folder


def _plus_projection(cross: int, tokens: int) -> dict[str, torch.Tensor]:
    """An IP-Adapter Plus image projection (a Resampler over the CLIP's penultimate hidden
    states) in the published checkpoints' key layout, which diffusers converts on load."""
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    # diffusers reads the heads from to_q (64 wide each) and converts four layers.
    projection = IPAdapterPlusImageProjection(embed_dims=32, output_dims=cross, hidden_dims=64,
                                              depth=4, dim_head=64, heads=1,
                                              num_queries=tokens)
    state = projection.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "layers":
            tensors[key] = value
            continue
        layer, rest = parts[1], ".".join(parts[2:])
        renamed = {"ln0.weight": "0.norm1.weight", "ln0.bias": "0.norm1.bias",
                   "ln1.weight": "0.norm2.weight", "ln1.bias": "0.norm2.bias",
                   "attn.to_q.weight": "0.to_q.weight", "attn.to_out.0.weight": "0.to_out.weight",
                   "ff.0.weight": "1.0.weight", "ff.0.bias": "1.0.bias",
                   "ff.1.net.0.proj.weight": "1.1.weight", "ff.1.net.2.weight": "1.3.weight"}
        if rest in renamed:
            tensors[f"layers.{layer}.{renamed[rest]}"] = value
        elif rest == "attn.to_k.weight":
            tensors[f"layers.{layer}.0.to_kv.weight"] = torch.cat(
                [value, state[f"layers.{layer}.attn.to_v.weight"]])
        elif rest != "attn.to_v.weight":
            raise KeyError(key)
    return {f"image_proj.{key}": value for key, value in tensors.items()}


def build_ip_adapter(model: Path, folder: Path, *, with_encoder: bool = True, seed: int = 0,
                     plus: bool = False) -> Path:
    """``folder/IP_WEIGHTS`` for ``model``'s UNet (a plain IP-Adapter: four image tokens from
    the CLIP image embedding; ``plus``: eight, resampled from its hidden states), and the
    encoder in ``folder/image_encoder`` when asked."""
    torch.manual_seed(seed)
    unet = _unet(model)
    config = unet.config
    cross = config.cross_attention_dim
    embed_dim = 32  # the tiny CLIP's projection_dim
    tensors: dict[str, torch.Tensor] = _plus_projection(cross, 8) if plus else {
        "image_proj.proj.weight": torch.randn(4 * cross, embed_dim) * 0.5,
        "image_proj.proj.bias": torch.randn(4 * cross) * 0.1,
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue  # self-attention: no image tokens
        if name.startswith("mid_block"):
            hidden = config.block_out_channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(config.block_out_channels))[int(name.split(".")[1])]
        else:
            hidden = config.block_out_channels[int(name.split(".")[1])]
        for which in ("k", "v"):
            tensors[f"ip_adapter.{key}.to_{which}_ip.weight"] = torch.randn(hidden, cross) * 0.5
        key += 2
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: value.contiguous() for name, value in tensors.items()},
              folder / IP_WEIGHTS)
    if with_encoder:
        build_image_encoder(folder / "image_encoder", seed)
    return folder


def build_adapters(model: Path, root: Path) -> dict[str, Path]:
    """Every tiny adapter for ``model``: the IP-Adapter (with its encoder in a subfolder, as
    published), a separate encoder folder, and ControlNets for canny and depth."""
    return {
        "ip_adapter": build_ip_adapter(model, root / "ip-adapter"),
        "image_encoder": build_image_encoder(root / "clip-vision", seed=1),
        "canny": build_controlnet(model, root / "controlnet-canny", seed=0),
        "depth": build_controlnet(model, root / "controlnet-depth", seed=1),
    }


def adapters_config(folders: dict[str, Path], family: str = "sd15",
                    separate_encoder: bool = True) -> dict[str, object]:
    """``Spec2Fractal(adapters=...)`` for ``build_adapters``' folders."""
    ip: dict[str, str] = {"model": str(folders["ip_adapter"]), "weight_name": IP_WEIGHTS}
    if separate_encoder:
        ip["image_encoder"] = str(folders["image_encoder"])
    return {family: {"ip_adapter": ip,
                     "controlnets": {"canny": str(folders["canny"]),
                                     "depth": str(folders["depth"])}}}
