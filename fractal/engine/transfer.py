"""Style transfer for the built-in engine: a reference picture's palette and texture.

* **Texture** — stroke scale, contrast and grain — is how a picture's lightness is spread over
  its detail octaves (:mod:`fractal.engine.structure`'s bands): each octave of the render is
  scaled so its contrast matches the same octave of the reference (a painting with broad
  strokes has energy in its middle octaves, a grainy photo in its finest); grain the render
  lacks is added as seeded noise.
* **Palette** — the reference's colour statistics (mean and spread of each CIE Lab channel)
  are matched, then each pixel is pulled toward the nearest of its dominant colours.
* **Composition** is a layout guide (:func:`composition_guide`): the reference's blurred
  luminance shapes the picture's coarse octaves, as an ``image`` control would.

Every step is interpolated by ``strength`` (0: the picture unchanged, exactly); pure and
deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from fractal.engine.structure import Guide, bands, collapse, from_lab, octave_count, to_lab
from fractal.preprocess import fit

__all__ = ["COMPOSITION_END", "STYLE_MODES", "StyleSource", "composition_guide",
           "transfer_style"]

F = np.float32
STYLE_MODES = ("style", "composition", "both")
COMPOSITION_END = 0.4  # the share of octaves (coarse first) a reference's layout shapes
DOMINANT_COLOURS = 6
DOMINANT_PULL = 0.45  # how far a pixel moves toward its nearest dominant colour at strength 1
GAIN_RANGE = (0.35, 3.0)  # an octave's contrast is never scaled beyond this


@dataclass(frozen=True)
class StyleSource:
    """A style reference: ``image`` (H, W, 3) uint8 at any size."""

    image: np.ndarray
    strength: float  # 0 … 1
    mode: str = "style"  # one of STYLE_MODES

    @property
    def transfers_style(self) -> bool:
        return self.strength > 0 and self.mode in ("style", "both")

    @property
    def guides_composition(self) -> bool:
        return self.strength > 0 and self.mode in ("composition", "both")


def composition_guide(source: StyleSource, width: int, height: int) -> Guide:
    """The reference's large-scale light/dark layout as a guide for the coarse octaves."""
    fitted = np.asarray(fit(Image.fromarray(source.image), width, height))
    sigma = max(1.0, min(width, height) / 48)  # only the layout, never the reference's detail
    import cv2

    blurred = cv2.GaussianBlur(fitted, (0, 0), sigma)
    return Guide("layout", blurred, scale=2.0 * source.strength, start=0.0, end=COMPOSITION_END)


def _dominant(reference: np.ndarray) -> np.ndarray:
    """The reference's dominant colours in Lab (median cut on a thumbnail: deterministic)."""
    thumb = Image.fromarray(reference)
    thumb.thumbnail((128, 128))
    quantised = thumb.quantize(DOMINANT_COLOURS, method=Image.Quantize.MEDIANCUT)
    palette = np.asarray(quantised.getpalette()[: 3 * DOMINANT_COLOURS], np.uint8)
    used = sorted({index for _, index in quantised.getcolors()})
    colours = palette.reshape(-1, 3)[used]
    return to_lab(colours[None])[0]


def _crop_to_aspect(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The centre of ``image`` with the picture's proportions, at the reference's own scale."""
    rows, cols = image.shape[:2]
    if cols * height > rows * width:
        keep = max(1, round(rows * width / height))
        return image[:, (cols - keep) // 2: (cols - keep) // 2 + keep]
    keep = max(1, round(cols * height / width))
    return image[(rows - keep) // 2: (rows - keep) // 2 + keep]


def _texture(lightness: np.ndarray, reference: np.ndarray, strength: float,
             seed: int) -> np.ndarray:
    """``lightness`` with each detail octave's contrast moved toward the reference's.

    Octaves are matched from the coarsest, each pyramid at its own resolution: a stroke a
    tenth of the reference wide becomes a stroke a tenth of the picture wide. Octaves finer
    than a smaller reference's finest take that finest one's contrast: grain is pixel-sized
    at any size."""
    height, width = lightness.shape
    own = bands(lightness, octave_count(height, width))
    crop = _shrink(_crop_to_aspect(reference, width, height), max(height, width))
    theirs = bands(to_lab(crop)[..., 0], octave_count(*crop.shape[:2]))
    out = [own[0]]
    for index in range(1, len(own)):
        mine = float(own[index].std())
        target = float(theirs[min(index, len(theirs) - 1)].std())
        gain = float(np.clip(target / max(mine, 1e-3), *GAIN_RANGE)) ** strength
        band = own[index] * F(gain)
        if index == len(own) - 1 and target > mine * gain:  # grain the render lacks
            rng = np.random.default_rng([seed, 0x5EED])
            missing = strength * float(np.sqrt(target**2 - (mine * gain) ** 2))
            band = band + rng.standard_normal(band.shape, dtype=F) * F(missing)
        out.append(band)
    return collapse(out)


def _palette(lab: np.ndarray, reference: np.ndarray, strength: float) -> np.ndarray:
    """``lab`` moved toward the reference's colour statistics and dominant colours."""
    import cv2  # its mean/std and per-channel arithmetic are several times numpy's speed

    mean, std = (value.ravel().astype(F) for value in cv2.meanStdDev(lab))
    ref_mean, ref_std = (value.ravel().astype(F) for value in cv2.meanStdDev(to_lab(reference)))
    gain = ref_std / np.maximum(std, F(1e-3))
    channels = [(lab[..., axis] - mean[axis]) * gain[axis] + ref_mean[axis] for axis in range(3)]
    # The nearest dominant colour of each pixel, one colour at a time (a (pixels, colours, 3)
    # array would be large and slow at 4096²).
    dominant = _dominant(reference)
    best = np.full(lab.shape[:2], np.inf, F)
    choice = np.zeros(lab.shape[:2], np.intp)
    for index, colour in enumerate(dominant):
        distance = sum((channel - F(value)) ** 2
                       for channel, value in zip(channels, colour, strict=True))
        closer = distance < best
        np.copyto(best, distance, where=closer)
        choice[closer] = index
    out = np.empty_like(lab)
    for axis, channel in enumerate(channels):
        styled = channel + (dominant[choice, axis] - channel) * F(DOMINANT_PULL)
        out[..., axis] = lab[..., axis] + (styled - lab[..., axis]) * F(strength)
    return out


def transfer_style(rgb: np.ndarray, source: StyleSource, seed: int) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 in the reference's texture and palette; ``rgb`` itself when
    the source's strength is 0 or its mode is composition only."""
    if not source.transfers_style:
        return rgb
    lab = to_lab(rgb)
    lab[..., 0] = np.clip(_texture(lab[..., 0], source.image, source.strength, seed), 0.0, 100.0)
    return from_lab(_palette(lab, _shrink(source.image, 256), source.strength))


def _shrink(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` with its long side at most ``side`` (statistics need no more)."""
    if max(image.shape[:2]) <= side:
        return image
    thumb = Image.fromarray(image)
    thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(thumb)
