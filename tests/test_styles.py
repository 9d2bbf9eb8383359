"""Style presets: data in the package, case-insensitive, extensible from a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from fractal import InvalidRequestError, Spec2Fractal, StyleLibrary, read_record
from fractal.engine import EFFECTS

REQUIRED = ["Impressionist", "Watercolor", "Oil painting", "Cyberpunk", "Ukiyo-e", "Pixel art",
            "Photorealistic", "Anime", "Pencil sketch", "Art deco", "Low poly",
            "Studio Ghibli-like", "Vaporwave", "Cinematic", "Fantasy"]


def test_at_least_the_fifteen_named_presets_exist() -> None:
    library = StyleLibrary()
    assert len(library) >= 15
    assert set(REQUIRED) <= set(library.names())


def test_every_preset_is_complete_and_its_effect_exists() -> None:
    for style in StyleLibrary():
        assert "{prompt}" in style.prompt and style.description and style.negative_prompt
        assert style.effect is None or style.effect in EFFECTS, style.name


def test_names_are_case_insensitive() -> None:
    library = StyleLibrary()
    assert library.get("  ukiyo-E ").name == "Ukiyo-e"
    assert library.get("PIXEL ART").name == "Pixel art"


def test_unknown_style_lists_valid_names() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        StyleLibrary().get("Baroque")
    assert caught.value.argument == "style"
    assert "Baroque" in str(caught.value) and "Watercolor" in str(caught.value)


def test_template_with_and_without_a_prompt() -> None:
    watercolor = StyleLibrary().get("watercolor")
    assert watercolor.apply("a fox").startswith("a fox, watercolor painting")
    assert watercolor.apply("").startswith("watercolor painting")


def test_user_styles_load_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[Blueprint]\ndescription = "Technical drawing"\n'
                    'prompt = "{prompt}, blueprint"\nnegative_prompt = "photo"\n'
                    'effect = "pencil"\npalette = ["#0a3d91", "white"]\nsteps = 12\n')
    model = Spec2Fractal(styles=path)
    assert model.styles.get("blueprint").steps == 12
    image = model.generate_from_text("a bridge", style="Blueprint", width=64, height=64, seed=1)
    record = read_record(image)
    assert record.style == "Blueprint" and record.steps == 12
    assert record.colors == ["#0a3d91", "white"]


@pytest.mark.parametrize(("text", "message"), [
    ("[A]\nprompt = 'no placeholder'\n", "must contain {prompt}"),
    ("[A]\nprompt = '{prompt}'\ncolour = 'red'\n", "unknown keys"),
    ("this is = not toml [", "not valid TOML"),
])
def test_bad_style_files_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InvalidRequestError, match=message):
        StyleLibrary().load(path)
    with pytest.raises(InvalidRequestError, match="cannot be read"):
        StyleLibrary().load(tmp_path / "missing.toml")
