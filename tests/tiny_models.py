"""Tiny random-weight diffusers pipelines, built offline from configs.

They are saved with ``save_pretrained`` and loaded back through ``from_pretrained``: the same
path a user's model folder takes. The CLIP tokenizer's vocabulary is written here, byte-level
with no merges, so nothing comes from a hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table, which CLIP's BPE tokenizer is built on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def write_tokenizer(folder: Path) -> CLIPTokenizer:
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    tokens = [*alphabet, *(char + "</w>" for char in alphabet), "<|startoftext|>",
              "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    return CLIPTokenizer.from_pretrained(folder)


def _text_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, vocab_size=len(tokenizer), hidden_size=32,
        intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, projection_dim=32,
    )


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=32, sample_size=64,
    )


def _scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", steps_offset=1)


def build_tiny_sd(folder: Path, scratch: Path, *, pipeline_class: type = StableDiffusionPipeline,
                  in_channels: int = 4, tokenizer_name: str = "sd-tokenizer") -> Path:
    """A Stable Diffusion 1.x-shaped pipeline: 64×64 native size, about 2 M parameters
    (``in_channels`` 9 and an inpainting pipeline class: an inpainting checkpoint)."""
    torch.manual_seed(0)
    tokenizer = write_tokenizer(scratch / tokenizer_name)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32,
        in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
    )
    pipeline = pipeline_class(
        vae=_vae(), text_encoder=CLIPTextModel(_text_config(tokenizer)), tokenizer=tokenizer,
        unet=unet, scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_sdxl(folder: Path, scratch: Path) -> Path:
    """An SDXL-shaped pipeline (two text encoders, size conditioning)."""
    torch.manual_seed(0)
    tokenizer = write_tokenizer(scratch / "sdxl-tokenizer")
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=1,
    )
    config = _text_config(tokenizer)
    pipeline = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=CLIPTextModel(config), text_encoder_2=
        CLIPTextModelWithProjection(config), tokenizer=tokenizer, tokenizer_2=tokenizer,
        unet=unet, scheduler=_scheduler(),
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


def build_pickled_sd(folder: Path, scratch: Path) -> Path:
    """The same tiny pipeline saved as pickled .bin weights, which must be refused."""
    build_tiny_sd(scratch / "tmp-sd", scratch)
    pipeline = StableDiffusionPipeline.from_pretrained(scratch / "tmp-sd")
    pipeline.save_pretrained(folder, safe_serialization=False)
    return folder
