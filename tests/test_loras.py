"""LoRAs as plain data (fractal.loras), styles that carry them, and the built-in engine's
answer to them: refused when asked for by name, skipped (and recorded) when a style names
them. Diffusion models' loading and switching are in tests/test_loras_diffusion.py."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from fractal import Spec2Fractal
from fractal.corender import compatibility_key
from fractal.errors import InvalidRequestError
from fractal.loras import (
    MAX_LORAS,
    LoraSpec,
    check_loras,
    find_lora,
    inspect_lora,
    list_loras,
    merge_loras,
    parse_prompt_loras,
    read_header,
)
from fractal.record import GenerationRecord, read_record
from fractal.styles import Style, StyleLibrary


def _write_lora(path: Path, *, kohya: bool = False, width: int = 768, seed: int = 0) -> Path:
    """A small LoRA file whose key names and cross-attention width are a real one's."""
    rng = np.random.default_rng(seed)
    down = rng.standard_normal((4, width)).astype(np.float32)
    up = rng.standard_normal((320, 4)).astype(np.float32)
    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    if kohya:
        name = "lora_unet_" + module.replace(".", "_")
        tensors = {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up,
                   f"{name}.alpha": np.array(4.0, dtype=np.float32)}
    else:
        tensors = {f"unet.{module}.lora_A.weight": down, f"unet.{module}.lora_B.weight": up}
    save_file(tensors, str(path))
    return path


def test_check_loras_names_each_field() -> None:
    assert check_loras([{"name": "ink", "weight": 0.5}, {"name": "owner/repo"}]) == (
        LoraSpec("ink", 0.5), LoraSpec("owner/repo", 1.0))
    assert check_loras([{"name": "ink.safetensors"}]) == (LoraSpec("ink", 1.0),)
    cases = [
        ("ink", "loras"),
        ([{"name": "ink", "weight": float("nan")}], "loras[0].weight"),
        ([{"name": "ink", "weight": float("inf")}], "loras[0].weight"),
        ([{"name": "ink", "weight": True}], "loras[0].weight"),
        ([{"name": "ink", "weight": 5}], "loras[0].weight"),
        ([{"name": "ink"}, {"name": "../etc/passwd"}], "loras[1].name"),
        ([{"name": "/abs/path"}], "loras[0].name"),
        ([{"name": "a/b/c/d"}], "loras[0].name"),
        ([{"name": "\ud800"}], "loras[0].name"),
        ([{"name": ""}], "loras[0].name"),
        ([{"name": 3}], "loras[0].name"),
        ([{"name": "ink"}, {"name": "INK"}], "loras[1].name"),
        ([{"name": "ink", "scale": 1}], "loras[0].scale"),
        ([["ink", 1]], "loras[0]"),
        ([{"name": f"l{i}"} for i in range(MAX_LORAS + 1)], "loras"),
        ([{"name": "x" * 10_000}], "loras[0].name"),
    ]
    for value, field in cases:
        with pytest.raises(InvalidRequestError) as caught:
            check_loras(value)
        assert caught.value.argument == field, value


def test_prompt_tags_are_parsed_and_removed() -> None:
    text, specs = parse_prompt_loras("<lora:ink:0.8> a lake, <lora:Film Grain>, at dusk")
    assert text == "a lake, at dusk"
    assert specs == (LoraSpec("ink", 0.8), LoraSpec("Film Grain", 1.0))
    # A1111's second (text encoder) weight is accepted and ignored; a later tag wins.
    assert parse_prompt_loras("a <lora:ink:0.5:0.2> b <lora:ink:0.3>")[1] == (
        LoraSpec("ink", 0.3),)
    assert parse_prompt_loras("no tags here") == ("no tags here", ())
    assert parse_prompt_loras(None) == (None, ())
    for bad in ("a <lora:ink:lots>", "a <lora:../x:1>", "a <lora:ink:nan>", "<lora:ink:99>"):
        with pytest.raises(InvalidRequestError) as caught:
            parse_prompt_loras(bad)
        assert caught.value.argument == "prompt", bad


def test_request_loras_override_tags_and_style() -> None:
    merged = merge_loras([LoraSpec("ink", 0.2)], [LoraSpec("INK", 0.9), LoraSpec("grain", 1)],
                         [LoraSpec("grain", 0.5), LoraSpec("paper", 0.7)])
    assert [(lora.name, lora.weight, lora.origin, lora.field) for lora in merged] == [
        ("grain", 1.0, "prompt", "prompt"), ("paper", 0.7, "style", "style.loras[1].name"),
        ("ink", 0.2, "request", "loras[0].name")]
    with pytest.raises(InvalidRequestError) as caught:
        merge_loras([LoraSpec(f"a{i}") for i in range(5)], [],
                    [LoraSpec(f"b{i}") for i in range(5)])
    assert caught.value.argument == "loras"


def test_files_are_read_as_safetensors_only(tmp_path: Path) -> None:
    diffusers = inspect_lora(_write_lora(tmp_path / "ink.safetensors"))
    kohya = inspect_lora(_write_lora(tmp_path / "grain.safetensors", kohya=True, width=2048))
    assert (diffusers.name, diffusers.format, diffusers.family) == ("ink", "diffusers", "sd15")
    assert (kohya.format, kohya.family) == ("kohya", "sdxl")
    # A1111's short hash: SHA-256 of what follows the header, 12 hex digits.
    data = (tmp_path / "ink.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    assert diffusers.short_hash == hashlib.sha256(data[8 + length:]).hexdigest()[:12]
    assert diffusers.describe()["hash"] == diffusers.short_hash

    pickled = tmp_path / "evil.safetensors"
    pickled.write_bytes(pickle.dumps({"lora_A": [1.0, 2.0]}))
    not_json = tmp_path / "garbage.safetensors"
    not_json.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{}")
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for bad in (pickled, not_json, huge, empty):
        with pytest.raises(InvalidRequestError, match="not a safetensors file"):
            read_header(bad)
    # Listing leaves unreadable files out; finding one names the field.
    assert [lora.name for lora in list_loras(tmp_path)] == ["grain", "ink"]
    assert find_lora("INK", tmp_path).path == tmp_path / "ink.safetensors"
    with pytest.raises(InvalidRequestError) as caught:
        find_lora("evil", tmp_path, "loras[2].name")
    assert (caught.value.argument, caught.value.reason) == ("loras[2].name",
                                                           "is not a safetensors file")
    with pytest.raises(InvalidRequestError) as caught:
        find_lora("missing", tmp_path, "prompt")
    assert caught.value.argument == "prompt" and "ink" in (caught.value.choices or [])
    with pytest.raises(InvalidRequestError, match="no LoRA folder"):
        find_lora("ink", None)


def test_styles_carry_loras_in_toml_and_inline(tmp_path: Path) -> None:
    file = tmp_path / "mine.toml"
    file.write_text('[Inked]\nprompt = "{prompt}, ink drawing"\n'
                    'loras = [{name = "ink", weight = 0.8}, {name = "paper"}]\n')
    library = StyleLibrary()
    library.load(file)
    style = library.get("inked")
    assert style.loras == (LoraSpec("ink", 0.8), LoraSpec("paper", 1.0))
    assert style.source == str(file) and library.get("Impressionist").source == "builtin"
    bad = tmp_path / "bad.toml"
    bad.write_text('[Bad]\nloras = [{name = "../x"}]\n')
    with pytest.raises(InvalidRequestError) as caught:
        StyleLibrary().load(bad)
    assert caught.value.argument == "styles" and "loras[0].name" in caught.value.reason

    inline = Style.inline({"name": "mine", "prompt": "{prompt}, ink", "steps": 12,
                           "loras": [{"name": "ink", "weight": -0.5}]})
    assert Style.inline(inline.to_table()) == inline
    cases = [
        ({"prompt": "{prompt}"}, "style.name"),
        ({"name": "a/b", "prompt": "{prompt}"}, "style.name"),
        ({"name": "x" * 65}, "style.name"),
        ({"name": "ok", "prompt": "no placeholder"}, "style.prompt"),
        ({"name": "ok", "prompt": "{prompt}" + "x" * 3000}, "style.prompt"),
        ({"name": "ok", "negative_prompt": "\udc00"}, "style.negative_prompt"),
        ({"name": "ok", "colour": "red"}, "style.colour"),
        ({"name": "ok", "steps": "many"}, "style.steps"),
        ({"name": "ok", "palette": ["#fff"] * 100}, "style.palette"),
        ({"name": "ok", "loras": [{"name": "ink", "weight": float("nan")}]},
         "style.loras[0].weight"),
    ]
    for table, field in cases:
        with pytest.raises(InvalidRequestError) as caught:
            Style.inline(table)
        assert caught.value.argument == field, table


def test_the_engine_refuses_named_loras_and_skips_a_styles() -> None:
    fractal = Spec2Fractal()
    assert fractal.capabilities["loras"] is False
    for kwargs, field in (({"loras": [{"name": "ink"}]}, "loras[0].name"),
                          ({"prompt": "a lake <lora:ink:0.5>"}, "prompt")):
        with pytest.raises(InvalidRequestError) as caught:
            fractal.generate_from_text(**{"prompt": "a lake", "width": 64, "height": 64,
                                          **kwargs})
        assert caught.value.argument == field
    style = {"name": "inked", "prompt": "{prompt}, ink", "effect": "watercolor",
             "loras": [{"name": "ink", "weight": 0.7}]}
    image = fractal.generate_from_text("a lake", width=96, height=64, seed=3, style=style)
    plain = fractal.generate_from_text("a lake", width=96, height=64, seed=3,
                                       style={**style, "loras": []})
    assert image.tobytes() == plain.tobytes()  # its painterly part applied, the LoRA skipped
    record = read_record(image)
    assert record is not None and record.style == "inked"
    assert record.loras == [{"name": "ink", "weight": 0.7, "hash": None, "applied": False,
                             "note": "skipped: the built-in engine takes no LoRA"}]
    assert "<lora:" not in image.info["parameters"]
    assert "Lora hashes" not in image.info["parameters"]


def test_parameters_name_applied_loras_as_a1111_does() -> None:
    record = GenerationRecord(
        input_type="text", prompt="a lake", user_prompt="a lake", negative_prompt="",
        width=512, height=512, steps=20, guidance=7.0, seed=1, sampler="Euler", model="m",
        loras=[{"name": "ink", "weight": 0.8, "hash": "0123456789ab", "applied": True},
               {"name": "grain", "weight": 1.0, "hash": "ba9876543210", "applied": True}])
    prompt, details = record.to_parameters().split("\n")
    assert prompt == "a lake <lora:ink:0.8> <lora:grain:1>"
    assert 'Lora hashes: "ink: 0123456789ab, grain: ba9876543210"' in details
    assert GenerationRecord.from_json(record.to_json()) == record
    assert json.loads(record.to_json())["loras"][0]["hash"] == "0123456789ab"


def test_plans_with_other_loras_do_not_share_a_call() -> None:
    from fractal.plan import build_plan

    fractal = Spec2Fractal()

    def plan(**kwargs: object) -> object:
        from fractal.request import GenerationRequest

        request = GenerationRequest(prompt="a lake", width=64, height=64, seed=1, **kwargs)
        return build_plan(request, None, styles=fractal.styles, defaults=fractal.defaults)

    plain, ink, ink_again, heavier = (plan(), plan(loras=({"name": "ink"},)),
                                      plan(loras=({"name": "INK", "weight": 1.0},)),
                                      plan(loras=({"name": "ink", "weight": 0.5},)))
    assert compatibility_key(ink) == compatibility_key(ink_again)
    assert len({compatibility_key(p) for p in (plain, ink, heavier)}) == 3
