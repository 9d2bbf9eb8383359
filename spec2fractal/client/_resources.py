"""The calls of ``client.styles`` and ``client.loras``, written once for both clients (the
shape of :mod:`spec2fractal.client._calls`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from spec2fractal.client._calls import Call, call_json, request
from spec2fractal.client._core import ClientConfig, lora_list
from spec2fractal.client.types import LoraInfo, StyleInfo

__all__ = ["create_style", "delete_lora", "delete_style", "get_style", "list_loras",
           "list_styles", "style_body", "update_style", "upload_lora"]

LoraFileInput = bytes | str | Path


def _path(prefix: str, name: str) -> str:
    return f"{prefix}/{quote(name, safe='')}"


def style_body(name: str | None, prompt: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """POST/PUT /styles's body; ``loras`` in any shape ``lora_list`` reads."""
    body = {key: value for key, value in options.items() if value is not None}
    if "loras" in body:
        body["loras"] = lora_list(body["loras"])
    if name is not None:
        body["name"] = name
    body["prompt"] = prompt
    return body


def list_styles(config: ClientConfig) -> Call[list[StyleInfo]]:
    data = yield from call_json(config, "GET", "/styles")
    return [StyleInfo.model_validate(style) for style in data["styles"]]


def get_style(config: ClientConfig, name: str) -> Call[StyleInfo]:
    return StyleInfo.model_validate((yield from call_json(config, "GET",
                                                          _path("/styles", name))))


def create_style(config: ClientConfig, body: Mapping[str, Any]) -> Call[StyleInfo]:
    return StyleInfo.model_validate((yield from call_json(config, "POST", "/styles",
                                                          json=dict(body))))


def update_style(config: ClientConfig, name: str, body: Mapping[str, Any]) -> Call[StyleInfo]:
    return StyleInfo.model_validate((yield from call_json(config, "PUT", _path("/styles", name),
                                                          json=dict(body))))


def delete_style(config: ClientConfig, name: str) -> Call[None]:
    yield from request(config, "DELETE", _path("/styles", name))


def list_loras(config: ClientConfig) -> Call[list[LoraInfo]]:
    data = yield from call_json(config, "GET", "/loras")
    return [LoraInfo.model_validate(lora) for lora in data["loras"]]


def upload_lora(config: ClientConfig, file: LoraFileInput, name: str | None,
                filename: str | None) -> Call[LoraInfo]:
    """POST /loras: a .safetensors file (a path, or its bytes with ``filename``)."""
    if isinstance(file, (str, Path)):
        path = Path(file)
        data, filename = path.read_bytes(), filename or path.name
    else:
        data = file
    files = {"file": (filename or f"{name or 'lora'}.safetensors", data,
                      "application/octet-stream")}
    fields = {"name": name} if name is not None else {}
    return LoraInfo.model_validate((yield from call_json(config, "POST", "/loras",
                                                         files=files, data=fields)))


def delete_lora(config: ClientConfig, name: str) -> Call[None]:
    yield from request(config, "DELETE", _path("/loras", name))
