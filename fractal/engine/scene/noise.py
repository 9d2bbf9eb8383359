"""Fractal noise: fBm and ridged multifractals from random lattices.

Each octave is a small random lattice interpolated with Catmull-Rom splines. Interpolation
is separable, so a 2-D octave is two matrix products (``My @ lattice @ Mx.T``): fast on any
BLAS and exactly resolution-independent (coordinates are in units of the picture's width).
"""

from __future__ import annotations

import numpy as np

from fractal.engine.scene.vocabulary import stable_hash


def generator(seed: int, prompt_hash: int, *names: str) -> np.random.Generator:
    """An independent stream per (seed, prompt, purpose), so elements never shift each other."""
    words = [stable_hash(name) for name in names]
    return np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, prompt_hash, *words])


def interp_matrix(coords: np.ndarray, freq: float, phase: float = 0.0) -> np.ndarray:
    """Catmull-Rom weights sampling a lattice of ``freq`` cells per unit at ``coords``.

    Returns (len(coords), n_lattice) float32; the lattice needs ``n_lattice`` values.
    """
    u = np.asarray(coords, dtype=np.float64) * freq + phase
    lo = np.floor(u.min()) - 1
    u = u - lo
    i = np.floor(u).astype(np.int64)
    t = u - i
    t2, t3 = t * t, t * t * t
    weights = (
        (-t3 + 2 * t2 - t) / 2,
        (3 * t3 - 5 * t2 + 2) / 2,
        (-3 * t3 + 4 * t2 + t) / 2,
        (t3 - t2) / 2,
    )
    n_lat = int(i.max()) + 3
    matrix = np.zeros((len(u), n_lat), dtype=np.float32)
    rows = np.arange(len(u))
    for k, w in enumerate(weights):
        matrix[rows, i + k - 1] += w
    return matrix


def _octaves(base_freq: float, octaves: int, limit: float, lacunarity: float) -> list[float]:
    freqs = []
    f = base_freq
    for _ in range(max(1, octaves)):
        if freqs and f > limit:
            break
        freqs.append(f)
        f *= lacunarity
    return freqs


def fbm2d(
    rng: np.random.Generator,
    ys: np.ndarray,
    xs: np.ndarray,
    *,
    freq: float,
    octaves: int,
    gain: float = 0.5,
    lacunarity: float = 2.0,
    stretch: float = 1.0,
) -> np.ndarray:
    """fBm sampled on the grid ``ys × xs`` (units of picture width); about unit variance.

    ``stretch`` > 1 squashes features vertically (clouds, waves).
    """
    limit = len(xs) / 3.0
    out = np.zeros((len(ys), len(xs)), dtype=np.float32)
    amp, total = 1.0, 0.0
    for f in _octaves(freq, octaves, limit, lacunarity):
        mx = interp_matrix(xs, f, rng.random())
        my = interp_matrix(ys, f * stretch, rng.random())
        lattice = rng.standard_normal((my.shape[1], mx.shape[1]), dtype=np.float32)
        out += (amp * (my @ lattice)) @ mx.T
        total += amp * amp
        amp *= gain
    out *= np.float32(1.0 / (0.75 * np.sqrt(total)))
    return out


def fbm1d(
    rng: np.random.Generator,
    xs: np.ndarray,
    *,
    freq: float,
    octaves: int,
    gain: float = 0.5,
    lacunarity: float = 2.0,
) -> np.ndarray:
    """1-D fBm along ``xs``; about unit variance."""
    limit = len(xs) / 2.0
    out = np.zeros(len(xs), dtype=np.float32)
    amp, total = 1.0, 0.0
    for f in _octaves(freq, octaves, limit, lacunarity):
        m = interp_matrix(xs, f, rng.random())
        out += amp * (m @ rng.standard_normal(m.shape[1], dtype=np.float32))
        total += amp * amp
        amp *= gain
    out *= np.float32(1.0 / (0.75 * np.sqrt(total)))
    return out


def ridged1d(
    rng: np.random.Generator,
    xs: np.ndarray,
    *,
    freq: float,
    octaves: int,
    roughness: float = 0.9,
    offset: float = 1.0,
    feedback: float = 2.0,
    lacunarity: float = 2.1,
) -> np.ndarray:
    """Musgrave's ridged multifractal along ``xs``, normalised to 0..1 (mountain skylines).

    Sharp ridges come from ``offset - |noise|``; each octave is weighted by the previous
    one's signal, so detail piles up on the peaks and valleys stay smooth.
    """
    limit = len(xs) / 1.5
    out = np.zeros(len(xs), dtype=np.float32)
    weight = np.ones(len(xs), dtype=np.float32)
    for k, f in enumerate(_octaves(freq, octaves, limit, lacunarity)):
        m = interp_matrix(xs, f, rng.random())
        noise = m @ rng.uniform(-1.0, 1.0, m.shape[1]).astype(np.float32)
        signal = (offset - np.abs(noise)) ** 2 * weight
        weight = np.clip(signal * feedback, 0.0, 1.0)
        out += signal * np.float32(roughness**k)
    out -= out.min()
    peak = out.max()
    return out / peak if peak > 0 else out


def grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in units of the picture width: (ys, xs)."""
    xs = (np.arange(width, dtype=np.float64) + 0.5) / width
    ys = (np.arange(height, dtype=np.float64) + 0.5) / width
    return ys, xs
