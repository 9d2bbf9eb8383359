"""Benchmark the built-in engine's text-to-image: render time and peak memory per size.

Each size runs in its own subprocess so peak RSS (``resource.getrusage``) is per render.
Usage: ``python bench/engine.py [--prompt TEXT]``. Targets on a 2-core CPU: 1024² ≤ 1.5 s,
4096×2304 ≤ 20 s, peak memory ≤ 2 GB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

SIZES = ((1024, 1024), (4096, 2304))
PROMPTS = (
    "A serene lake surrounded by mountains during sunrise",
    "A tropical island with crystal-clear water",
)
CHILD = """
import json, resource, sys, time
from fractal.engine.scene import render_scene
prompt, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
start = time.perf_counter()
render_scene(prompt, width=width, height=height, seed=1, lighting=None, palette=None,
             texture=0.5, progress=None)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak}))
"""


def measure(prompt: str, width: int, height: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, prompt, str(width), str(height)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", action="append", help="prompt(s) to time")
    args = parser.parse_args()
    prompts = args.prompt or list(PROMPTS)
    print(f"{'size':>11} | {'seconds':>7} | {'peak MB':>7} | prompt")
    print(f"{'-' * 11}-+-{'-' * 7}-+-{'-' * 7}-+-{'-' * 40}")
    for prompt in prompts:
        for width, height in SIZES:
            r = measure(prompt, width, height)
            size = f"{width}x{height}"
            print(f"{size:>11} | {r['seconds']:7.2f} | {r['peak_mb']:7.0f} | {prompt}")


if __name__ == "__main__":
    main()
