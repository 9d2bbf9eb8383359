"""Shared helpers for the paint effects: types, resizing, blurs, colour maths, progress."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

log = logging.getLogger("fractal.engine.paint")

RGB = tuple[int, int, int]
Palette = Sequence[RGB]
# progress(step, total, preview): preview is the current canvas (H, W, 3) uint8, or None.
Progress = Callable[[int, int, "np.ndarray | None"], None]

# Expensive (non pixel-wise) effects run at most at this many pixels on the long side and are
# upscaled afterwards; strokes and filter radii scale with the working size, so the look does not
# depend on the output resolution and memory stays bounded for 4096² inputs.
WORK_LONG_SIDE = 2048

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_float(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) → float32 in 0..1."""
    return rgb.astype(np.float32) * np.float32(1.0 / 255.0)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float 0..1 → uint8, clipped and rounded."""
    out = np.clip(img, 0.0, 1.0) * np.float32(255.0)
    out += np.float32(0.5)
    return out.astype(np.uint8)


def luminance(img: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of a float (H, W, 3) image."""
    return img @ LUMA


def resize(rgb: np.ndarray, width: int, height: int, resample: int = Image.LANCZOS) -> np.ndarray:
    """Resize a uint8 RGB array with Pillow."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((width, height), resample))


def resize_float(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a single-channel float32 array (bilinear)."""
    if img.shape[1] == width and img.shape[0] == height:
        return img.astype(np.float32, copy=False)
    pil = Image.fromarray(img.astype(np.float32, copy=False), mode="F")
    return np.asarray(pil.resize((width, height), Image.BILINEAR), dtype=np.float32)


def working_copy(rgb: np.ndarray, long_side: int = WORK_LONG_SIDE) -> np.ndarray:
    """Downscale ``rgb`` so its long side is at most ``long_side`` (never upscales)."""
    h, w = rgb.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1.0:
        return rgb
    return resize(rgb, max(1, round(w * scale)), max(1, round(h * scale)))


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the spatial axes only (works for (H, W) and (H, W, C))."""
    if sigma <= 0.05:
        return img.astype(np.float32, copy=False)
    sig = (sigma, sigma, 0) if img.ndim == 3 else sigma
    return ndimage.gaussian_filter(img.astype(np.float32, copy=False), sig, mode="nearest")


def fast_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Large-radius blur: downsample, blur, upsample (bilinear). Good for blooms and washes."""
    h, w = img.shape[:2]
    factor = max(1, int(sigma // 4))
    if factor == 1:
        return blur(img, sigma)
    sh, sw = max(1, h // factor), max(1, w // factor)
    chans = [img] if img.ndim == 2 else [img[..., c] for c in range(img.shape[2])]
    out = []
    for ch in chans:
        small = resize_float(ch, sw, sh)
        small = blur(small, sigma / factor)
        out.append(resize_float(small, w, h))
    return out[0] if img.ndim == 2 else np.stack(out, axis=-1)


def simplify(rgb: np.ndarray, size: int) -> np.ndarray:
    """Edge-keeping simplification (a median ``size`` wide), so flat areas come out clean.

    A large median costs size² per pixel; the same look comes from a 5-pixel median on a
    picture shrunk by size/5, brought back up smoothly.
    """
    h, w = rgb.shape[:2]
    factor = max(1, -(-size // 5))  # ceil: never a median wider than 5 at full size
    image = Image.fromarray(rgb)
    if factor > 1:
        image = image.resize((max(1, w // factor), max(1, h // factor)), Image.Resampling.BOX)
    image = image.filter(ImageFilter.MedianFilter(5 if factor > 1 else max(3, size | 1)))
    if factor > 1:
        image = image.resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(image)


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def value_noise(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in ~-1..1 with features of about ``scale`` pixels (bicubic-upsampled grid)."""
    h, w = shape
    gh, gw = max(2, int(h / max(scale, 1.0)) + 2), max(2, int(w / max(scale, 1.0)) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    pil = Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC)
    arr = np.asarray(pil, dtype=np.float32)
    return arr / max(float(np.abs(arr).max()), 1e-6)


def fractal_noise(
    shape: tuple[int, int], scale: float, rng: np.random.Generator, octaves: int = 3
) -> np.ndarray:
    """Sum of value-noise octaves, normalised to roughly -1..1."""
    total = np.zeros(shape, np.float32)
    amp, norm = 1.0, 0.0
    for _ in range(octaves):
        total += np.float32(amp) * value_noise(shape, scale, rng)
        norm += amp
        amp *= 0.5
        scale /= 2.0
    return total / np.float32(norm)


def structure_angle(lum: np.ndarray, sigma_grad: float, sigma_tensor: float) -> tuple[
    np.ndarray, np.ndarray
]:
    """Edge-tangent angle (radians, direction *along* edges) and coherence 0..1."""
    smooth = blur(lum, sigma_grad)
    gy = ndimage.sobel(smooth, axis=0)
    gx = ndimage.sobel(smooth, axis=1)
    jxx = blur(gx * gx, sigma_tensor)
    jyy = blur(gy * gy, sigma_tensor)
    jxy = blur(gx * gy, sigma_tensor)
    grad_angle = 0.5 * np.arctan2(2.0 * jxy, jxx - jyy)
    diff = np.sqrt((jxx - jyy) ** 2 + 4.0 * jxy**2)
    coherence = diff / (jxx + jyy + 1e-6)
    return (grad_angle + np.pi / 2).astype(np.float32), coherence.astype(np.float32)


def nearest_index(pixels: np.ndarray, palette: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """Index of the nearest palette colour for each row of ``pixels`` (N, 3), chunked."""
    out = np.empty(pixels.shape[0], np.intp)
    pal = palette.astype(np.float32)
    pal_sq = (pal * pal).sum(1)
    for start in range(0, pixels.shape[0], chunk):
        block = pixels[start : start + chunk].astype(np.float32)
        d = pal_sq[None, :] - 2.0 * block @ pal.T
        out[start : start + chunk] = np.argmin(d, axis=1)
    return out


def report(progress: Progress | None, step: int, total: int, preview: np.ndarray | None) -> None:
    """Call ``progress`` if given; exceptions (cancellation) propagate on purpose."""
    if progress is not None:
        progress(step, total, preview)


def scale_of(shape: tuple[int, ...]) -> float:
    """A size measure for resolution-independent radii: the geometric mean of H and W."""
    return float(np.sqrt(shape[0] * shape[1]))
