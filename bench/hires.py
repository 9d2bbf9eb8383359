"""High-resolution text-to-image on the tiny diffusers pipeline: seconds and peak memory,
untiled against tiled, as the size grows.

Each case runs in a fresh process: load the model, render once at the native size (so
imports and lazy allocations are in the baseline), reset the kernel's peak-RSS mark
(/proc/self/clear_refs), render the case, and read the peak (VmHWM). "Peak" is that high-water
mark; "added" is it less the resident size just before the render. glibc maps allocations
over 1 MiB on their own (MALLOC_MMAP_THRESHOLD_), so freed memory leaves the count.
Two-pass renders (native size, then a refine at the target at strength 0.35). Tiled: the
model's defaults (tile = native side, 64 px, overlap 16 px; the VAE in tiles of its own
64 px); untiled: a tile budget of 4096 px. Untiled runs only where it finishes: the tiny
UNet's self-attention grows with the square of the latent area. Prints a table; not a test.
Run: python bench/hires.py [--sizes 256 512 1024 2048] [--untiled-max 512] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

UNTILED_BUDGET = 4096  # a tile as large as any image: one tile, and the VAE whole
# glibc keeps freed heap memory resident, so a process's RSS high-water mark says more about
# its allocator's history than its tensors; every allocation over 1 MiB mapped on its own
# makes the mark count memory in use (as torch.cuda.max_memory_allocated does on a GPU).
MEASURED_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1024 * 1024)}


def _status(field: str) -> int:
    """A /proc/self/status size, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def run_case(model: str, size: int, tiled: bool, steps: int) -> dict[str, object]:
    """One case, in this (fresh) process."""
    from fractal import Spec2Fractal, read_record

    options = {} if tiled else {"tile_size": UNTILED_BUDGET, "tile_overlap": 8}
    engine = Spec2Fractal(model, **options)
    engine.generate({"prompt": "warm-up", "steps": 1, "seed": 0})
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS mark := current RSS
    before = _status("VmRSS")
    start = time.perf_counter()
    image = engine.generate({"prompt": "a lake at dawn", "width": size, "height": size,
                             "steps": steps, "seed": 1})[0]
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    passes = read_record(image).passes or []
    refine = next((entry for entry in passes if entry["kind"] == "refine"), {})
    return {"size": size, "tiled": tiled, "seconds": seconds, "peak": peak,
            "added": peak - before, "tiles": refine.get("tiles", 1),
            "vae_tile": refine.get("vae_tile")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--untiled-max", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--case", nargs=3, metavar=("MODEL", "SIZE", "TILED"),
                        help=argparse.SUPPRESS)  # a child process's one case
    args = parser.parse_args()
    if args.case:
        model, size, tiled = args.case
        print(json.dumps(run_case(model, int(size), tiled == "1", args.steps)))
        return

    from tests.tiny_models import build_tiny_sd

    folder = Path(tempfile.mkdtemp(prefix="s2f-hires-"))
    try:
        rows = measure(str(build_tiny_sd(folder / "tiny-sd", folder)), args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(rows, args.steps)


def measure(model: str, args: argparse.Namespace) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for size in args.sizes:
        for tiled in (False, True):
            if not tiled and size > args.untiled_max:
                rows.append({"size": size, "tiled": False, "skipped": True})
                continue
            command = [sys.executable, __file__, "--steps", str(args.steps), "--case", model,
                       str(size), "1" if tiled else "0"]
            try:
                done = subprocess.run(command, capture_output=True, text=True, check=True,
                                      timeout=args.timeout, env=MEASURED_ENV)
            except subprocess.TimeoutExpired:
                rows.append({"size": size, "tiled": tiled, "skipped": True})
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {size}² {'tiled' if tiled else 'untiled'}: done", file=sys.stderr)
    return rows


def report(rows: list[dict[str, object]], steps: int) -> None:
    mib = 1024 * 1024
    print(f"tiny SD (native 64²), text-to-image in two passes, {steps} steps "
          "(refine: strength 0.35); one process per case; tiled: 64 px tiles, 16 px overlap")
    print(f"{'size':>6}  {'mode':<8} {'tiles':>6} {'seconds':>8} {'peak MiB':>9} "
          f"{'added MiB':>10}")
    for row in rows:
        mode = "tiled" if row["tiled"] else "untiled"
        if row.get("skipped"):
            print(f"{row['size']:>5}²  {mode:<8} {'-':>6} {'skipped: attention grows with the':>8}"
                  " square of the latent area")
            continue
        print(f"{row['size']:>5}²  {mode:<8} {row['tiles']:>6} {row['seconds']:>8.1f} "
              f"{row['peak'] / mib:>9.0f} {row['added'] / mib:>10.0f}")
    tiled_rows = {row["size"]: row for row in rows if row["tiled"] and not row.get("skipped")}
    if tiled_rows:
        low, high = min(tiled_rows), max(tiled_rows)
        ratio = tiled_rows[high]["peak"] / tiled_rows[low]["peak"]
        print(f"tiled peak at {high}² / at {low}²: {ratio:.2f}x (target at 2048² over 512²: "
              "at most 1.3x)")
        if 512 in tiled_rows and 2048 in tiled_rows:
            target = tiled_rows[2048]["peak"] / tiled_rows[512]["peak"]
            print(f"tiled peak 2048² / 512²: {target:.2f}x")


if __name__ == "__main__":
    main()
