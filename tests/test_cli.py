"""The `spec2fractal` command as a user runs it: a real process, real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fractal import read_record


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fractal.cli", *args], capture_output=True, text=True,
        timeout=300, cwd=cwd,
    )


def test_generate_writes_a_png_with_its_parameters(tmp_path: Path) -> None:
    out = tmp_path / "lake.png"
    result = run("generate", "A serene lake surrounded by mountains during sunrise", "-o",
                 str(out), "--seed", "5", "--size", "128x96", "--lighting", "sunset",
                 "--colors", "#ff0000,navy", "--texture", "0.7", "--style", "watercolor")
    assert result.returncode == 0, result.stderr
    image = Image.open(out)
    assert image.size == (128, 96)
    record = read_record(image)
    assert record.seed == 5 and record.style == "Watercolor" and record.lighting == "sunset"
    assert record.colors == ["#ff0000", "navy"] and record.texture == 0.7
    assert "Seed: 5" in image.info["parameters"]
    assert "seed 5" in result.stdout


def test_n_images_and_image_to_image(tmp_path: Path) -> None:
    result = run("generate", "a julia fractal", "-o", str(tmp_path / "j.webp"), "--n", "2",
                 "--size", "64x64", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j-1.webp", "j-2.webp"]
    source = tmp_path / "in.png"
    Image.new("RGB", (72, 48), (10, 200, 30)).save(source)
    result = run("generate", "--image", str(source), "--strength", "0.8", "--style",
                 "pencil sketch", "-o", str(tmp_path / "out.jpg"))
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "out.jpg").size == (72, 48)


def test_diffusers_model_folder_through_the_cli(tiny_sd: Path, tmp_path: Path) -> None:
    out = tmp_path / "sd.png"
    result = run("generate", "a lake", "--model", str(tiny_sd), "--steps", "2", "-o", str(out),
                 "--scheduler", "euler_a", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "Sampler: Euler a" in Image.open(out).info["parameters"]
    assert "Model: tiny-sd" in Image.open(out).info["parameters"]


@pytest.mark.parametrize(("args", "message"), [
    (["generate", "x", "--steps", "0"], "`steps` must be between 1 and 150 (got 0)"),
    (["generate", "x", "--size", "12"], "`size` must look like 768x512"),
    (["generate", "x", "--size", "100x64"], "`width` must be a positive multiple of 8"),
    (["generate", "x", "--style", "nope"], "`style` is not a known style"),
    (["generate", "x", "--lighting", "disco"], "`lighting` is not a lighting preset"),
    (["generate", "x", "--colors", "#zzz"], "`colors` is not a colour"),
    (["generate", "x", "-o", "a.gif"], "`output` must end in .png"),
    (["generate", "x", "--scheduler", "warp"], "`scheduler` is not a known sampler"),
    (["generate", "x", "--hires", "maybe"], "`hires` must be 'auto', 'off'"),
    (["generate", "x", "--bogus"], "No such option: --bogus"),
    (["generate", "x", "--n", "many"], "Invalid value for '--n'"),
    (["generate"], "`prompt` is required"),
    (["generate", "--image", "/no/such.png"], "`image` cannot be read"),
    (["generate", "x", "--model", "/no/such/model"], "does not exist"),
    (["generate", "x", "--style-strength", "0.5"], "`--style-strength` applies only with"),
    (["generate", "x", "--style-image", "/no/such.png"], "`--style-image` cannot be read"),
    (["generate", "x", "--style-image", "in.png", "--style-mode", "cubist"],
     "`--style-mode` is not a style mode"),
    (["generate", "x", "--style-image", "in.png", "--style-strength", "2"],
     "`--style-strength` must be between 0 and 1"),
    (["generate", "x", "--control", "canny"], "`--control` must look like TYPE=PATH"),
    (["generate", "x", "--control", "sketch=in.png"], "`sketch` is not a control type"),
    (["generate", "x", "--control", "canny=in.png,weight=2"], "is not a control setting"),
    (["generate", "x", "--control", "canny=in.png,scale=inf"], "scale must be a finite"),
    (["generate", "x", "--control", "canny=in.png,preprocess=maybe"],
     "preprocess must be true or false"),
    (["generate", "x", "--control", "canny=in.png", "--control", "image=in.png,start=1"],
     "`--control #2` end must be greater than start"),
    (["generate", "x", "--control", "canny=missing.png"], "`--control #1` cannot be read"),
    (["generate", "x", "--control", "pose=in.png,preprocess=false"],
     "`--control #1` type is not a control the built-in engine takes"),
])
def test_bad_input_is_one_clear_line(args: list[str], message: str, tmp_path: Path) -> None:
    Image.new("RGB", (32, 32), "gray").save(tmp_path / "in.png")
    result = run(*args, cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert [path.name for path in tmp_path.glob("*.png")] == ["in.png"]


def test_style_reference_and_controls_from_the_command_line(tmp_path: Path) -> None:
    from fractal.references import pixel_hash

    style, edges = tmp_path / "style.png", tmp_path / "edges.png"
    Image.new("RGB", (40, 30), (220, 90, 20)).save(style)
    Image.new("RGB", (64, 64), "white").save(edges)
    out = tmp_path / "out.png"
    result = run("generate", "a lake", "-o", str(out), "--size", "64x64", "--seed", "2",
                 "--style-image", str(style), "--style-strength", "0.9", "--style-mode",
                 "both", "--control", f"canny={edges},scale=0.5,end=0.8",
                 "--control", f"image={edges},preprocess=false")
    assert result.returncode == 0, result.stderr
    record = read_record(Image.open(out))
    assert record is not None
    assert record.style_reference == {"sha256": pixel_hash(Image.open(style).convert("RGB")),
                                      "strength": 0.9, "mode": "both"}
    assert [(unit["type"], unit["scale"], unit["end"], unit["preprocess"])
            for unit in record.controls] == [("canny", 0.5, 0.8, True),
                                             ("image", 1.0, 1.0, False)]


def test_upscale_draws_an_engine_image_again_and_resamples_others(tmp_path: Path) -> None:
    drawn = tmp_path / "lake.png"
    assert run("generate", "a lake at dawn", "-o", str(drawn), "--size", "96x64", "--seed",
               "3").returncode == 0
    result = run("upscale", str(drawn), "--scale", "2")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "lake-x2.png"
    assert Image.open(out).size == (192, 128) and "engine re-render" in result.stdout
    assert read_record(Image.open(out)).scale == 2
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (50, 40), (90, 20, 160)).save(photo)
    result = run("upscale", str(photo), "--scale", "4", "-o", str(tmp_path / "big.webp"),
                 "--strength", "0.5")
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "big.webp").size == (200, 160)
    assert "Lanczos + detail" in result.stdout
    wide = tmp_path / "wide.png"
    Image.new("RGB", (1100, 20)).save(wide)
    for args, message in (([str(photo), "--scale", "3"], "`scale`"),
                          ([str(wide), "--scale", "4"], "largest scale for this image is 2"),
                          ([str(tmp_path / "missing.png")], "cannot be read")):
        refused = run("upscale", *args)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1


def test_styles_and_models_list_what_is_available() -> None:
    styles = run("styles")
    assert styles.returncode == 0
    for name in ("Impressionist", "Ukiyo-e", "Studio Ghibli-like"):
        assert name in styles.stdout
    models = run("models")
    assert models.returncode == 0
    assert "fractal" in models.stdout and "sd-turbo" in models.stdout


def test_inpaint_and_outpaint_from_the_command_line(tmp_path: Path) -> None:
    import numpy as np

    from fractal.images import load_mask
    from fractal.references import pixel_hash

    photo, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.new("RGB", (64, 64), (30, 120, 140)).save(photo)
    drawn = Image.new("L", (64, 64), 0)
    drawn.paste(255, (16, 16, 48, 48))
    drawn.save(mask)
    out = tmp_path / "inpainted.png"
    result = run("generate", "a red boat", "-o", str(out), "--image", str(photo), "--seed",
                 "4", "--mask", str(mask), "--mask-blur", "2", "--inpaint-area", "masked",
                 "--padding", "8")
    assert result.returncode == 0, result.stderr
    picture = Image.open(out)
    record = read_record(picture)
    assert record is not None and record.mask is not None
    assert record.mask["sha256"] == pixel_hash(load_mask(mask))
    assert (record.mask["blur"], record.mask["area"], record.mask["padding"]) == (2, "masked", 8)
    kept = np.asarray(picture.convert("RGB"))[:8]  # far from the square: the input's pixels
    assert (kept == (30, 120, 140)).all()
    grown = tmp_path / "outpainted.png"
    result = run("generate", "-o", str(grown), "--image", str(photo), "--seed", "4",
                 "--expand", "left=16,top=8")
    assert result.returncode == 0, result.stderr
    assert Image.open(grown).size == (80, 72)


@pytest.mark.parametrize(("args", "option"), [
    (["--expand", "left=12"], "--expand"),
    (["--expand", "middle=8"], "--expand"),
    (["--expand", "left=x"], "--expand"),
    (["--expand", "left=8", "--padding", "8"], "--padding"),
    (["--mask", "MASK", "--mask-blur", "-1"], "--mask-blur"),
    (["--mask", "MASK", "--inpaint-area", "sky"], "--inpaint-area"),
    (["--mask", "SMALL"], "--mask"),
    (["--mask", "MISSING"], "--mask"),
    (["--mask", "MASK", "--no-image"], "--mask"),
])
def test_bad_mask_options_are_refused_naming_them(tmp_path: Path, args: list[str],
                                                  option: str) -> None:
    photo, mask, small = tmp_path / "p.png", tmp_path / "m.png", tmp_path / "s.png"
    Image.new("RGB", (64, 64)).save(photo)
    Image.new("L", (64, 64), 255).save(mask)
    Image.new("L", (32, 64), 255).save(small)
    paths = {"MASK": str(mask), "SMALL": str(small), "MISSING": str(tmp_path / "none.png")}
    image = [] if "--no-image" in args else ["--image", str(photo)]
    args = [paths.get(arg, arg) for arg in args if arg != "--no-image"]
    result = run("generate", "a boat", "-o", str(tmp_path / "o.png"), *image, *args)
    assert result.returncode == 2, result.stderr
    assert option in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.png").exists()
