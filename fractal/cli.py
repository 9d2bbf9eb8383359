"""The ``spec2fractal`` command: render from a terminal, list styles and models."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fractal.errors import GenerationCancelled, InvalidRequestError, Spec2FractalError
from fractal.loras import parse_lora_text
from fractal.record import read_record

if TYPE_CHECKING:
    from fractal.spec2fractal import Spec2Fractal

__all__ = ["app", "main", "parse_lora_options"]

app = typer.Typer(
    name="spec2fractal",
    help="Render images from text or images with diffusers models or the built-in fractal engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # an error is one line, however long

OUTPUT_FORMATS = {".png", ".jpg", ".jpeg", ".webp"}


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    if size is None:
        return None, None
    width, sep, height = size.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise InvalidRequestError("size", size, "must look like 768x512")
    return int(width), int(height)


def parse_lora_options(values: list[str] | None) -> list[dict[str, object]] | None:
    """``--lora NAME[:WEIGHT]`` options as a request's ``loras`` (weight 1 when left out); a
    weight that is not a number is an error naming ``--lora``."""
    return [parse_lora_text(value, "--lora") for value in values] if values else None


def output_paths(output: Path, n: int) -> list[Path]:
    if output.suffix.lower() not in OUTPUT_FORMATS:
        raise InvalidRequestError("output", str(output),
                                  "must end in .png, .jpg, .jpeg or .webp")
    if n == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{k}{output.suffix}") for k in range(1, n + 1)]


def _quiet_third_parties() -> None:
    """Model loading libraries print progress bars and advice; the CLI shows its own."""
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    except ImportError:
        pass


@contextlib.contextmanager
def _loaded(model: str | None, device: str | None, dtype: str | None,
            styles_file: Path | None, doing: str, lora_dir: Path | None = None
            ) -> Iterator[tuple[Spec2Fractal, Callable[[int, int, object], None]]]:
    """The model, loaded under a spinner, and a progress callback for its bar."""
    from fractal.spec2fractal import Spec2Fractal

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=errors, transient=True) as progress:
        task = progress.add_task(f"Loading {model or 'the fractal engine'}", total=None)
        if model is not None:
            _quiet_third_parties()
        renderer = Spec2Fractal(model, device=device, dtype=dtype, styles=styles_file,
                                lora_dir=lora_dir)
        progress.update(task, description=doing)

        def on_progress(step: int, total: int, _preview: object) -> None:
            progress.update(task, completed=step, total=total)

        yield renderer, on_progress


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="What to draw.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to save.")] = Path(
        "output.png"),
    model: Annotated[str | None, typer.Option("--model", "-m",
                     help="diffusers folder or hub id; default: the built-in engine")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed; random when left out.")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps.")] = None,
    guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance.")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT, e.g. 768x512.")] = None,
    style: Annotated[str | None, typer.Option(help="A style preset (see `styles`).")] = None,
    n: Annotated[int, typer.Option("--n", "-n", help="How many images.")] = 1,
    image: Annotated[Path | None, typer.Option(help="Input image for image-to-image.")] = None,
    strength: Annotated[float | None, typer.Option(help="0 keeps the input, 1 repaints.")] = None,
    negative: Annotated[str | None, typer.Option(help="Negative prompt.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Sampler, e.g. euler_a.")] = None,
    colors: Annotated[str | None, typer.Option(help='Palette, e.g. "#ff0000,navy".')] = None,
    lighting: Annotated[str | None, typer.Option(help="sunrise, noon, sunset, night …")] = None,
    texture: Annotated[float | None, typer.Option(help="0 smooth … 1 intricate.")] = None,
    hires: Annotated[str | None, typer.Option(
        help="Two-pass high resolution: auto (far over the model's native size) or off.")
    ] = None,
    style_image: Annotated[Path | None, typer.Option(
        help="A style reference: render in the style of this picture.")] = None,
    style_strength: Annotated[float | None, typer.Option(
        help="0..1: how much of the reference's style; default 0.6.")] = None,
    style_mode: Annotated[str | None, typer.Option(
        help="style (colours, brushwork, texture), composition or both.")] = None,
    control: Annotated[list[str] | None, typer.Option(
        help="Keep an image's structure: TYPE=PATH[,scale=F][,start=F][,end=F]"
             "[,preprocess=true|false]; TYPE canny, depth, pose, lineart, tile or image. "
             "Repeatable.")] = None,
    mask: Annotated[Path | None, typer.Option(
        help="Inpaint: repaint where this mask is white (or transparent); needs --image.")
    ] = None,
    mask_blur: Annotated[int | None, typer.Option(help="Feather the mask's edge (px); 4.")
                         ] = None,
    inpaint_area: Annotated[str | None, typer.Option(
        help="whole (default) or masked: render only the masked area, finer.")] = None,
    padding: Annotated[int | None, typer.Option(
        help="With --inpaint-area masked: pixels around the area rendered too; 32.")] = None,
    expand: Annotated[str | None, typer.Option(
        help="Outpaint: left=64,right=64,top=0,bottom=0 (px, multiples of 8); needs --image.")
    ] = None,
    lora: Annotated[list[str] | None, typer.Option(
        "--lora", help="Apply a LoRA: NAME[:WEIGHT] (weight 1 when left out), a file in "
                       "--lora-dir or a hub id; <lora:NAME:WEIGHT> in the prompt works too. "
                       "Repeatable.")] = None,
    lora_dir: Annotated[Path | None, typer.Option(
        help="The folder of LoRA files (NAME.safetensors).")] = None,
    styles_file: Annotated[Path | None, typer.Option(help="Extra styles (TOML).")] = None,
    device: Annotated[str | None, typer.Option(help="cuda, mps or cpu; default: auto.")] = None,
    dtype: Annotated[str | None, typer.Option(help="fp16, bf16 or fp32; default: auto.")] = None,
) -> None:
    """Render PROMPT (and/or --image) to an image file."""
    from fractal.cli_masks import MaskOptions
    from fractal.cli_references import ReferenceOptions
    from fractal.request import GenerationRequest
    from fractal.styles import StyleLibrary
    from fractal.validation import check_request

    width, height = parse_size(size)
    paths = output_paths(output, n)
    input_type = "text" if image is None else ("hybrid" if prompt else "image")
    references = ReferenceOptions(style_image, style_strength, style_mode, control)
    masks = MaskOptions(mask, mask_blur, inpaint_area, padding, expand)
    request = GenerationRequest(
        input_type=input_type, prompt=prompt, negative_prompt=negative, width=width,
        height=height, steps=steps, guidance=guidance, seed=seed, scheduler=scheduler,
        style=style, lighting=lighting, colors=colors, texture=texture, strength=strength, n=n,
        hires=hires, loras=parse_lora_options(lora), **references.request_fields(),
        **masks.request_fields(),
    )
    # Fail before a model loads: a typo should not cost a minute of loading.
    try:
        check_request(request, has_image=image is not None)
    except InvalidRequestError as exc:
        raise masks.renamed(exc) or references.renamed(exc) from None
    if style is not None:
        library = StyleLibrary()
        if styles_file is not None:
            library.load(styles_file)
        library.get(style)
    reference_arguments = references.load()
    mask_arguments = masks.load(image)

    with _loaded(model, device, dtype, styles_file, "Rendering", lora_dir) as (
            renderer, on_progress), \
            references.naming_options():
        if image is None:
            images = renderer.generate_from_text(
                prompt or "", negative_prompt=negative, width=width, height=height, steps=steps,
                guidance=guidance, seed=seed, scheduler=scheduler, style=style,
                lighting=lighting, colors=request.colors, texture=texture, n=n,
                hires=hires, loras=request.loras, on_progress=on_progress,
                **reference_arguments,
            )
        else:
            images = renderer.generate_from_image(
                image, prompt, style=style, strength=strength, negative_prompt=negative,
                width=width, height=height, steps=steps, guidance=guidance, seed=seed,
                scheduler=scheduler, lighting=lighting, colors=request.colors,
                texture=texture, n=n, loras=request.loras, on_progress=on_progress,
                **reference_arguments, **mask_arguments,
            )
    for path, picture in zip(paths, images if isinstance(images, list) else [images],
                             strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path)
        record = read_record(picture)
        console.print(f"[green]saved[/] {path}  {picture.width}x{picture.height}  "
                      f"seed {record.seed if record else '?'}")


@app.command()
def upscale(
    image: Annotated[Path, typer.Argument(help="The image to enlarge (PNG, JPEG or WEBP).")],
    scale: Annotated[int, typer.Option(help="2 or 4: the result is SCALE times the image.")
                     ] = 2,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where to save; default: IMAGE-xSCALE.png beside it.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m",
                     help="diffusers folder or hub id; default: the built-in engine")] = None,
    prompt: Annotated[str | None, typer.Option(help="Guides a diffusion model's detail.")
                      ] = None,
    strength: Annotated[float, typer.Option(help="0 keeps the enlargement, 1 repaints.")
                        ] = 0.3,
    seed: Annotated[int | None, typer.Option(help="Seed; random when left out.")] = None,
    styles_file: Annotated[Path | None, typer.Option(
        help="Extra styles (TOML), for an engine image drawn in one of them.")] = None,
    device: Annotated[str | None, typer.Option(help="cuda, mps or cpu; default: auto.")] = None,
    dtype: Annotated[str | None, typer.Option(help="fp16, bf16 or fp32; default: auto.")] = None,
) -> None:
    """Make IMAGE SCALE times larger with more detail (an image the built-in engine drew is
    drawn again at the new size)."""
    from fractal.images import load_image
    from fractal.request import GenerationRequest
    from fractal.validation import check_request, check_upscale

    path = output if output is not None else image.with_name(f"{image.stem}-x{scale}.png")
    output_paths(path, 1)
    # Fail before a model loads: a typo or an image too large should not cost a minute.
    check_request(GenerationRequest(input_type="upscale", prompt=prompt, strength=strength,
                                    seed=seed, scale=scale), has_image=True)
    check_upscale(load_image(image).size, scale)

    with _loaded(model, device, dtype, styles_file, "Upscaling") as (renderer, on_progress):
        picture = renderer.upscale(image, scale=scale, prompt=prompt, strength=strength,
                                   seed=seed, on_progress=on_progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    record = read_record(picture)
    how = record.passes[0].get("upscaler") if record and record.passes else None
    console.print(f"[green]saved[/] {path}  {picture.width}x{picture.height}"
                  + (f"  ({how})" if how else ""))


@app.command()
def styles(
    styles_file: Annotated[Path | None, typer.Option(help="Extra styles (TOML).")] = None,
) -> None:
    """List the style presets."""
    from fractal.styles import StyleLibrary

    library = StyleLibrary()
    if styles_file is not None:
        library.load(styles_file)
    table = Table("Style", "Description", "Engine effect", title="Styles")
    table.columns[0].no_wrap = True
    for style in library:
        table.add_row(style.name, style.description, style.effect or "—")
    console.print(table)


@app.command()
def loras(
    lora_dir: Annotated[Path, typer.Option(help="The folder of LoRA files.")],
) -> None:
    """List a folder's LoRA files: name, model family, key format, size and short hash."""
    from fractal.loras import list_loras

    found = list_loras(lora_dir)
    for lora in found:  # plain lines: names are copied into --lora
        console.print(f"[bold]{lora.name}[/]  {lora.family or 'family unknown'}  {lora.format}"
                      f"  {lora.size / 1e6:.1f} MB  {lora.short_hash}", soft_wrap=True,
                      highlight=False)
    if not found:
        console.print(f"no LoRA files (.safetensors) in {lora_dir}", highlight=False)


@app.command()
def models() -> None:
    """List the built-in engine, well-known diffusers models and those already downloaded."""
    from fractal.catalogue import KNOWN_MODELS, cached_diffusers_models

    cached = set(cached_diffusers_models())
    # Plain lines, not a table: ids are long and people copy them, so they are never cut.
    for known in KNOWN_MODELS:
        ready = known.id == "fractal" or known.id in cached
        details = ", ".join(part for part in (known.family, known.size, known.notes) if part)
        mark = "[green]ready[/]" if ready else "[dim]downloads on first use[/]"
        console.print(f"[bold]{known.id}[/]  {details}  {mark}", soft_wrap=True)
    for repo_id in sorted(cached - {known.id for known in KNOWN_MODELS}):
        console.print(f"[bold]{repo_id}[/]  diffusers, in the local cache  [green]ready[/]",
                      soft_wrap=True)
    console.print("Any diffusers folder works too: spec2fractal generate PROMPT --model ./folder")


def main() -> None:
    """Entry point: every failure is one clear line on stderr and a non-zero exit."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        errors.print("cancelled", highlight=False)
        sys.exit(130)
    except typer.TyperException as exc:  # a usage error: unknown option, bad value, ...
        if type(exc).__name__ == "NoArgsIsHelpError":
            console.print(exc.format_message(), highlight=False, markup=False)
            sys.exit(0)
        errors.print(f"error: {exc.format_message()}", highlight=False, markup=False)
        sys.exit(getattr(exc, "exit_code", 2))
    except GenerationCancelled as exc:
        errors.print(f"cancelled: {exc}", highlight=False)
        sys.exit(130)
    except Spec2FractalError as exc:
        errors.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(2 if isinstance(exc, InvalidRequestError) else 1)
    except OSError as exc:
        errors.print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
                     highlight=False, markup=False)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
