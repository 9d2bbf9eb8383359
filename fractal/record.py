"""What was rendered, attached to every image: A1111-style ``parameters`` text plus JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import zlib
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING, Any

from PIL import Image, PngImagePlugin

from fractal.containers import png_chunks

if TYPE_CHECKING:
    from fractal.backends.base import Backend
    from fractal.plan import RenderPlan

__all__ = ["PARAMETERS_KEY", "RECORD_KEY", "GenerationRecord", "attach_record", "parse_record",
           "read_record", "record_from_png", "record_of"]

PARAMETERS_KEY = "parameters"  # the key A1111, ComfyUI importers and civitai read
RECORD_KEY = "spec2fractal"


@cache
def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("spec2fractal", "diffusers", "torch", "transformers", "numpy", "pillow"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True, kw_only=True)
class GenerationRecord:
    input_type: str
    prompt: str  # the prompt as the model saw it, style template and controls applied
    user_prompt: str | None
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    sampler: str
    model: str
    style: str | None = None
    lighting: str | None = None
    colors: list[str] | None = None
    texture: float | None = None
    strength: float | None = None
    index: int = 0
    batch_size: int = 1
    scale: int | None = None  # input_type "upscale": the result is scale × the source
    # How the render ran when it took more than one pass (two-pass high resolution, an
    # upscale, tiling): one entry per pass, e.g. {"kind": "refine", "width": 2048,
    # "height": 2048, "steps": 10, "strength": 0.35, "tiles": 9, "vae_tiled": true}.
    passes: list[dict[str, Any]] | None = None
    # Reference images by the hash of their pixels (fractal.references), with their settings:
    # {"sha256", "strength", "mode"} and [{"type", "sha256", "scale", "start", "end",
    # "preprocess"}, ...]; the adapter a diffusion model used is named in "adapter"/"model".
    style_reference: dict[str, Any] | None = None
    controls: list[dict[str, Any]] | None = None
    # Inpainting: {"sha256" (of the mask's pixels), "blur", "area", "padding"}; outpainting:
    # {"left", "right", "top", "bottom"}.
    mask: dict[str, Any] | None = None
    expand: dict[str, int] | None = None
    # LoRAs: [{"name", "weight", "hash" (A1111's short hash; None for a skipped one),
    # "applied": bool, "note": why not, when skipped}] (fractal.loras).
    loras: list[dict[str, Any]] | None = None
    # A diffusion model's speed options and memory mode when any is not the default
    # (fractal.backends.speed.describe): {"dtype", "compile", "offload", ...}.
    speed: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=library_versions)

    def to_parameters(self) -> str:
        """The text A1111 writes into a PNG, so other tools can read our images."""
        applied = [lora for lora in self.loras or () if lora.get("applied")]
        # A1111 keeps LoRAs as tags in the prompt, and their hashes beside: so do we.
        tags = "".join(f" <lora:{lora['name']}:{lora['weight']:g}>" for lora in applied)
        lines = [self.prompt + tags]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        details = [
            f"Steps: {self.steps}",
            f"Sampler: {self.sampler}",
            f"CFG scale: {self.guidance:g}",
            f"Seed: {self.seed}",
            f"Size: {self.width}x{self.height}",
            f"Model: {self.model}",
        ]
        if self.strength is not None:
            details.append(f"Denoising strength: {self.strength:g}")
        if self.style:
            details.append(f"Style: {self.style}")
        if self.lighting:
            details.append(f"Lighting: {self.lighting}")
        if self.colors:
            details.append(f"Colors: {' '.join(self.colors)}")
        if self.texture is not None:
            details.append(f"Texture: {self.texture:g}")
        refine = next((p for p in self.passes or () if p.get("kind") == "refine"), None)
        first = next((p for p in self.passes or () if p.get("kind") == "base"), None)
        if refine and first:  # A1111's hires fix fields
            details.append(f"Hires upscale: {self.width / first['width']:.3g}")
            details.append(f"Hires steps: {refine['steps']}")
            details.append(f"Hires upscaler: {refine.get('upscaler', 'Lanczos')}")
            if self.strength is None:
                details.append(f"Denoising strength: {refine['strength']:g}")
        if self.scale:
            details.append(f"Upscale: {self.scale}")
        if self.style_reference:  # A1111's IP-Adapter unit, as its ControlNet extension writes
            reference = self.style_reference
            details.append(f"Style reference: \"{reference.get('mode')}, weight "
                           f"{reference.get('strength')}, {str(reference.get('sha256'))[:10]}\"")
        for index, unit in enumerate(self.controls or ()):
            details.append(f"ControlNet {index}: \"Module: {unit.get('type')}, Weight: "
                           f"{unit.get('scale')}, Guidance Start: {unit.get('start')}, "
                           f"Guidance End: {unit.get('end')}\"")
        if self.mask:  # A1111's inpaint fields, as it writes them
            details.append(f"Mask blur: {self.mask.get('blur')}")
            if self.mask.get("area") == "masked":
                details.append("Inpaint area: Only masked")
                details.append(f"Masked area padding: {self.mask.get('padding')}")
        if self.expand:
            sides = ", ".join(f"{side} {pixels}" for side, pixels in self.expand.items() if pixels)
            details.append(f"Outpaint: \"{sides}\"")
        if applied:
            hashes = ", ".join(f"{lora['name']}: {lora.get('hash')}" for lora in applied)
            details.append(f'Lora hashes: "{hashes}"')
        if self.batch_size > 1:
            details.append(f"Batch size: {self.batch_size}, Batch pos: {self.index}")
        details.append(f"Version: spec2fractal {self.versions.get('spec2fractal', 'dev')}")
        lines.append(", ".join(details))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GenerationRecord:
        return cls(**json.loads(text))


def record_of(plan: RenderPlan, index: int, backend: Backend) -> GenerationRecord:
    """The record of image ``index`` of a rendered plan, as ``backend`` rendered it."""
    return GenerationRecord(
        input_type=plan.input_type,
        prompt=plan.prompt,
        user_prompt=plan.user_prompt,
        negative_prompt=plan.negative_prompt,
        width=plan.width,
        height=plan.height,
        steps=plan.steps,
        guidance=plan.guidance,
        seed=plan.seeds[index],
        sampler=backend.sampler_label(plan),
        model=backend.name,
        style=plan.style.name if plan.style else None,
        lighting=plan.lighting,
        colors=list(plan.colors) if plan.colors else None,
        texture=plan.texture,
        strength=plan.strength,
        index=index,
        batch_size=plan.n,
        scale=plan.scale,
        passes=backend.passes(plan),
        style_reference=plan.style_reference.describe() if plan.style_reference else None,
        controls=[unit.describe() for unit in plan.controls] or None,
        loras=backend.loras(plan),
        speed=_speed(backend),
    )


def _speed(backend: Backend) -> dict[str, Any] | None:
    speed = getattr(backend, "speed", None)
    defaults = {"compile": None, "channels_last": False, "fuse_qkv": False, "vae": None,
                "step_cache": None, "offload": "none"}
    if not speed or all(speed.get(key) == value for key, value in defaults.items()):
        return None
    return dict(speed)


def attach_record(image: Image.Image, record: GenerationRecord) -> Image.Image:
    """Put the record in ``image.info``, and make a plain ``image.save("x.png")`` keep it."""
    image.info[PARAMETERS_KEY] = record.to_parameters()
    image.info[RECORD_KEY] = record.to_json()
    chunks = PngImagePlugin.PngInfo()
    chunks.add_text(PARAMETERS_KEY, image.info[PARAMETERS_KEY])
    chunks.add_text(RECORD_KEY, image.info[RECORD_KEY])
    # Pillow reads default save options from the image itself (other formats ignore pnginfo).
    image.encoderinfo = {"pnginfo": chunks, "compress_level": 1}
    return image


def read_record(image: Image.Image) -> GenerationRecord | None:
    """The record of an image this library made (in memory or reopened from a saved PNG)."""
    text = image.info.get(RECORD_KEY)
    return GenerationRecord.from_json(text) if text else None


# A record's JSON is a few kB (prompts are at most 4000 characters); a text chunk far larger
# than this is not one of ours, and is not read.
MAX_RECORD_BYTES = 256 * 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_PNG_CHUNKS = 1000  # our own PNGs hold a handful before their pixels
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "input_type": (str,), "prompt": (str,), "negative_prompt": (str,), "sampler": (str,),
    "model": (str,), "width": (int,), "height": (int,), "steps": (int,), "seed": (int,),
    "index": (int,), "batch_size": (int,), "guidance": (int, float),
}
_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "user_prompt": (str,), "style": (str,), "lighting": (str,), "colors": (list,),
    "texture": (int, float), "strength": (int, float), "scale": (int,), "passes": (list,),
    "versions": (dict,), "style_reference": (dict,), "controls": (list,),
    "mask": (dict,), "expand": (dict,), "loras": (list,), "speed": (dict,),
}


def parse_record(data: Any) -> GenerationRecord | None:
    """A record from untrusted data (JSON text or a decoded dict), or None when it is not a
    well-typed one. Its values are not checked beyond their types: whoever acts on them
    checks them as it would a request's."""
    try:
        if isinstance(data, (str, bytes)):
            if len(data) > MAX_RECORD_BYTES:
                return None
            data = json.loads(data)
        if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
            return None
        for name, types in _FIELD_TYPES.items():
            if not _typed(data.get(name), types):
                return None
        for name, types in _OPTIONAL_TYPES.items():
            if data.get(name) is not None and not _typed(data[name], types):
                return None
        if any(not isinstance(color, str) for color in data.get("colors") or ()) or \
                any(not isinstance(entry, dict) for entry in data.get("passes") or ()) or \
                any(not isinstance(entry, dict) for entry in data.get("controls") or ()):
            return None
        return GenerationRecord(**data)
    except (ValueError, TypeError, RecursionError):  # bad JSON, unknown or missing fields
        return None


def _typed(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) or not isinstance(value, types):
        return False
    return not isinstance(value, float) or math.isfinite(value)


def record_from_png(data: bytes) -> GenerationRecord | None:
    """The record in a PNG file's text chunks (``tEXt`` or ``iTXt``, before its pixels), read
    without a decoder: a bounded walk over the chunk list. None for anything else (another
    format, no record, a damaged or hostile chunk)."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    key = RECORD_KEY.encode("latin-1") + b"\0"
    for count, chunk in enumerate(png_chunks(data)):
        if count >= _MAX_PNG_CHUNKS or chunk.kind in (b"IDAT", b"IEND") \
                or chunk.end > len(data):
            return None
        if chunk.kind in (b"tEXt", b"iTXt") and chunk.length <= MAX_RECORD_BYTES + 64 and \
                data.startswith(key, chunk.start):
            text = _chunk_text(chunk.kind, data[chunk.start + len(key):chunk.end - 4])
            if text is not None:
                return parse_record(text)
    return None


def _chunk_text(kind: bytes, rest: bytes) -> str | None:
    if kind == b"tEXt":
        return rest.decode("latin-1")
    if kind != b"iTXt" or len(rest) < 2:
        return None
    compressed, rest = rest[0], rest[2:]
    _language, _, rest = rest.partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    try:
        if compressed:
            inflater = zlib.decompressobj()
            text = inflater.decompress(text, MAX_RECORD_BYTES + 1)  # bounded: no zip bomb
            if len(text) > MAX_RECORD_BYTES:
                return None
        return text.decode("utf-8")
    except (zlib.error, UnicodeDecodeError):
        return None
