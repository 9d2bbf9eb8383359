"""Choosing where and in what precision a diffusion model runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fractal.errors import InvalidRequestError

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device", "resolve_dtype"]

_DTYPES = {
    "fp16": "float16", "float16": "float16", "half": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp32": "float32", "float32": "float32", "float": "float32",
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks cuda, then mps, then cpu."""
    import torch

    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidRequestError("device", device, "is not a torch device") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidRequestError("device", device, "is not available on this machine")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` is half precision on a GPU (bf16 where supported) and fp32 on the CPU."""
    import torch

    if dtype is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise InvalidRequestError("dtype", dtype, "is not a supported dtype", choices=_DTYPES)
    return getattr(torch, name)
