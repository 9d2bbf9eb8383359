"""Render times through the library: the built-in engine at 1024² and a tiny diffusers pipeline.

Run: python bench/render_times.py [--repeat N]. Prints a table; not a test.
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

from fractal import Spec2Fractal


def timed(render: Callable[[], object], repeat: int) -> tuple[float, float]:
    render()  # warm-up: imports, caches, first-call allocations
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        render()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = []

    engine = Spec2Fractal()
    prompt = "A serene lake surrounded by mountains during sunrise"
    rows.append(("engine text-to-image 1024x1024",
                 *timed(lambda: engine.generate_from_text(prompt, width=1024, height=1024,
                                                          seed=1), args.repeat)))
    rows.append(("engine text-to-image 1024x768 (default)",
                 *timed(lambda: engine.generate_from_text(prompt, seed=1), args.repeat)))

    from tests.tiny_models import build_tiny_sd

    with tempfile.TemporaryDirectory() as scratch:
        folder = build_tiny_sd(Path(scratch) / "tiny-sd", Path(scratch))
        start = time.perf_counter()
        tiny = Spec2Fractal(str(folder))
        load = time.perf_counter() - start
        rows.append(("tiny SD pipeline load (from_pretrained)", load, load))
        rows.append(("tiny SD 64x64, 20 steps",
                     *timed(lambda: tiny.generate_from_text(prompt, steps=20, seed=1),
                            args.repeat)))
        rows.append(("tiny SD 64x64, 20 steps, n=4",
                     *timed(lambda: tiny.generate_from_text(prompt, steps=20, seed=1, n=4),
                            args.repeat)))
        source = tiny.generate_from_text(prompt, steps=4, seed=1)
        rows.append(("tiny SD image-to-image, 20 steps x 0.6",
                     *timed(lambda: tiny.generate_from_image(source, strength=0.6, steps=20,
                                                             seed=1), args.repeat)))

    width = max(len(name) for name, *_ in rows)
    print(f"{'case':<{width}}  {'median s':>9}  {'best s':>8}")
    for name, median, best in rows:
        print(f"{name:<{width}}  {median:>9.3f}  {best:>8.3f}")


if __name__ == "__main__":
    main()
