"""The ``batch`` command's signature. Light on purpose: everything else loads when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["batch"]


def batch(
    file: Annotated[Path, typer.Argument(
        help="Requests: .txt (a prompt a line), .csv (header row of options) or .jsonl.",
        show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the images and "
                                      "manifest.jsonl.", show_default=False)],
    server: Annotated[str | None, typer.Option(
        help="Render through a Spec-2-Fractal server (e.g. http://127.0.0.1:8000) instead "
             "of in this process.")] = None,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", "-j", min=1,
        help="Items at once: worker threads locally (default 1), jobs on a server "
             "(default 4).")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Model for items that name none; default: the built-in "
                              "engine, or the server's default.")] = None,
    size: Annotated[str | None, typer.Option(
        help="WIDTHxHEIGHT for items that give no width/height, e.g. 512x512.")] = None,
    api_key: Annotated[str | None, typer.Option(
        envvar="SPEC2FRACTAL_API_KEY", show_default=False,
        help="API key for a --server that asks for one.")] = None,
    lora: Annotated[list[str] | None, typer.Option(
        "--lora", help="A LoRA for items that name none: NAME[:WEIGHT]; a file in "
                       "--lora-dir, or on the --server (GET /loras). Repeatable.")] = None,
    lora_dir: Annotated[Path | None, typer.Option(
        help="The folder of LoRA files, rendering in this process.")] = None,
) -> None:
    """Render every request in FILE into --out; a re-run skips what is already done."""
    from fractal.cli import console, errors, parse_lora_options, parse_size
    from spec2fractal.batch.runner import BatchOptions, run_batch

    width, height = parse_size(size)
    defaults = {key: value for key, value in (("width", width), ("height", height),
                                              ("loras", parse_lora_options(lora)))
                if value is not None}
    options = BatchOptions(file=file, out=out, server=server, concurrency=concurrency,
                           model=model, defaults=defaults, api_key=api_key, lora_dir=lora_dir)
    summary = run_batch(options, console=console, errors=errors)
    colour = "red" if summary.failed else "green"
    console.print(
        f"[{colour}]{summary.succeeded} succeeded, {summary.failed} failed, "
        f"{summary.skipped} skipped[/] of {summary.total} in {summary.seconds:.1f} s "
        f"({summary.rate:.1f} images/s); manifest: {out / 'manifest.jsonl'}", highlight=False,
        soft_wrap=True)
    if summary.interrupted:
        errors.print("interrupted: run the same command again to finish", highlight=False)
    raise typer.Exit(summary.exit_code)
