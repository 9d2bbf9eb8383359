"""A tiny random-weight Stable Diffusion inpainting pipeline, built offline.

Its UNet takes 9 input channels (the noisy latent, the mask, the masked image's latent), as
dedicated inpainting checkpoints do and as diffusers' own tests build one; the VAE, text
encoder and tokenizer are tests/tiny_models.py's. Saved with ``save_pretrained``, so its
model_index.json names ``StableDiffusionInpaintPipeline``, as a downloaded checkpoint's does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from tests.tiny_models import _scheduler, _text_config, _vae, write_tokenizer

__all__ = ["build_tiny_sd_inpaint"]


def build_tiny_sd_inpaint(folder: Path, scratch: Path) -> Path:
    """An SD 1.x-shaped inpainting pipeline: 64×64 native size, a 9-channel UNet."""
    torch.manual_seed(0)
    tokenizer = write_tokenizer(scratch / "sd-inpaint-tokenizer")
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=9,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
    )
    pipeline = StableDiffusionInpaintPipeline(
        vae=_vae(), text_encoder=CLIPTextModel(_text_config(tokenizer)), tokenizer=tokenizer,
        unet=unet, scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder
