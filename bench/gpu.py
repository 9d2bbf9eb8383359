"""Full-size SD 1.5 and SDXL on a GPU: seconds per step, seconds end to end and peak GPU
memory at 512² and 1024², batch 1 and 4, with each speed option on and off (issue #22).

The UNet, VAE and text encoders are built from the published configs (inline below) with
random weights: nothing is downloaded, and the compute is the real model's (random
weights change what the pictures look like, not how long they take). No tokenizer: the
text encoders run on random token ids, and the pipeline takes their embeddings; the text
encoding is timed as part of end to end.

Options, each alone and all together against the plain pipeline (the same calls
fractal/backends/speed.py makes; this file imports nothing of the project package so that a
GPU machine with only torch, diffusers and transformers runs it: the deep cache's module,
which needs only those, is loaded by its path):

* ``channels_last``: UNet and VAE in NHWC;
* ``fuse_qkv``: ``pipeline.fuse_qkv_projections()``;
* ``compile``: ``compile_repeated_blocks`` of the UNet and ``compile`` of the VAE decoder
  (``--compile-backend``, inductor by default); its compile time is left out: one untimed
  render at the same size and batch comes first (as the service's warm-up does);
* ``vae_fp16`` (SDXL): the VAE decodes in fp16, as the fp16-fix VAE lets it, instead of
  upcasting to fp32 (``force_upcast``);
* ``offload_model`` / ``offload_sequential``: diffusers' CPU offload (memory for time);
* ``deep_cache``: DeepCache (fractal/backends/deepcache.py) at ``--deep-interval`` (3 by
  default): the UNet's deep blocks run every that many steps. It changes the pictures (the
  others do not, within rounding), so ``all`` leaves it out;
* ``all``: channels_last + fuse_qkv + compile (+ vae_fp16 on SDXL).

First Block Cache is for transformer models only: SD 1.5 and SDXL are UNets, so it is not
measured here (said in the output).

Run: python bench/gpu.py [--models sd15,sdxl] [--sizes 512,1024] [--batches 1,4]
[--options plain,channels_last,...] [--steps 30] [--deep-interval 3] [--json out.json];
``--tiny``: tiny
configs on the CPU, two steps (what the test runs).
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.util
import itertools
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

OPTIONS = ("plain", "channels_last", "fuse_qkv", "compile", "vae_fp16", "offload_model",
           "offload_sequential", "deep_cache", "all")
DEEPCACHE = Path(__file__).resolve().parents[1] / "fractal" / "backends" / "deepcache.py"

# --- published configs (diffusers' model folders of the two models) ------------------------
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                      "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                    "CrossAttnUpBlock2D"),
)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280), cross_attention_dim=2048,
    attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
)
VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072,
              num_attention_heads=12, num_hidden_layers=12, max_position_embeddings=77,
              hidden_act="quick_gelu", projection_dim=768)
CLIP_BIGG = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120,
                 num_attention_heads=20, num_hidden_layers=32, max_position_embeddings=77,
                 hidden_act="gelu", projection_dim=1280)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 num_train_timesteps=1000, steps_offset=1)

# --- the same shapes, tiny, for --tiny (CPU) ---------------------------------------------
TINY = {
    "sd15_unet": dict(SD15_UNET, block_out_channels=(32, 64), sample_size=32,
                      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                      cross_attention_dim=32, layers_per_block=1),
    "sdxl_unet": dict(SDXL_UNET, block_out_channels=(32, 64), sample_size=32,
                      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                      attention_head_dim=(2, 4), transformer_layers_per_block=(1, 2),
                      addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
                      cross_attention_dim=64, layers_per_block=1, norm_num_groups=8),
    "vae": dict(VAE, block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1,
                norm_num_groups=32),
    "clip_l": dict(CLIP_L, hidden_size=32, intermediate_size=37, num_attention_heads=4,
                   num_hidden_layers=2, projection_dim=32),
}


@dataclass
class Row:
    model: str
    size: int
    batch: int
    option: str
    steps: int
    step_s: float | None = None  # median seconds per denoising step
    end_to_end_s: float | None = None  # text encoding + denoising + VAE decode + to PIL
    peak_gib: float | None = None  # torch's peak allocated GPU memory (None on CPU)
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _text(config: dict[str, Any], projection: bool) -> torch.nn.Module:
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(CLIPTextConfig(**config))


def build(model: str, tiny: bool, device: torch.device, dtype: torch.dtype) -> Any:
    """A pipeline with random weights, built on ``device`` (no CPU copy of a full UNet)."""
    torch.manual_seed(0)
    with torch.device(device):
        if model == "sd15":
            unet = UNet2DConditionModel(**(TINY["sd15_unet"] if tiny else SD15_UNET))
            vae = AutoencoderKL(**(TINY["vae"] if tiny else VAE), sample_size=512)
            encoders = {"text_encoder": _text(TINY["clip_l"] if tiny else CLIP_L, False)}
            cls = StableDiffusionPipeline
            extra = dict(safety_checker=None, feature_extractor=None,
                         requires_safety_checker=False)
        else:
            unet = UNet2DConditionModel(**(TINY["sdxl_unet"] if tiny else SDXL_UNET))
            vae = AutoencoderKL(**(TINY["vae"] if tiny else VAE), sample_size=1024,
                                scaling_factor=0.13025, force_upcast=True)
            small = TINY["clip_l"] if tiny else CLIP_L
            big = TINY["clip_l"] if tiny else CLIP_BIGG
            encoders = {"text_encoder": _text(small, False),
                        "text_encoder_2": _text(big, True)}
            cls = StableDiffusionXLPipeline
            extra = dict(tokenizer_2=None)
    pipeline = cls(unet=unet, vae=vae, tokenizer=None, scheduler=EulerDiscreteScheduler(
        **SCHEDULER), **encoders, **extra)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device, dtype)


def encode(pipeline: Any, model: str, batch: int, device: torch.device) -> dict[str, Any]:
    """Prompt and negative embeddings from random token ids, as the pipeline takes them."""
    def run(encoder: torch.nn.Module) -> Any:
        ids = torch.randint(0, encoder.config.vocab_size, (batch, 77), device=device)
        return encoder(ids, output_hidden_states=True)

    with torch.inference_mode():
        first = run(pipeline.text_encoder)
        if model == "sd15":
            embeds = first.last_hidden_state
            return {"prompt_embeds": embeds, "negative_prompt_embeds": torch.zeros_like(embeds)}
        second = run(pipeline.text_encoder_2)
        embeds = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        pooled = second.text_embeds
    return {"prompt_embeds": embeds, "negative_prompt_embeds": torch.zeros_like(embeds),
            "pooled_prompt_embeds": pooled,
            "negative_pooled_prompt_embeds": torch.zeros_like(pooled)}


@functools.cache
def deepcache() -> ModuleType:
    """fractal/backends/deepcache.py by its path: it imports only torch and diffusers."""
    spec = importlib.util.spec_from_file_location("deepcache", DEEPCACHE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def apply(pipeline: Any, option: str, model: str, device: torch.device, backend: str,
          interval: int = 3) -> None:
    parts = {"all": ["channels_last", "fuse_qkv", "compile"] + (["vae_fp16"] * (model == "sdxl"))
             }.get(option, [option])
    for part in parts:
        if part == "channels_last":
            pipeline.unet.to(memory_format=torch.channels_last)
            pipeline.vae.to(memory_format=torch.channels_last)
        elif part == "fuse_qkv":
            pipeline.fuse_qkv_projections()
        elif part == "compile":
            pipeline.unet.compile_repeated_blocks(backend=backend)
            pipeline.vae.decoder.compile(backend=backend)
        elif part == "deep_cache":
            deepcache().DeepCache.apply(pipeline.unet, interval)
        elif part == "vae_fp16":
            pipeline.vae.register_to_config(force_upcast=False)
        elif part in ("offload_model", "offload_sequential"):
            pipeline.to("cpu")
            if part == "offload_model":
                pipeline.enable_model_cpu_offload(device=device)
            else:
                pipeline.enable_sequential_cpu_offload(device=device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def render(pipeline: Any, model: str, size: int, batch: int, steps: int,
           device: torch.device) -> tuple[float, list[float]]:
    """(end-to-end seconds, seconds of each step)."""
    marks: list[float] = []

    def on_step(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict:
        _sync(device)
        marks.append(time.perf_counter())
        return tensors

    _sync(device)
    start = time.perf_counter()
    arguments = encode(pipeline, model, batch, device)
    _sync(device)
    marks.append(time.perf_counter())
    with deepcache().step_cache(pipeline):  # fresh per render; nothing without one
        pipeline(**arguments, width=size, height=size, num_inference_steps=steps,
                 guidance_scale=7.0, output_type="pil", callback_on_step_end=on_step)
    _sync(device)
    end = time.perf_counter()
    return end - start, [b - a for a, b in itertools.pairwise(marks)]


def measure(model: str, option: str, size: int, batch: int, args: argparse.Namespace,
            device: torch.device, dtype: torch.dtype) -> Row:
    row = Row(model, size, batch, option, args.steps)
    if option == "vae_fp16" and model != "sdxl":
        row.note = "SD 1.5's VAE runs in fp16 already"
        return row
    if option.startswith("offload") and device.type != "cuda":
        row.note = "offload needs a GPU (a no-op on CPU)"
        return row
    torch.compiler.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    pipeline = build(model, args.tiny, device, dtype)
    try:
        apply(pipeline, option, model, device, args.compile_backend, args.deep_interval)
        render(pipeline, model, size, batch, 2, device)  # warm-up (and compile), untimed
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds, steps = render(pipeline, model, size, batch, args.steps, device)
        row.end_to_end_s = round(seconds, 4)
        row.step_s = round(sorted(steps)[len(steps) // 2], 4) if steps else None
        if device.type == "cuda":
            row.peak_gib = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
    except torch.OutOfMemoryError:
        row.note = "out of GPU memory"
    except Exception as exc:  # a bench reports what failed and goes on
        row.note = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    finally:
        del pipeline
    return row


def table(rows: list[Row]) -> str:
    lines = [f"{'model':6} {'size':>5} {'batch':>5} {'option':18} {'s/step':>8} "
             f"{'end-to-end s':>12} {'peak GiB':>8}  note"]
    for r in rows:
        def cell(value: float | None, width: int) -> str:
            return f"{value:>{width}.3f}" if value is not None else f"{'-':>{width}}"
        lines.append(f"{r.model:6} {r.size:>5} {r.batch:>5} {r.option:18} {cell(r.step_s, 8)} "
                     f"{cell(r.end_to_end_s, 12)} {cell(r.peak_gib, 8)}  {r.note or ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU")
    parser.add_argument("--models", default="sd15,sdxl")
    parser.add_argument("--sizes", default=None, help="default 512,1024 (tiny: 64)")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--options", default=",".join(OPTIONS))
    parser.add_argument("--steps", type=int, default=None, help="default 30 (tiny: 2)")
    parser.add_argument("--dtype", default=None, help="float16 (GPU default), bfloat16, float32")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend (default inductor; tiny: eager)")
    parser.add_argument("--deep-interval", type=int, default=3,
                        help="deep_cache: the deep blocks run every this many steps (2-10)")
    parser.add_argument("--json", default="bench-gpu.json", help="where the rows go")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ("64" if args.tiny else "512,1024")
    args.steps = args.steps or (2 if args.tiny else 30)
    args.compile_backend = args.compile_backend or ("eager" if args.tiny else "inductor")
    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, args.dtype or ("float16" if cuda else "float32"))
    said = []
    if not cuda:
        said.append("no CUDA device (or --tiny): CPU rows only, no peak GPU memory, "
                    "offload rows skipped")
    said.append("First Block Cache not measured: SD 1.5 and SDXL are UNets (it is for "
                "transformer models); their step cache is deep_cache")
    said.append(f"deep_cache at interval {args.deep_interval}: its pictures differ from the "
                "plain ones by design (docs/deploy.md: the quality cost); its s/step is a "
                "median, mostly reused steps': compare end to end")
    if not 2 <= args.deep_interval <= 10:
        parser.error("--deep-interval must be from 2 to 10")
    options = [o for o in args.options.split(",") if o]
    unknown = set(options) - set(OPTIONS)
    if unknown:
        parser.error(f"unknown options {sorted(unknown)}; choose from {', '.join(OPTIONS)}")
    rows = []
    for model in args.models.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            for batch in (int(b) for b in args.batches.split(",")):
                for option in options:
                    row = measure(model, option, size, batch, args, device, dtype)
                    print(table([row]).splitlines()[1], flush=True)
                    rows.append(row)
    print()
    print(table(rows))
    for line in said:
        print("note:", line)
    with open(args.json, "w") as handle:
        json.dump({"device": torch.cuda.get_device_name(device) if cuda else platform.processor()
                   or "cpu", "dtype": str(dtype), "torch": torch.__version__,
                   "compile_backend": args.compile_backend, "notes": said,
                   "rows": [asdict(row) for row in rows]}, handle, indent=1)
    print("wrote", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
