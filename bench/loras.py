"""The cost of LoRAs on the tiny SD pipeline: seconds per 64×64 text-to-image render in a
stream of requests, median over a few rounds.

Streams: no LoRA; the same LoRA on every request (loaded once, then only its weight set);
two LoRAs alternating (each loaded once, then switched with ``set_adapters`` per request:
the switching cost); the same alternation with room for one adapter only, so that each
request loads its file again (what keeping adapters loaded saves). Each stream has a model
of its own and renders twice before any is timed (adapters loaded, pipelines warm); then
the streams' requests run interleaved, one of each at a time. The LoRAs are random rank-4
ones on the attention projections (tests/tiny_loras.py): the numbers are the machinery's
overhead relative to a tiny UNet, not a real model's.

Run: python bench/loras.py [--images 20] [--steps 20]. Prints a table; not a test.
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

from common import percentile

from fractal import Spec2Fractal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20, help="requests per stream")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    from fractal.backends.lora import LoraAdapters
    from tests.tiny_loras import build_lora
    from tests.tiny_models import build_tiny_sd

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model_dir = build_tiny_sd(root / "tiny-sd", root)
        build_lora(model_dir, root / "loras" / "ink.safetensors", seed=0)
        build_lora(model_dir, root / "loras" / "oil.safetensors", seed=1)
        folder = root / "loras"

        def loaded(keep: int | None = None) -> Spec2Fractal:
            """A model of its own per stream: streams interleave request by request (a
            machine whose load changes shifts them alike) without touching each other's
            adapters."""
            model = Spec2Fractal(str(model_dir), lora_dir=folder)
            if keep is not None:  # a LoRA cache too small to keep two: every switch loads
                backend = model.backend
                backend.lora_adapters = LoraAdapters(backend.text_pipeline, backend.family,
                                                     backend.name, folder)
                backend.lora_adapters.keep = keep
            return model

        ink, oil = [{"name": "ink", "weight": 0.8}], [{"name": "oil", "weight": 0.8}]
        streams: dict[str, tuple[Spec2Fractal, Callable[[int], list[dict[str, object]]]]] = {
            "no LoRA": (loaded(), lambda index: []),
            "one LoRA": (loaded(), lambda index: ink),
            "two LoRAs alternating (kept loaded)":
                (loaded(), lambda index: ink if index % 2 == 0 else oil),
            "two LoRAs alternating (reloaded each time)":
                (loaded(keep=1), lambda index: ink if index % 2 == 0 else oil),
        }
        first = streams["one LoRA"][0]
        start = time.perf_counter()
        first.generate_from_text("warm up", steps=1, loras=ink)
        first_load = time.perf_counter() - start

        def request(model: Spec2Fractal, loras: list[dict[str, object]], index: int) -> float:
            start = time.perf_counter()
            model.generate_from_text("a lighthouse on a cliff", steps=args.steps, seed=index,
                                     loras=loras)
            return time.perf_counter() - start

        for model, pick in streams.values():  # untimed: pipelines warm, adapters loaded
            for index in range(2):
                request(model, pick(index), index)
        per_image: dict[str, list[float]] = {name: [] for name in streams}
        for index in range(args.images):
            for name, (model, pick) in streams.items():
                per_image[name].append(request(model, pick(index), index))
        loads = {name: model.backend.lora_adapters.loads
                 for name, (model, _) in streams.items()}

    print(f"tiny SD (64x64), text-to-image, {args.steps} steps, {args.images} requests per "
          f"stream, interleaved; first LoRA request (its load included) {first_load:.2f} s")
    # On a shared machine the low percentiles are the render's cost; medians carry the noise.
    low = percentile(per_image["no LoRA"], 25)
    print(f"{'stream':<44} {'median s':>9} {'p25 s':>7} {'min s':>7} {'p25 vs none':>12} "
          f"{'loads':>6}")
    for name, seconds in per_image.items():
        quarter = percentile(seconds, 25)
        print(f"{name:<44} {statistics.median(seconds):>9.3f} {quarter:>7.3f} "
              f"{min(seconds):>7.3f} {quarter / low:>11.2f}x {loads[name]:>6}")


if __name__ == "__main__":
    main()
