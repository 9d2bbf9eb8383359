"""Every bad argument fails before any work, naming the argument and the value."""

from __future__ import annotations

import math

import pytest

from fractal import GenerationRequest, InvalidRequestError, Spec2Fractal
from fractal.validation import check_request

CASES = [
    ("width", {"width": 100}, "multiple of 8"),
    ("width", {"width": 0}, "multiple of 8"),
    ("width", {"width": -64}, "multiple of 8"),
    ("width", {"width": 4104}, "at most 4096"),
    ("width", {"width": 512.0}, "whole number"),
    ("height", {"height": 8192}, "at most 4096"),
    ("height", {"height": True}, "whole number"),
    ("steps", {"steps": 0}, "between 1 and 150"),
    ("steps", {"steps": 151}, "between 1 and 150"),
    ("steps", {"steps": "20"}, "whole number"),
    ("guidance", {"guidance": -1}, "between 0 and 100"),
    ("guidance", {"guidance": math.nan}, "finite"),
    ("guidance", {"guidance": math.inf}, "finite"),
    ("n", {"n": 0}, "between 1 and 16"),
    ("n", {"n": 17}, "between 1 and 16"),
    ("n", {"n": None}, "whole number"),
    ("seed", {"seed": -1}, "between 0 and"),
    ("seed", {"seed": 2**32}, "between 0 and"),
    ("texture", {"texture": 1.5}, "between 0 and 1"),
    ("texture", {"texture": -0.1}, "between 0 and 1"),
    ("prompt", {"prompt": "x" * 4001}, "at most 4000"),
    ("prompt", {"prompt": 42}, "must be text"),
    ("prompt", {"prompt": "   "}, "is required"),
    ("negative_prompt", {"negative_prompt": ["a"]}, "must be text"),
    ("scheduler", {"scheduler": "warp"}, "valid values: ddim"),
    ("lighting", {"lighting": "disco"}, "valid values: afternoon"),
    ("colors", {"colors": ["#12345"]}, "is not a colour"),
    ("colors", {"colors": ["notacolour"]}, "is not a colour"),
    ("colors", {"colors": [1, 2]}, "hex code or a CSS colour name"),
    ("colors", {"colors": ["red"] * 17}, "at most 16"),
    ("strength", {"strength": 0.5}, "applies only to image-to-image"),
    ("input_type", {"input_type": "video"}, "valid values: hybrid, image, text"),
    ("image", {"image": "data:image/png;base64,AAAA"}, "is not used by input_type 'text'"),
]


@pytest.mark.parametrize(("argument", "options", "message"), CASES,
                         ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(CASES)])
def test_bad_argument_is_named_with_its_value(argument: str, options: dict, message: str) -> None:
    request = GenerationRequest(**{"prompt": "a lake", **options})
    with pytest.raises(InvalidRequestError) as caught:
        check_request(request)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.argument == argument
    assert f"`{argument}`" in str(error)
    assert message in str(error)


def test_image_input_needs_an_image_and_strength_in_range() -> None:
    with pytest.raises(InvalidRequestError, match="`image` is required"):
        check_request(GenerationRequest(input_type="image"))
    with pytest.raises(InvalidRequestError, match="`prompt` is required"):
        check_request(GenerationRequest(input_type="hybrid", image="AAAA"))
    with pytest.raises(InvalidRequestError, match="`strength` must be between 0 and 1"):
        check_request(GenerationRequest(input_type="image", image="AAAA", strength=1.5))


def test_unknown_request_key_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        GenerationRequest.from_dict({"prompt": "a lake", "cfg": 7})
    assert caught.value.argument == "cfg"
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        GenerationRequest.from_json("{nope")


def test_valid_values_are_accepted() -> None:
    check_request(GenerationRequest(
        prompt="a lake", width=4096, height=8, steps=150, guidance=0, n=16, seed=2**32 - 1,
        texture=1.0, colors=("#f80", "teal", "#102030"), lighting="Golden_Hour",
        scheduler="DPM++ 2M Karras",
    ))


def test_library_methods_validate_before_rendering(engine_model: Spec2Fractal) -> None:
    calls: list[int] = []
    with pytest.raises(InvalidRequestError, match="`width`"):
        engine_model.generate_from_text("a lake", width=100, on_progress=lambda *a: calls.append(1))
    with pytest.raises(InvalidRequestError, match=r"`style`.*valid values: Anime"):
        engine_model.generate_from_text("a lake", style="Baroque-ish", width=64, height=64)
    with pytest.raises(InvalidRequestError, match="`strength`"):
        engine_model.generate_from_image(b"not an image", strength=2)
    assert calls == []


def test_bad_model_argument_is_named() -> None:
    with pytest.raises(InvalidRequestError, match="`model`"):
        Spec2Fractal(model="")
    with pytest.raises(InvalidRequestError, match="`device`"):
        Spec2Fractal(model="./somewhere", device="quantum")
