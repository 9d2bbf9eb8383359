"""The cost of LoRAs on the tiny SD pipeline: seconds per 64×64 text-to-image render in a
stream of requests, median over a few rounds.

Streams: no LoRA; the same LoRA on every request (loaded once, then only its weight set);
two LoRAs alternating (each loaded once, then switched with ``set_adapters`` per request:
the switching cost); the same alternation with room for one adapter only, so that each
request loads its file again (what keeping adapters loaded saves). Every stream renders
once before any is timed (adapters loaded, pipelines warm); then the streams run in rounds,
interleaved. The LoRAs are random rank-4 ones on the attention projections
(tests/tiny_loras.py): the numbers are the machinery's overhead relative to a tiny UNet,
not a real model's.

Run: python bench/loras.py [--rounds 3] [--images 8] [--steps 20]. Prints a table; not a test.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=8, help="requests per stream")
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
        model = Spec2Fractal(str(model_dir), lora_dir=root / "loras")
        # A second copy of the model whose LoRA cache holds one adapter: every switch loads.
        tight = Spec2Fractal(str(model_dir), lora_dir=root / "loras")
        backend = tight.backend
        backend.lora_adapters = LoraAdapters(backend.text_pipeline, backend.family,
                                             backend.name, root / "loras")
        backend.lora_adapters.keep = 1

        start = time.perf_counter()
        model.generate_from_text("warm up", steps=1, loras=[{"name": "ink"}])
        first_load = time.perf_counter() - start

        def stream(on: Spec2Fractal, pick: Callable[[int], list[dict[str, object]]]
                   ) -> Callable[[], None]:
            def run() -> None:
                for index in range(args.images):
                    on.generate_from_text("a lighthouse on a cliff", steps=args.steps,
                                          seed=index, loras=pick(index))
            return run

        ink, oil = [{"name": "ink", "weight": 0.8}], [{"name": "oil", "weight": 0.8}]
        streams = {
            "no LoRA": stream(model, lambda index: []),
            "one LoRA": stream(model, lambda index: ink),
            "two LoRAs alternating (kept loaded)":
                stream(model, lambda index: ink if index % 2 == 0 else oil),
            "two LoRAs alternating (reloaded each time)":
                stream(tight, lambda index: ink if index % 2 == 0 else oil),
        }
        for run in streams.values():
            run()
        per_image: dict[str, list[float]] = {name: [] for name in streams}
        for _ in range(args.rounds):
            for name, run in streams.items():
                start = time.perf_counter()
                run()
                per_image[name].append((time.perf_counter() - start) / args.images)
        loads = (model.backend.lora_adapters.loads, backend.lora_adapters.loads)

    base = statistics.median(per_image["no LoRA"])
    print(f"tiny SD (64x64), text-to-image, {args.steps} steps, streams of {args.images} "
          f"requests, {args.rounds} rounds; first LoRA request (load included) "
          f"{first_load:.2f} s; loads: {loads[0]} kept, {loads[1]} reloading")
    print(f"{'stream':<44} {'median s/image':>15} {'min':>7} {'vs no LoRA':>11}")
    for name, seconds in per_image.items():
        median = statistics.median(seconds)
        print(f"{name:<44} {median:>15.3f} {min(seconds):>7.3f} {median / base:>10.2f}x")


if __name__ == "__main__":
    main()
