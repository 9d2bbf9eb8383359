"""A tiny random-weight Stable Diffusion inpainting pipeline, built offline.

Its UNet takes 9 input channels (the noisy latent, the mask, the masked image's latent), as
dedicated inpainting checkpoints do and as diffusers' own tests build one; the VAE, text
encoder and tokenizer are tests/tiny_models.py's. Saved with ``save_pretrained``, so its
model_index.json names ``StableDiffusionInpaintPipeline``, as a downloaded checkpoint's does.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import StableDiffusionInpaintPipeline

from tests.tiny_models import build_tiny_sd

__all__ = ["build_tiny_sd_inpaint"]


def build_tiny_sd_inpaint(folder: Path, scratch: Path) -> Path:
    """An SD 1.x-shaped inpainting pipeline: 64×64 native size, a 9-channel UNet."""
    return build_tiny_sd(folder, scratch, pipeline_class=StableDiffusionInpaintPipeline,
                         in_channels=9, tokenizer_name="sd-inpaint-tokenizer")
