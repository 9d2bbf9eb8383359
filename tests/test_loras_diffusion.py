"""LoRAs on a real (tiny) diffusion model: both file formats, weights, prompt tags, styles,
co-rendering, loading once, and the files that must be refused (tests/tiny_loras.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fractal import GenerationRequest, InvalidRequestError, Spec2Fractal, read_record
from fractal.loras import inspect_lora
from fractal.record import PARAMETERS_KEY
from tests.tiny_loras import (
    build_lora,
    build_sdxl_lora,
    to_kohya,
    write_pickle,
    write_unmatched,
)

BASE = {"prompt": "a lighthouse on a cliff", "width": 64, "height": 64, "steps": 2, "seed": 7}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def render(model: Spec2Fractal, **changes: object) -> Image.Image:
    return model.generate({**BASE, **changes})[0]


@pytest.fixture(scope="module")
def lora_dir(tiny_sd: Path, tiny_sdxl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    ink = build_lora(tiny_sd, folder / "ink.safetensors", seed=0, text_encoder=True)
    to_kohya(ink, folder / "ink-kohya.safetensors")
    build_lora(tiny_sd, folder / "oil.safetensors", seed=1)
    build_sdxl_lora(tiny_sdxl, folder / "xl.safetensors")  # its keys say sdxl
    build_lora(tiny_sdxl, folder / "xl-unet.safetensors")  # family unknown; shapes differ
    write_unmatched(folder / "nowhere.safetensors")
    write_pickle(folder / "pickled.safetensors")
    return folder


@pytest.fixture(scope="module")
def model(tiny_sd: Path, lora_dir: Path) -> Spec2Fractal:
    return Spec2Fractal(str(tiny_sd), lora_dir=lora_dir)


@pytest.fixture(scope="module")
def plain(model: Spec2Fractal) -> np.ndarray:
    return pixels(render(model))


def test_capabilities_say_loras(model: Spec2Fractal) -> None:
    assert model.capabilities["loras"] is True
    assert {lora.name for lora in model.loras()} >= {"ink", "ink-kohya", "oil"}


def test_both_formats_load_by_name_change_the_output_and_agree(
        model: Spec2Fractal, lora_dir: Path, plain: np.ndarray) -> None:
    assert inspect_lora(lora_dir / "ink.safetensors").format == "diffusers"
    assert inspect_lora(lora_dir / "ink-kohya.safetensors").format == "kohya"
    diffusers = pixels(render(model, loras=[{"name": "ink"}]))
    kohya = pixels(render(model, loras=[{"name": "ink-kohya", "weight": 1.0}]))
    assert np.abs(diffusers - plain).mean() > 1
    assert np.abs(diffusers - kohya).max() <= 1
    # ink adapts the text encoder too (lora_te_ keys in the kohya copy): both landed there.
    hashes = {inspect_lora(lora_dir / f"{name}.safetensors").short_hash
              for name in ("ink", "ink-kohya")}
    encoder = model.backend.text_pipeline.get_list_adapters()["text_encoder"]
    assert {f"lora_{short}" for short in hashes} <= set(encoder)
    # LoRAs off again: the plain render comes back exactly.
    assert np.array_equal(pixels(render(model)), plain)


def test_weight_zero_equals_no_lora(model: Spec2Fractal, plain: np.ndarray) -> None:
    assert np.abs(pixels(render(model, loras=[{"name": "ink", "weight": 0}])) - plain).max() <= 1


def test_weights_and_two_loras_differ(model: Spec2Fractal) -> None:
    full = pixels(render(model, loras=[{"name": "ink"}]))
    half = pixels(render(model, loras=[{"name": "ink", "weight": 0.5}]))
    both = pixels(render(model, loras=[{"name": "ink"}, {"name": "oil"}]))
    assert np.abs(full - half).mean() > 0.5 and np.abs(full - both).mean() > 0.5


def test_prompt_tag_applies_and_leaves_the_prompt(model: Spec2Fractal) -> None:
    tagged = render(model, prompt=f"{BASE['prompt']} <lora:ink:0.8>")
    named = render(model, loras=[{"name": "ink", "weight": 0.8}])
    assert np.abs(pixels(tagged) - pixels(named)).max() <= 1  # the model saw the same text
    record = read_record(tagged)
    assert "<lora" not in record.prompt and record.prompt == BASE["prompt"]
    assert record.loras[0]["name"] == "ink" and record.loras[0]["weight"] == 0.8


def test_record_and_parameters_name_each_lora(model: Spec2Fractal, lora_dir: Path) -> None:
    image = render(model, loras=[{"name": "ink", "weight": 0.8}, {"name": "oil", "weight": -0.5}])
    ink, oil = (inspect_lora(lora_dir / f"{name}.safetensors").short_hash
                for name in ("ink", "oil"))
    assert read_record(image).loras == [
        {"name": "ink", "weight": 0.8, "hash": ink, "applied": True},
        {"name": "oil", "weight": -0.5, "hash": oil, "applied": True}]
    text = image.info[PARAMETERS_KEY]
    assert text.splitlines()[0].endswith("<lora:ink:0.8> <lora:oil:-0.5>")
    assert f'Lora hashes: "ink: {ink}, oil: {oil}"' in text


def test_co_rendered_requests_keep_their_own_loras(model: Spec2Fractal) -> None:
    requests = [GenerationRequest(**BASE, loras=({"name": "ink"},)),
                GenerationRequest(**{**BASE, "seed": 8}, loras=({"name": "oil"},)),
                GenerationRequest(**{**BASE, "seed": 9}),
                GenerationRequest(**{**BASE, "seed": 10}, loras=({"name": "ink"},))]
    together = model.generate_many(requests)
    for request, images in zip(requests, together, strict=True):
        alone = model.generate(request)[0]
        assert np.abs(pixels(images[0]) - pixels(alone)).max() <= 1
        assert read_record(images[0]).loras == read_record(alone).loras


def test_each_lora_loads_once(tiny_sd: Path, lora_dir: Path) -> None:
    model = Spec2Fractal(str(tiny_sd), lora_dir=lora_dir)
    adapters = model.backend.lora_adapters
    for loras in ([{"name": "ink"}], [{"name": "oil"}], [], [{"name": "ink", "weight": 0.3}],
                  [{"name": "oil"}, {"name": "ink"}], [{"name": "INK"}]):
        render(model, loras=loras)
    assert adapters.loads == 2
    pipeline = model.backend.text_pipeline
    assert sorted(pipeline.get_list_adapters()["unet"]) == sorted(adapters.loaded)
    render(model, loras=[{"name": "ink-kohya"}])  # other bytes: an adapter of its own
    assert adapters.loads == 3


def test_least_recently_used_adapters_are_unloaded(tiny_sd: Path, lora_dir: Path) -> None:
    from fractal.backends.lora import LoraAdapters

    model = Spec2Fractal(str(tiny_sd), lora_dir=lora_dir)
    backend = model.backend
    small = LoraAdapters(backend.text_pipeline, backend.family, backend.name, lora_dir)
    small.keep = 1  # below a request's worth only here, to see eviction with two files
    backend.lora_adapters = small
    one = pixels(render(model, loras=[{"name": "ink"}]))
    render(model, loras=[{"name": "oil"}])
    assert list(small.loaded) == [f"lora_{inspect_lora(lora_dir / 'oil.safetensors').short_hash}"]
    assert backend.text_pipeline.get_list_adapters()["unet"] == list(small.loaded)
    assert np.abs(pixels(render(model, loras=[{"name": "ink"}])) - one).max() <= 1
    assert small.loads == 3


def test_a_style_with_loras_applies_them(model: Spec2Fractal) -> None:
    style = {"name": "inky", "prompt": "{prompt}, ink"}
    bare = pixels(render(model, style=style))
    styled = render(model, style={**style, "loras": [{"name": "ink", "weight": 0.7}]})
    asked = pixels(render(model, style=style, loras=[{"name": "ink", "weight": 0.7}]))
    assert np.abs(pixels(styled) - bare).mean() > 1
    assert np.abs(pixels(styled) - asked).max() <= 1
    assert read_record(styled).loras[0]["applied"] is True


def test_lora_applies_in_image_to_image(model: Spec2Fractal, plain: np.ndarray) -> None:
    source = Image.fromarray(plain.astype(np.uint8))
    arguments = {"strength": 0.6, "steps": 2, "seed": 3}
    without = pixels(model.generate_from_image(source, "a lighthouse", **arguments))
    with_ink = model.generate_from_image(source, "a lighthouse", loras=[{"name": "ink"}],
                                         **arguments)
    assert np.abs(pixels(with_ink) - without).mean() > 1
    assert read_record(with_ink).loras[0]["applied"] is True
    # The image pipeline shares the adapters, and turning them off: the text render is plain.
    assert np.array_equal(pixels(render(model)), plain)


@pytest.mark.parametrize(("name", "reason"), [
    ("xl", "was trained for sdxl; the model is sd15"),
    ("pickled", "is not a safetensors file"),
    ("missing", "is not a LoRA in the LoRA folder"),
])
def test_refused_before_rendering(model: Spec2Fractal, name: str, reason: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        render(model, loras=[{"name": "ink"}, {"name": name}])
    assert caught.value.argument == "loras[1].name" and reason in caught.value.reason
    with pytest.raises(InvalidRequestError) as caught:
        render(model, prompt=f"a cat <lora:{name}:0.5>")
    assert caught.value.argument == "prompt"


@pytest.mark.parametrize(("name", "reason"), [
    ("xl-unet", "shapes differ"),
    ("nowhere", "none of its keys match"),
])
def test_a_lora_that_does_not_fit_is_refused_and_leaves_the_model_clean(
        model: Spec2Fractal, plain: np.ndarray, name: str, reason: str) -> None:
    pipeline = model.backend.text_pipeline

    def adapters() -> dict[str, list[str]]:
        # A first failed load leaves peft's empty scaffolding ({"unet": []}): no adapter.
        return {part: names for part, names in pipeline.get_list_adapters().items() if names}

    before = adapters()
    with pytest.raises(InvalidRequestError) as caught:
        render(model, loras=[{"name": name, "weight": 0.5}])
    assert caught.value.argument == "loras[0].name" and reason in caught.value.reason
    assert adapters() == before
    assert np.array_equal(pixels(render(model)), plain)
    # In a group: its members get the error, the other requests their images.
    results = model.generate_many([GenerationRequest(**BASE, loras=({"name": name},)),
                                   GenerationRequest(**BASE)])
    assert isinstance(results[0], InvalidRequestError)
    assert results[0].argument == "loras[0].name"
    assert np.array_equal(pixels(results[1][0]), plain)


def test_hub_lora_unreachable_offline_names_the_field(model: Spec2Fractal) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        render(model, loras=[{"name": "nobody/no-such-lora"}])
    assert caught.value.argument == "loras[0].name"
    assert "could not be fetched from the hub" in caught.value.reason


def test_hub_lora_loads_from_the_hub_cache(model: Spec2Fractal, lora_dir: Path,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """A hub id, offline, from a hub cache laid out as huggingface_hub writes it: the default
    file name for ``owner/repo``, the named one for ``owner/repo/file.safetensors``."""
    import shutil

    import huggingface_hub.constants

    commit = "0" * 40
    snapshot = tmp_path / "models--someone--ink-lora" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    shutil.copy(lora_dir / "ink.safetensors", snapshot / "pytorch_lora_weights.safetensors")
    shutil.copy(lora_dir / "oil.safetensors", snapshot / "oil.safetensors")
    (tmp_path / "models--someone--ink-lora" / "refs").mkdir()
    (tmp_path / "models--someone--ink-lora" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))

    by_hub = render(model, loras=[{"name": "someone/ink-lora", "weight": 0.8}])
    by_name = render(model, loras=[{"name": "ink", "weight": 0.8}])
    assert np.abs(pixels(by_hub) - pixels(by_name)).max() <= 1
    assert read_record(by_hub).loras[0]["hash"] == read_record(by_name).loras[0]["hash"]
    oil = render(model, prompt="a cat <lora:someone/ink-lora/oil.safetensors:0.5>")
    assert np.abs(pixels(oil) - pixels(render(model, prompt="a cat",
                                              loras=[{"name": "oil", "weight": 0.5}]))).max() <= 1
    # The same bytes under two names are one adapter, applied with both weights.
    twice = render(model, loras=[{"name": "ink", "weight": 0.4},
                                 {"name": "someone/ink-lora", "weight": 0.4}])
    assert np.abs(pixels(twice) - pixels(by_name)).max() <= 1


def test_an_oversized_hub_file_is_refused_before_downloading(
        model: Spec2Fractal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub cannot be reached here: its answer about a file's size is stood in for (the
    one stand-in of this module), and a download must not start."""
    import huggingface_hub
    import huggingface_hub.constants

    from fractal.backends.lora import MAX_HUB_BYTES

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata",
                        lambda url: type("Metadata", (), {"size": MAX_HUB_BYTES + 1})())

    def download(**arguments: object) -> str:
        raise AssertionError("downloaded")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(InvalidRequestError) as caught:
        render(model, loras=[{"name": "someone/huge/model.safetensors"}])
    assert caught.value.argument == "loras[0].name" and "at most" in caught.value.reason


@pytest.mark.parametrize(("loras", "field"), [
    ([{"name": "../ink"}], "loras[0].name"),
    ([{"name": "ink\ud800"}], "loras[0].name"),
    ([{"name": "ink", "weight": float("nan")}], "loras[0].weight"),
    ([{"name": "ink", "weight": float("inf")}], "loras[0].weight"),
    ([{"name": "ink", "weight": "1"}], "loras[0].weight"),
    ([{"name": ["ink"]}], "loras[0].name"),
    ([{"name": "ink", "extra": {"deep": [[[]]]}}], "loras[0].extra"),
    ([{"name": f"l{index}"} for index in range(1000)], "loras"),
    ("ink", "loras"),
])
def test_hostile_lora_values_name_their_field(model: Spec2Fractal, loras: object,
                                              field: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        render(model, loras=loras)
    assert caught.value.argument == field


def test_lora_applies_when_inpainting(model: Spec2Fractal, plain: np.ndarray) -> None:
    """The inpainting pipeline (from_pipe over the same UNet) takes the adapters too."""
    source = Image.fromarray(plain.astype(np.uint8))
    mask = Image.new("L", source.size, 0)
    mask.paste(255, (32, 0, 64, 64))  # the right half repaints
    arguments = {"mask": mask, "strength": 0.9, "steps": 2, "seed": 4}
    without = pixels(model.generate_from_image(source, "a lighthouse", **arguments))
    with_ink = model.generate_from_image(source, "a lighthouse", loras=[{"name": "ink"}],
                                         **arguments)
    assert np.abs(pixels(with_ink)[:, 32:] - without[:, 32:]).mean() > 1
    assert read_record(with_ink).loras[0]["applied"] is True
    assert type(model.backend.inpainting.pipeline(model.backend.text_pipeline)).__name__ \
        == "StableDiffusionInpaintPipeline"
