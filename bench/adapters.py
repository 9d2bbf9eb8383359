"""The cost of a style reference (IP-Adapter) and of controls (ControlNet) on the tiny SD
pipeline: seconds per 64×64 text-to-image render, median of a few.

Cases: the model without adapters; the same model with an IP-Adapter and two ControlNets
loaded but none used (neutral embeddings at scale 0); a style reference the first time its
picture is seen (its CLIP embeddings computed: a new picture each repeat) and again (cached);
one canny control (Canny preprocessing included); two controls (canny + depth); a reference
and a control together. Every case renders once before any is timed (pipelines built, caches
warm); then the cases run in rounds, interleaved. The tiny adapters are random-weight
(tests/tiny_adapters.py), so the numbers are the machinery's overhead relative to a tiny
UNet, not a real model's.

Run: python bench/adapters.py [--repeat 5] [--steps 20]. Prints a table; not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image, ImageDraw

from fractal import Spec2Fractal


def measure(cases: dict[str, Callable[[int], object]], repeat: int
            ) -> dict[str, list[float]]:
    """Seconds of each case's ``render(i)``, ``repeat`` times, the cases interleaved (one
    round of every case at a time: a machine whose load changes over the run shifts every
    case alike), after one untimed round."""
    for render in cases.values():
        render(-1)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for index in range(repeat):
        for name, render in cases.items():
            start = time.perf_counter()
            render(index)
            times[name].append(time.perf_counter() - start)
    return times


def picture(seed: int) -> Image.Image:
    """A reference or control picture: shapes in colours that differ with ``seed``."""
    rng = np.random.default_rng(seed + 10)
    image = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = (int(v) for v in rng.integers(0, 70, 2))
        draw.rectangle((x, y, x + 24, y + 20), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    from tests.tiny_adapters import adapters_config, build_adapters
    from tests.tiny_models import build_tiny_sd

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = build_tiny_sd(root / "tiny-sd", root)
        folders = build_adapters(model, root / "adapters")
        plain_model = Spec2Fractal(str(model))
        start = time.perf_counter()
        adapted = Spec2Fractal(str(model), adapters=adapters_config(folders))
        load = time.perf_counter() - start

        prompt, steps = "a lighthouse on a cliff", args.steps
        canny = {"type": "canny", "image": picture(100)}
        depth = {"type": "depth", "image": picture(101).convert("L").convert("RGB")}
        same = picture(200)

        def text(model: Spec2Fractal, **options: object) -> Callable[[int], object]:
            return lambda index: model.generate_from_text(prompt, steps=steps, seed=1,
                                                          **options)

        cases = {
            "no adapters loaded": text(plain_model),
            "adapters loaded, none used": text(adapted),
            # A new picture each time: its embeddings are computed in the render.
            "style reference, first render of a picture": lambda index:
                adapted.generate_from_text(prompt, steps=steps, seed=1,
                                           style_image=picture(1000 + index)),
            "style reference, cached embeddings": text(adapted, style_image=same),
            "one canny control": text(adapted, control=[canny]),
            "two controls (canny + depth)": text(adapted, control=[canny, depth]),
            "style reference + canny control": text(adapted, style_image=same,
                                                    control=[canny]),
        }
        times = measure(cases, args.repeat)

    base = statistics.median(times["no adapters loaded"])
    print(f"tiny SD (64x64), text-to-image, {steps} steps, {args.repeat} rounds; "
          f"adapters (IP-Adapter + 2 ControlNets) loaded in {load:.2f} s")
    print(f"{'case':<46} {'median s':>9} {'min s':>7} {'median vs none':>15}")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{name:<46} {median:>9.3f} {min(seconds):>7.3f} {median / base:>14.2f}x")


if __name__ == "__main__":
    main()
