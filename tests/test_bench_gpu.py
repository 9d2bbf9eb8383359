"""bench/gpu.py at tiny scale on the CPU (--tiny), so the GPU benchmark never rots: it must
build both architectures, apply every option and write its rows as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_tiny_runs_every_option(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--batches", "1",
         "--json", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = {(row["model"], row["option"]): row for row in data["rows"]}
    for model in ("sd15", "sdxl"):
        for option in ("plain", "channels_last", "fuse_qkv", "compile", "deep_cache", "all"):
            row = rows[(model, option)]
            assert row["note"] is None, row
            assert row["end_to_end_s"] > 0 and row["step_s"] > 0
        # No GPU here: the offload rows say why they are empty, as the table does.
        assert "GPU" in rows[(model, "offload_model")]["note"]
    assert rows[("sdxl", "vae_fp16")]["end_to_end_s"] > 0
    assert any("CPU rows only" in note for note in data["notes"])
    assert "end-to-end s" in done.stdout
