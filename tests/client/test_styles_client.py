"""client.styles and client.loras against a real server with its embedded worker, and a
caller's own style rendered end to end on the built-in engine (issue #21): its template and
effect apply, its LoRAs are skipped and the record says so."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from fractal import read_record
from fractal.loras import parse_lora_text
from spec2fractal.client import (
    AsyncSpec2FractalClient,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    Spec2FractalClient,
    UnprocessableEntityError,
)
from spec2fractal.client._core import lora_list
from tests.api.auth_helpers import make_key
from tests.api.test_loras_api import lora_bytes, short_hash
from tests.api_server import serving
from workers.settings import Settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str, Path]]:
    data_dir = tmp_path_factory.mktemp("styles-client")
    folder = data_dir / "loras"
    folder.mkdir()
    (folder / "ink.safetensors").write_bytes(lora_bytes(data_dir))
    settings = Settings(data_dir=data_dir)
    admin, plain = make_key(settings, "ops", admin=True), make_key(settings, "user")
    with serving(data_dir, SPEC2FRACTAL_SYNC_TIMEOUT="30", SPEC2FRACTAL_AUTH="required",
                 SPEC2FRACTAL_RATE_LIMIT="1000/second", SPEC2FRACTAL_LORA_DIR=str(folder),
                 SPEC2FRACTAL_LORA_UPLOAD_MAX_BYTES="30000") as api:
        yield api.url, admin, plain, folder


def test_lora_shapes() -> None:
    assert parse_lora_text("ink:0.8") == {"name": "ink", "weight": 0.8}
    assert parse_lora_text("ink") == {"name": "ink", "weight": 1.0}
    with pytest.raises(ValueError, match="ink:x"):
        parse_lora_text("ink:x")
    assert lora_list({"ink": 0.5}) == [{"name": "ink", "weight": 0.5}]
    assert lora_list(["a:-1", ("b", 2), {"name": "c"}]) == [
        {"name": "a", "weight": -1.0}, {"name": "b", "weight": 2}, {"name": "c"}]


def test_a_callers_style_renders_on_the_engine(server) -> None:  # type: ignore
    url, _, plain, _ = server
    with Spec2FractalClient(url, plain) as client:
        made = client.styles.create("Ink Wash", "sumi-e ink wash of {prompt}",
                                    effect="pencil", loras={"ink": 0.8}, steps=8)
        assert made.source == "user" and made.loras == [{"name": "ink", "weight": 0.8}]
        assert "Ink Wash" in {style.name for style in client.styles.list()}
        result = client.images.generate("a heron", style="ink wash", width=64, height=48,
                                        seed=3)
        record = read_record(result.images()[0])
        assert record is not None
        # The engine draws the prompt's scene in the style's effect (it reads no template,
        # as with the built-in styles); the record names the style.
        assert record.style == "Ink Wash" and record.user_prompt == "a heron"
        assert record.loras == [{"name": "ink", "weight": 0.8, "hash": None, "applied": False,
                                 "note": record.loras[0]["note"]}]
        assert record.loras[0]["note"]
        assert "<lora:" not in result.images()[0].info["parameters"]
        assert client.images.generate("a heron", width=64, height=48, seed=3).images()[0] \
            .tobytes() != result.images()[0].tobytes()  # the effect changed the picture
        # The engine takes no LoRA asked for by name: refused before it is queued.
        with pytest.raises(UnprocessableEntityError) as refused:
            client.images.generate("a heron", loras=["ink:0.5"], width=64, height=48)
        assert refused.value.errors[0]["loc"] == ["body", "loras", 0, "name"]


def test_styles_crud_and_typed_errors(server) -> None:  # type: ignore
    url, admin, plain, _ = server
    with Spec2FractalClient(url, plain) as client, Spec2FractalClient(url, admin) as other:
        client.styles.create("Mine", "{prompt}, mine")
        with pytest.raises(ConflictError):
            client.styles.create("MINE", "{prompt}")
        with pytest.raises(NotFoundError):
            other.styles.get("mine")
        with pytest.raises(PermissionDeniedError):
            client.styles.update("Watercolor", "{prompt}")
        with pytest.raises(UnprocessableEntityError):
            client.styles.create("Bad", "no placeholder")
        assert client.styles.update("mine", "{prompt}, still mine").template == \
            "{prompt}, still mine"
        client.styles.delete("MINE")
        with pytest.raises(NotFoundError):
            client.styles.get("mine")


def test_loras_list_and_upload(server, tmp_path: Path) -> None:  # type: ignore
    url, admin, plain, folder = server
    data = lora_bytes(tmp_path, "kohya", seed=4)
    path = tmp_path / "Paper.safetensors"
    path.write_bytes(data)
    with Spec2FractalClient(url, plain) as client, Spec2FractalClient(url, admin) as ops:
        (ink,) = client.loras.list()
        assert ink.name == "ink" and ink.family == "sd15" and ink.format == "diffusers"
        with pytest.raises(PermissionDeniedError):
            client.loras.upload(path)
        made = ops.loras.upload(path)
        assert made.name == "Paper" and made.hash == short_hash(data) and made.format == "kohya"
        with pytest.raises(ConflictError):
            ops.loras.upload(data, filename="paper.safetensors")
        with pytest.raises(PayloadTooLargeError):
            ops.loras.upload(b"\0" * 40_000, filename="big.safetensors")
        assert sorted(lora.name for lora in client.loras.list()) == ["Paper", "ink"]
        ops.loras.delete("paper")
        assert not (folder / "Paper.safetensors").exists()


def test_the_async_client(server) -> None:  # type: ignore
    url, _, plain, _ = server

    async def go() -> None:
        async with AsyncSpec2FractalClient(url, plain) as client:
            made = await client.styles.create("Async", "{prompt}, async")
            assert (await client.styles.get("async")).name == made.name
            assert "ink" in {lora.name for lora in await client.loras.list()}
            await client.styles.delete("async")

    asyncio.run(go())


def test_the_upload_cap_is_enforced_while_streaming(server) -> None:  # type: ignore
    """No Content-Length: the route counts the file part as it arrives, answers 413 at the
    cap, and leaves nothing in the folder."""
    import httpx

    url, admin, _, folder = server
    before = sorted(folder.iterdir())
    boundary = "cafebabe"
    sent = {"bytes": 0}

    def chunks() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
               "filename=\"big.safetensors\"\r\n\r\n").encode()
        for _ in range(4000):  # 32 MB offered
            sent["bytes"] += 8192
            yield b"\0" * 8192
        yield f"\r\n--{boundary}--\r\n".encode()

    answer = httpx.post(f"{url}/loras", content=chunks(), timeout=60, headers={
        "Authorization": f"Bearer {admin}",
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 413 and answer.json()["max_bytes"] == 30_000
    assert sorted(folder.iterdir()) == before
