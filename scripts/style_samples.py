"""Render one small sample per built-in style for the dashboard's style picker.

Usage: ``python scripts/style_samples.py``. Writes ``api/dashboard/styles/<slug>.jpg`` with
the built-in engine (offline, seconds on a CPU); the files are committed, so the dashboard
ships them and nothing renders at install time. The dashboard finds a style's sample by the
same slug rule (``styleSlug`` in api/dashboard/stylepicker.js): lower case, every run of
other characters a single ``-``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from fractal import GenerationRequest, Spec2Fractal, StyleLibrary

logger = logging.getLogger("style_samples")

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "api" / "dashboard" / "styles"
SIDE = 160  # shown at 80 CSS px: sharp on 2x screens, a few KB each
PROMPT = "A serene lake surrounded by mountains during sunrise"
SEED = 7


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    OUT.mkdir(parents=True, exist_ok=True)
    engine = Spec2Fractal()
    for style in StyleLibrary():
        request = GenerationRequest(prompt=PROMPT, style=style.name, width=SIDE, height=SIDE,
                                    seed=SEED)
        image = engine.generate(request)[0].convert("RGB")
        path = OUT / f"{slug(style.name)}.jpg"
        image.save(path, quality=78, optimize=True)
        logger.info("%s → %s (%d bytes)", style.name, path.relative_to(ROOT),
                    path.stat().st_size)


if __name__ == "__main__":
    main()
