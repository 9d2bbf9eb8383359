"""Time of each painterly effect at 1024², and impressionist at 4096² with its peak memory.

Each case runs in a subprocess of its own, so its peak memory (max RSS) is its own.
Run: python bench/paint.py. Prints a table; not a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASE = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from fractal.engine.paint import apply_effect
from fractal.engine.scene import render_scene
side = {side}
small = render_scene("A serene lake surrounded by mountains during sunrise", width=1024,
                     height=1024, seed=1, lighting=None, palette=None, texture=0.5,
                     progress=None)
picture = np.kron(small, np.ones((side // 1024, side // 1024, 1), np.uint8))
start = time.perf_counter()
apply_effect(picture, {effect!r}, seed=1, texture=0.5, palette=None, progress=None)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "peak_mb": peak}}))
"""


def run(effect: str, side: int) -> dict[str, float]:
    code = CASE.format(root=str(ROOT), side=side, effect=effect)
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from fractal.engine.paint import EFFECTS

    print(f"{'effect':<14} {'size':>10} {'seconds':>8} {'peak MB':>8}")
    cases = [(effect, 1024) for effect in EFFECTS] + [("impressionist", 4096), ("pixel", 4096)]
    for effect, side in cases:
        result = run(effect, side)
        print(f"{effect:<14} {f'{side}x{side}':>10} {result['seconds']:>8.2f} "
              f"{result['peak_mb']:>8.0f}")


if __name__ == "__main__":
    main()
