"""Which adapters an operator gives each model family: an IP-Adapter (style reference) and
ControlNets (one per control type).

The configuration is plain data, the same in ``Spec2Fractal(adapters=...)`` and in the
service's ``SPEC2FRACTAL_ADAPTERS`` setting (JSON)::

    {"sd15": {"ip_adapter": {"model": "h94/IP-Adapter", "subfolder": "models",
                             "weight_name": "ip-adapter_sd15.safetensors",
                             "image_encoder": "h94/IP-Adapter",
                             "image_encoder_subfolder": "models/image_encoder"},
              "controlnets": {"canny": "lllyasviel/sd-controlnet-canny",
                              "depth": "/models/controlnet-depth"}},
     "sdxl": {...}}

A loaded model takes its family's entry (:func:`family_of`); a family with no entry has no
style reference and no controls. Sources are folders or hub ids, loaded as safetensors only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fractal.errors import InvalidRequestError
from fractal.references import CONTROL_TYPES

__all__ = [
    "FAMILIES",
    "FamilyAdapters",
    "IPAdapterSource",
    "family_of",
    "family_of_folder",
    "parse_adapters",
]

# Model families adapters are made for: their UNet or transformer shapes differ.
FAMILIES = ("sd15", "sd2", "sdxl", "sd3", "flux")
_IP_KEYS = ("model", "weight_name", "subfolder", "image_encoder", "image_encoder_subfolder")


@dataclass(frozen=True)
class IPAdapterSource:
    """Where an IP-Adapter's weights and its CLIP image encoder are (diffusers'
    ``load_ip_adapter`` arguments). ``image_encoder`` unset: ``model`` holds it, in
    ``image_encoder_subfolder`` (default ``image_encoder`` beside ``subfolder``)."""

    model: str
    weight_name: str
    subfolder: str | None = None
    image_encoder: str | None = None
    image_encoder_subfolder: str | None = None


@dataclass(frozen=True)
class FamilyAdapters:
    ip_adapter: IPAdapterSource | None = None
    controlnets: dict[str, str] = field(default_factory=dict)  # control type -> source

    def describe(self) -> dict[str, Any]:
        return {"style_reference": self.ip_adapter is not None,
                "controls": sorted(self.controlnets)}


def _text(name: str, value: Any, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(name, value, "must be a folder or hub id")
    return value.strip()


def parse_adapters(data: Mapping[str, Any] | str | None) -> dict[str, FamilyAdapters]:
    """The adapters configuration (a mapping, or its JSON text), checked; every error names
    its place, e.g. ``adapters.sd15.controlnets.canny``."""
    if data is None:
        return {}
    if isinstance(data, str):
        try:
            data = json.loads(data) if data.strip() else {}
        except json.JSONDecodeError as exc:
            raise InvalidRequestError("adapters", data, f"is not valid JSON: {exc.msg}") from None
    if not isinstance(data, Mapping):
        raise InvalidRequestError("adapters", data, "must map model families to adapters",
                                  choices=FAMILIES)
    parsed: dict[str, FamilyAdapters] = {}
    for family, entry in data.items():
        where = f"adapters.{family}"
        if family not in FAMILIES:
            raise InvalidRequestError("adapters", family, "is not a model family",
                                      choices=FAMILIES)
        if not isinstance(entry, Mapping):
            raise InvalidRequestError(where, entry, "must be an object with ip_adapter and/or "
                                      "controlnets")
        for key in entry:
            if key not in ("ip_adapter", "controlnets"):
                raise InvalidRequestError(f"{where}.{key}", entry[key], "is not an adapter kind",
                                          choices=("ip_adapter", "controlnets"))
        ip = entry.get("ip_adapter")
        source = None
        if ip is not None:
            if not isinstance(ip, Mapping):
                raise InvalidRequestError(f"{where}.ip_adapter", ip,
                                          "must be an object with model and weight_name")
            for key in ip:
                if key not in _IP_KEYS:
                    raise InvalidRequestError(f"{where}.ip_adapter.{key}", ip[key],
                                              "is not an IP-Adapter option", choices=_IP_KEYS)
            source = IPAdapterSource(
                model=_text(f"{where}.ip_adapter.model", ip.get("model")),  # type: ignore[arg-type]
                weight_name=_text(f"{where}.ip_adapter.weight_name",  # type: ignore[arg-type]
                                  ip.get("weight_name")),
                subfolder=_text(f"{where}.ip_adapter.subfolder", ip.get("subfolder"), True),
                image_encoder=_text(f"{where}.ip_adapter.image_encoder",
                                    ip.get("image_encoder"), True),
                image_encoder_subfolder=_text(f"{where}.ip_adapter.image_encoder_subfolder",
                                              ip.get("image_encoder_subfolder"), True))
        nets = entry.get("controlnets") or {}
        if not isinstance(nets, Mapping):
            raise InvalidRequestError(f"{where}.controlnets", nets,
                                      "must map control types to ControlNet models")
        controlnets = {}
        for kind, where_from in nets.items():
            if kind not in CONTROL_TYPES:
                raise InvalidRequestError(f"{where}.controlnets", kind, "is not a control type",
                                          choices=CONTROL_TYPES)
            controlnets[kind] = _text(f"{where}.controlnets.{kind}", where_from)
        parsed[family] = FamilyAdapters(ip_adapter=source, controlnets=controlnets)  # type: ignore[arg-type]
    return parsed


def _family(class_name: str, cross_attention_dim: Any) -> str | None:
    if class_name.startswith("Flux"):
        return "flux"
    if class_name.startswith("StableDiffusion3"):
        return "sd3"
    if class_name.startswith("StableDiffusionXL"):
        return "sdxl"
    if class_name.startswith("StableDiffusion"):
        # SD 2.x encodes text with OpenCLIP ViT-H (1024 wide); SD 1.x with CLIP ViT-L (768).
        return "sd2" if cross_attention_dim == 1024 else "sd15"
    return None


def family_of(pipeline: Any) -> str | None:
    """The family of a loaded diffusers pipeline; None for one no adapter is made for."""
    unet = getattr(pipeline, "unet", None)
    dim = getattr(getattr(unet, "config", None), "cross_attention_dim", None)
    return _family(type(pipeline).__name__, dim)


def family_of_folder(folder: str | Path) -> str | None:
    """The family of a diffusers model folder, read from its configs without loading it."""
    root = Path(folder).expanduser()
    try:
        index = json.loads((root / "model_index.json").read_text())
        class_name = index.get("_class_name", "")
        unet_config = root / "unet" / "config.json"
        dim = json.loads(unet_config.read_text()).get("cross_attention_dim") \
            if unet_config.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
    return _family(class_name, dim) if isinstance(class_name, str) else None
