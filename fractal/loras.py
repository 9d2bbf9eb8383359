"""LoRA adapters as plain data: which a request asks for, and what a LoRA file holds.

A request names LoRAs with weights (``loras=[{"name": "ink", "weight": 0.8}]``) or with
AUTOMATIC1111's prompt tags (``<lora:ink:0.8>``, taken out of the prompt's text); a style may
name some too. A name is a ``.safetensors`` file's stem in the LoRA folder, or a hub id
(``owner/repo`` or ``owner/repo/file.safetensors``). Files are read as safetensors only: the
header is parsed here without torch (what the API lists), the tensors by diffusers.

Everything here is pure Python: the API imports it to list and check LoRA files.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fractal.errors import InvalidRequestError

__all__ = [
    "LORA_SUFFIX",
    "MAX_LORAS",
    "MAX_LORA_WEIGHT",
    "LoraFile",
    "LoraSpec",
    "PlannedLora",
    "check_lora_name",
    "check_loras",
    "find_lora",
    "inspect_lora",
    "is_hub_id",
    "list_loras",
    "merge_loras",
    "parse_lora_text",
    "parse_prompt_loras",
    "read_header",
]

LORA_SUFFIX = ".safetensors"
MAX_LORAS = 8  # per request, a style's included: each is a pass over the adapted layers
MAX_LORA_WEIGHT = 4.0  # |weight|; A1111 users go to about 2, negative ones invert a LoRA
MAX_NAME_CHARS = 200
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit on its JSON header
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+\-]*")  # a file stem: no separators, no dot-dot
_HUB_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*")
# <lora:name> or <lora:name:weight> (A1111 also allows a second, text-encoder weight: ignored)
_TAG = re.compile(r"<lora:([^:<>]+)(?::([^:<>]*))?(?::[^<>]*)?>", re.IGNORECASE)


@dataclass(frozen=True)
class LoraSpec:
    name: str
    weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight}


@dataclass(frozen=True)
class PlannedLora:
    """A LoRA a render applies, and where it was asked for: ``origin`` "request", "prompt"
    (a tag) or "style"; ``field`` names it in errors (``loras[1].name``, ``prompt``,
    ``style.loras[0].name``)."""

    name: str
    weight: float
    origin: str
    field: str


@dataclass(frozen=True)
class LoraFile:
    """A LoRA file as the folder holds it. ``format`` "diffusers" or "kohya" (kohya-ss and
    Civitai's key names); ``family`` sd15, sd2, sdxl, sd3 or flux when its shapes tell, else
    None; ``short_hash`` AUTOMATIC1111's (the first 12 hex digits of the SHA-256 of the
    tensor data, after the header: Civitai's AutoV3), for records and lookups."""

    name: str
    path: Path
    size: int
    format: str
    family: str | None
    short_hash: str

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "format": self.format,
                "family": self.family, "hash": self.short_hash}


def is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) in (2, 3) and all(_HUB_PART.fullmatch(part) for part in parts) \
        and ".." not in name and (len(parts) == 2 or parts[2].endswith(LORA_SUFFIX))


def check_lora_name(name: Any, field: str) -> str:
    """A file stem in the LoRA folder or a hub id; no path may leave the folder."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequestError(field, name, "must be a LoRA's name")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        raise InvalidRequestError(field, name, f"may be at most {MAX_NAME_CHARS} characters")
    if name.endswith(LORA_SUFFIX) and "/" not in name:
        name = name[: -len(LORA_SUFFIX)]
    if not (_NAME.fullmatch(name) and ".." not in name) and not is_hub_id(name):
        raise InvalidRequestError(field, name, "must be a LoRA file's name (letters, digits, "
                                  "space . _ + -) or a hub id (owner/repo[/file.safetensors])")
    return name


def _check_weight(weight: Any, field: str) -> float:
    if weight is None:
        return 1.0
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
            or not math.isfinite(weight) or abs(weight) > MAX_LORA_WEIGHT:
        raise InvalidRequestError(field, weight, f"must be a number from {-MAX_LORA_WEIGHT:g} "
                                  f"to {MAX_LORA_WEIGHT:g}")
    return float(weight)


def check_loras(value: Any, field: str = "loras") -> tuple[LoraSpec, ...]:
    """``[{"name": ..., "weight": 1.0}, ...]`` checked, naming ``loras[i].key``."""
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise InvalidRequestError(field, value, 'must be a list of {"name", "weight"} objects')
    if len(value) > MAX_LORAS:
        raise InvalidRequestError(field, f"<{len(value)} LoRAs>",
                                  f"may hold at most {MAX_LORAS} LoRAs")
    specs: list[LoraSpec] = []
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(item, Mapping):
            raise InvalidRequestError(where, item, 'must be an object {"name", "weight"}')
        for key in item:
            if key not in ("name", "weight"):
                raise InvalidRequestError(f"{where}.{key}", item[key], "is not a LoRA option",
                                          choices=("name", "weight"))
        name = check_lora_name(item.get("name"), f"{where}.name")
        if any(spec.name.casefold() == name.casefold() for spec in specs):
            raise InvalidRequestError(f"{where}.name", name, "is named twice")
        specs.append(LoraSpec(name, _check_weight(item.get("weight"), f"{where}.weight")))
    return tuple(specs)


def parse_lora_text(text: str, field: str = "loras") -> dict[str, Any]:
    """``"ink:0.8"`` (a command line's ``--lora``, a client's shorthand) as ``{"name": "ink",
    "weight": 0.8}``; ``"ink"`` has weight 1. Checked by :func:`check_loras` later; a weight
    that is not a number is an error naming ``field`` here."""
    name, colon, weight = text.rpartition(":")
    if not colon or "/" in weight:  # no weight (a hub id has slashes, never a colon)
        return {"name": text.strip(), "weight": 1.0}
    try:
        value = float(weight) if weight.strip() else 1.0
    except ValueError:
        raise InvalidRequestError(field, text, "must be NAME or NAME:WEIGHT, the weight a "
                                  "number such as 0.8") from None
    return {"name": name.strip(), "weight": value}


def parse_prompt_loras(prompt: str | None) -> tuple[str | None, tuple[LoraSpec, ...]]:
    """The prompt without its ``<lora:name:weight>`` tags, and the LoRAs they name (field
    ``prompt`` in errors). A tag's weight defaults to 1; a later tag for a name wins."""
    if not prompt or "<" not in prompt:
        return prompt, ()
    found: dict[str, LoraSpec] = {}
    for match in _TAG.finditer(prompt):
        name = check_lora_name(match.group(1), "prompt")
        text = (match.group(2) or "").strip()
        try:
            weight = float(text) if text else 1.0
        except ValueError:
            raise InvalidRequestError("prompt", match.group(0),
                                      "has a LoRA tag whose weight is not a number") from None
        found[name.casefold()] = LoraSpec(name, _check_weight(weight, "prompt"))
    if len(found) > MAX_LORAS:
        raise InvalidRequestError("prompt", f"<{len(found)} LoRA tags>",
                                  f"may name at most {MAX_LORAS} LoRAs")
    text = _TAG.sub(" ", prompt)
    text = re.sub(r"\s*,(\s*,)+", ",", re.sub(r"[ \t]{2,}", " ", text)).strip(" ,")
    return text, tuple(found.values())


def merge_loras(request: Sequence[LoraSpec], tags: Sequence[LoraSpec],
                style: Sequence[LoraSpec]) -> tuple[PlannedLora, ...]:
    """One list, each name once: the request's ``loras`` over prompt tags over the style's."""
    merged: dict[str, PlannedLora] = {}
    for origin, specs in (("style", style), ("prompt", tags), ("request", request)):
        for index, spec in enumerate(specs):
            field = {"style": f"style.loras[{index}].name", "prompt": "prompt",
                     "request": f"loras[{index}].name"}[origin]
            merged[spec.name.casefold()] = PlannedLora(spec.name, spec.weight, origin, field)
    if len(merged) > MAX_LORAS:
        raise InvalidRequestError("loras", f"<{len(merged)} LoRAs>",
                                  f"may hold at most {MAX_LORAS} LoRAs, the style's included")
    return tuple(merged.values())


# -- files ---------------------------------------------------------------------------------

def read_header(path: str | Path, field: str = "lora") -> tuple[dict[str, Any], int]:
    """A safetensors file's JSON header (tensor name -> dtype, shape, offsets) and its size
    in bytes. Anything else, a pickled checkpoint above all, is refused unread."""
    try:
        with open(path, "rb") as file:
            head = file.read(8)
            if len(head) != 8:
                raise InvalidRequestError(field, str(path), "is not a safetensors file")
            (length,) = struct.unpack("<Q", head)
            if not 2 <= length <= MAX_HEADER_BYTES:
                raise InvalidRequestError(field, str(path), "is not a safetensors file")
            raw = file.read(length)
    except OSError as exc:
        raise InvalidRequestError(field, str(path), f"cannot be read: {exc.strerror}") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError(field, str(path), "is not a safetensors file") from None
    if len(raw) != length or not isinstance(header, dict) or not raw.startswith(b"{"):
        raise InvalidRequestError(field, str(path), "is not a safetensors file")
    return header, length


def _short_hash(path: Path, header_length: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        file.seek(8 + header_length)
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def _format(keys: Sequence[str]) -> str:
    if any(key.startswith(("lora_unet_", "lora_te", "lora_transformer_")) for key in keys):
        return "kohya"
    if any(".lora_A." in key or ".lora.down." in key or ".lora_linear_layer." in key
           for key in keys):
        return "diffusers"
    return "unknown"


def _family(tensors: Mapping[str, Any]) -> str | None:
    """What model a LoRA was trained for, from its key names and the width of its
    cross-attention inputs (768: SD 1.x, 1024: SD 2.x, 2048: SDXL)."""
    keys = list(tensors)
    if any("single_transformer_blocks" in key or "double_blocks" in key for key in keys):
        return "flux"
    if any(key.startswith(("transformer.", "lora_transformer_")) for key in keys):
        return "sd3"  # a transformer that is not FLUX's
    if any(key.startswith(("text_encoder_2.", "lora_te2_")) for key in keys):
        return "sdxl"
    for key in keys:
        if "attn2" in key and "to_k" in key and ("lora_A" in key or "lora_down" in key
                                                 or ".down." in key):
            shape = tensors[key].get("shape") if isinstance(tensors[key], Mapping) else None
            if isinstance(shape, list) and len(shape) == 2:
                return {768: "sd15", 1024: "sd2", 2048: "sdxl"}.get(shape[1])
    return None


def inspect_lora(path: str | Path, name: str | None = None) -> LoraFile:
    """What a LoRA file is, read from its header (and its tensor bytes, for the hash)."""
    file = Path(path)
    header, length = read_header(file)
    tensors = {key: value for key, value in header.items() if key != "__metadata__"}
    if not tensors:
        raise InvalidRequestError("lora", str(file), "holds no tensors")
    return LoraFile(name=name or file.name.removesuffix(LORA_SUFFIX), path=file,
                    size=file.stat().st_size, format=_format(list(tensors)),
                    family=_family(tensors), short_hash=_short_hash(file, length))


# Hashing reads the whole file: done once per file version (path, size, mtime).
_INSPECTED: dict[tuple[str, int, int], LoraFile] = {}


def _inspect_cached(path: Path) -> LoraFile:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    found = _INSPECTED.get(key)
    if found is None:
        found = _INSPECTED[key] = inspect_lora(path)
    return found


def find_lora(name: str, folder: str | Path | None, field: str = "loras") -> LoraFile:
    """The LoRA file ``name`` names in ``folder`` (case-insensitively); an error naming
    ``field`` and the folder's LoRAs when there is none."""
    if folder is None:
        raise InvalidRequestError(field, name, "names a LoRA, but no LoRA folder is set")
    root = Path(folder).expanduser()
    stem = name[: -len(LORA_SUFFIX)] if name.endswith(LORA_SUFFIX) else name
    candidates = {path.name.removesuffix(LORA_SUFFIX).casefold(): path
                  for path in _files(root)}
    path = candidates.get(stem.casefold())
    if path is None:
        raise InvalidRequestError(field, name, "is not a LoRA in the LoRA folder",
                                  choices=sorted(p.name.removesuffix(LORA_SUFFIX)
                                                 for p in candidates.values()))
    try:
        return _inspect_cached(path)
    except InvalidRequestError as exc:
        raise InvalidRequestError(field, name, exc.reason) from None


def _files(root: Path) -> list[Path]:
    try:
        return sorted(path for path in root.iterdir()
                      if path.suffix == LORA_SUFFIX and path.is_file())
    except OSError:
        return []


def list_loras(folder: str | Path | None) -> list[LoraFile]:
    """Every readable LoRA in ``folder``, by name; files that are not safetensors are left
    out (and logged by the caller's listing, not raised)."""
    if folder is None:
        return []
    found = []
    for path in _files(Path(folder).expanduser()):
        try:
            found.append(_inspect_cached(path))
        except (InvalidRequestError, OSError):
            continue
    return found
