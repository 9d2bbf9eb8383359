"""How much memory a diffusion render will take, and refusing one that cannot fit.

A render that does not fit its device dies of an out-of-memory error part way through (or,
on a CPU, pushes the machine into swap). Estimating first lets the library refuse it up
front, naming the size and the largest one that fits, as a request error (the API's 422).

The estimate is a model of the working set, from the pipeline's shapes, calibrated against
peak RSS measured on the tiny SD pipeline of the tests (fp32, CPU; see docs/memory.md):

* the denoiser's activations follow its latent input (``DENOISER_MAPS`` feature maps of its
  first block's width, for each image in the CFG-doubled batch), or one tile's when the
  pass denoises in tiles; self-attention adds its score matrices (heads × tokens², so the
  square of the latent area) only when its attention kernel materialises them: PyTorch's
  scaled-dot-product kernels (diffusers' default) do not;
* the VAE decoder's activations follow the image (``DECODER_MAPS`` maps of its widest
  full-resolution width: 256 channels for SD's), or one VAE tile's when it decodes in tiles;
  the encoder's likewise, for passes that start from an image;
* the phases run one after the other, so the costliest counts whole and the others by
  the part an allocator keeps of what they freed (``RETAINED``).

Pure arithmetic on plain numbers: :func:`profile_of` reads a loaded pipeline (torch is
imported there only) and :func:`device_budget` asks the device what it has.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from fractal.errors import InvalidRequestError
from fractal.plan import RenderPlan
from fractal.validation import MAX_SIDE

if TYPE_CHECKING:
    import torch

__all__ = ["MemoryGuard", "MemoryProfile", "available_ram", "device_budget",
           "estimate_peak_bytes", "format_bytes", "largest_fitting", "profile_of"]

logger = logging.getLogger(__name__)

# Calibration (fractal/memory.py's docstring; measured on the tiny SD pipeline, fp32 CPU:
# its UNet forward peaks at ~18 maps over its input, its VAE decode at ~5 and encode ~5.5).
DENOISER_MAPS = 20
DECODER_MAPS = 6
ENCODER_MAPS = 6
LATENT_COPIES = 4  # latents, noise prediction, CFG halves, a tiled pass's blend sums
# Per output pixel beyond the VAE: its decoded tensor, a float numpy copy, the 8-bit image.
IMAGE_BYTES_PER_PIXEL = 3 * 4 + 3 * 4 + 3
ATTENTION_COPIES = 2  # scores and their softmax
# Of a finished phase's peak, the part still held when the next one peaks: glibc's heap
# keeps freed chunks below its (growing) mmap threshold, CUDA's caching allocator fragments.
RETAINED = 0.4
MARGIN = 1.1  # what the model does not see: allocator rounding, small buffers


@dataclass(frozen=True)
class MemoryProfile:
    """What a loaded pipeline's memory use depends on, as plain numbers."""

    weight_bytes: int  # parameters and buffers of every module, as loaded
    dtype_bytes: int  # bytes per element of its activations
    latent_channels: int
    vae_scale_factor: int  # image pixels per latent pixel, per side
    denoiser_channels: int  # width of the denoiser's first (largest) feature maps
    # Denoiser positions per latent pixel: 1 for a UNet, 1/patch² for a transformer.
    denoiser_positions: float
    # Self-attention of the denoiser: (downsampling per side, heads) per attention level.
    attention: tuple[tuple[int, int], ...]
    # True when its attention kernel holds full score matrices (heads × tokens²).
    attention_quadratic: bool
    decoder_channels: int  # the VAE decoder's widest full-resolution feature map
    encoder_channels: int  # the VAE encoder's full-resolution feature map
    cfg: bool  # classifier-free guidance doubles the denoiser's batch


def _module_bytes(module: Any) -> int:
    return sum(t.numel() * t.element_size()
               for t in (*module.parameters(), *module.buffers()))


def profile_of(pipeline: Any) -> MemoryProfile:
    """The profile of a loaded diffusers pipeline (a UNet or a transformer denoiser)."""
    import inspect

    import torch

    modules = [c for c in pipeline.components.values() if isinstance(c, torch.nn.Module)]
    vae = pipeline.vae
    denoiser = getattr(pipeline, "unet", None) or pipeline.transformer
    config = denoiser.config
    dtype_bytes = torch.empty((), dtype=denoiser.dtype).element_size()
    blocks = list(vae.config.block_out_channels)
    if "block_out_channels" in config:  # a UNet
        channels, positions = int(config.block_out_channels[0]), 1.0
        heads = config.num_attention_heads or config.attention_head_dim
        heads = [heads] * len(config.down_block_types) if isinstance(heads, int) else heads
        attention = tuple((2 ** level, int(heads[level]))
                          for level, kind in enumerate(config.down_block_types)
                          if "Attn" in kind)
    else:  # a transformer over latent patches (SD3, FLUX, PixArt...)
        patch = int(config.get("patch_size") or 1)
        heads = int(config.num_attention_heads)
        channels = heads * int(config.attention_head_dim)
        positions = 1.0 / (patch * patch)
        attention = ((patch, heads),)
    processors = getattr(denoiser, "attn_processors", {}) or {}
    # diffusers' default processors call torch's scaled_dot_product_attention, whose
    # kernels (flash, memory-efficient, CPU flash) never hold the score matrix; the classic
    # AttnProcessor and sliced ones do.
    quadratic = any(type(p).__name__ in ("AttnProcessor", "SlicedAttnProcessor")
                    for p in processors.values())
    accepted = inspect.signature(pipeline.__call__).parameters
    return MemoryProfile(
        weight_bytes=sum(_module_bytes(module) for module in modules),
        dtype_bytes=dtype_bytes,
        latent_channels=int(vae.config.latent_channels),
        vae_scale_factor=int(getattr(pipeline, "vae_scale_factor", 8)),
        denoiser_channels=channels,
        denoiser_positions=positions,
        attention=attention,
        attention_quadratic=quadratic,
        decoder_channels=int(blocks[1] if len(blocks) > 1 else blocks[0]),
        encoder_channels=int(blocks[0]),
        cfg="negative_prompt" in accepted,
    )


def _passes_of(plan: RenderPlan) -> list[dict[str, Any]]:
    """One plain pass at the plan's size, for a backend that describes none."""
    return [{"kind": "upscale" if plan.input_type == "upscale" else
             ("refine" if plan.init_image is not None else "base"),
             "width": plan.width, "height": plan.height, "tiles": 1, "tile": None,
             "vae_tile": None}]


def _pass_bytes(profile: MemoryProfile, entry: dict[str, Any], n: int, guided: bool) -> int:
    width, height = int(entry["width"]), int(entry["height"])
    pixels = width * height
    scale = profile.vae_scale_factor
    batch = n * (2 if guided else 1)
    dtype = profile.dtype_bytes
    # 1. The denoiser: its latent input, or one tile of it (the tile batch bounds memory).
    tile = entry.get("tile")
    tile_pixels = int(tile[0]) * int(tile[1]) if tile and (entry.get("tiles") or 1) > 1 \
        else pixels
    tile_latent = tile_pixels / (scale * scale)
    positions = tile_latent * profile.denoiser_positions
    denoiser = DENOISER_MAPS * profile.denoiser_channels * positions * batch * dtype
    if profile.attention_quadratic:
        for downsample, heads in profile.attention:
            tokens = tile_latent / (downsample * downsample)
            denoiser += ATTENTION_COPIES * heads * tokens * tokens * batch * dtype
    # 2. The whole latent stays in memory (and a tiled pass's blend sums beside it).
    latent = LATENT_COPIES * profile.latent_channels * pixels / (scale * scale) * batch * 4
    # 3. The VAE: the whole image, or one tile of it at a time.
    vae_tile = entry.get("vae_tile")
    vae_pixels = min(pixels, int(vae_tile) ** 2) if vae_tile else pixels
    decoder = DECODER_MAPS * profile.decoder_channels * vae_pixels * n * dtype
    encoder = 0.0
    if entry.get("kind") in ("refine", "upscale"):
        encoder = ENCODER_MAPS * profile.encoder_channels * vae_pixels * n * dtype
    # 4. The images themselves, as tensors, arrays and pictures.
    images = IMAGE_BYTES_PER_PIXEL * pixels * n
    # The phases run one after the other, but an allocator keeps part of what one freed.
    phases = sorted((denoiser, decoder, encoder), reverse=True)
    return int(phases[0] + RETAINED * sum(phases[1:]) + latent + images)


def estimate_peak_bytes(profile: MemoryProfile,
                        passes_or_plan: RenderPlan | Sequence[dict[str, Any]] | None,
                        n: int, *, guidance: float | None = None) -> int:
    """Peak memory of a render, the model's weights included: the costliest of its passes
    (entries as :meth:`Backend.passes` gives them; a plan stands for one plain pass at its
    size unless it is given with its passes) for ``n`` images. ``guidance`` > 1 (the default
    when not given) doubles the denoiser's batch on a model with classifier-free guidance."""
    if isinstance(passes_or_plan, RenderPlan):
        guidance = passes_or_plan.guidance if guidance is None else guidance
        passes: Sequence[dict[str, Any]] = _passes_of(passes_or_plan)
    elif not passes_or_plan:
        raise ValueError("give a plan or at least one pass")
    else:
        passes = passes_or_plan
    guided = profile.cfg and (guidance is None or guidance > 1)
    working = max(_pass_bytes(profile, entry, n, guided) for entry in passes)
    return int(MARGIN * (profile.weight_bytes + working))


def available_ram() -> int:
    """MemAvailable from /proc/meminfo (Linux): what can be used without swapping."""
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("/proc/meminfo has no MemAvailable")


def device_budget(device: torch.device, held: int) -> int | None:
    """What a render may use on ``device``, what this process already holds included (its
    weights are part of every estimate): CUDA's free memory plus what torch has reserved;
    a CPU's available RAM plus ``held``. None where the device does not say (MPS shares
    the system's memory and reports no free figure): no guard there."""
    if device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device))
    if device.type == "cpu":
        try:
            return available_ram() + held
        except OSError:  # not Linux: no cheap figure to go by
            return None
    return None


def format_bytes(value: float) -> str:
    if value >= 2 ** 30:
        return f"{value / 2 ** 30:.1f} GiB"
    return f"{value / 2 ** 20:.0f} MiB"


def _snap(value: float, multiple: int) -> int:
    return max(multiple, int(value // multiple) * multiple)


def largest_fitting(width: int, height: int, multiple: int,
                    fits: Callable[[int, int], bool]) -> tuple[int, int] | None:
    """The largest size in ``width``:``height``'s aspect (sides multiples of ``multiple``,
    none above MAX_SIDE) for which ``fits(w, h)``; None if not even the smallest does.
    Binary search on the scale: memory only grows with the size."""
    top = min(MAX_SIDE / max(width, height), 1.0)

    def size(factor: float) -> tuple[int, int]:
        return _snap(width * factor, multiple), _snap(height * factor, multiple)

    smallest = multiple / max(width, height)
    if not fits(*size(smallest)):
        return None
    low, high = smallest, top
    for _ in range(40):
        middle = (low + high) / 2
        if fits(*size(middle)):
            low = middle
        else:
            high = middle
        if size(low) == size(high):
            break
    return size(low)


class MemoryGuard:
    """Refuses a plan whose estimated peak exceeds its device's memory (or ``limit``)."""

    def __init__(self, profile: MemoryProfile, *, device: torch.device, limit: int | None,
                 multiple: int,
                 passes: Callable[[RenderPlan], list[dict[str, Any]] | None]) -> None:
        self.profile, self.device, self.limit = profile, device, limit
        self.multiple = multiple
        self.passes = passes  # the backend's description of how it renders a plan

    def budget(self) -> int | None:
        if self.limit is not None:
            return self.limit
        return device_budget(self.device, self.profile.weight_bytes)

    def estimate(self, plan: RenderPlan) -> int:
        passes = self.passes(plan) or _passes_of(plan)
        return estimate_peak_bytes(self.profile, passes, plan.n, guidance=plan.guidance)

    def check(self, plan: RenderPlan,
              replan: Callable[[RenderPlan, int, int], RenderPlan] | None = None) -> None:
        """Raise InvalidRequestError naming the size argument if ``plan`` cannot fit.
        ``replan(plan, w, h)``: the same request's plan at another size (its passes may
        change with it); by default the plan with only its size changed."""
        budget = self.budget()
        if budget is None:
            return
        need = self.estimate(plan)
        if need <= budget:
            return
        upscale = plan.input_type == "upscale"
        argument = "scale" if upscale else ("width" if plan.width >= plan.height else "height")
        value = plan.scale if upscale else getattr(plan, argument)

        def fits(width: int, height: int) -> bool:
            other = replan(plan, width, height) if replan is not None \
                else replace(plan, width=width, height=height)
            return self.estimate(other) <= budget

        largest = largest_fitting(plan.width, plan.height, self.multiple, fits)
        where = f"{format_bytes(budget)} " + (
            "allowed" if self.limit is not None else f"available on {self.device}")
        reason = (f"is too large for this device: {plan.width}x{plan.height} with n={plan.n} "
                  f"needs about {format_bytes(need)} of memory and {where}; ")
        if largest is None:
            reason += "not even the smallest size fits"
        else:
            reason += f"the largest size that fits is {largest[0]}x{largest[1]}"
            if upscale and plan.scale == 4 and plan.init_image is not None \
                    and fits(*(2 * side for side in plan.init_image.size)):
                reason += " (scale 2 fits)"
        logger.info("refused %dx%d n=%d: needs %s, budget %s", plan.width, plan.height,
                    plan.n, format_bytes(need), format_bytes(budget))
        raise InvalidRequestError(argument, value, reason)

