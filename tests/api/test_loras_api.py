"""LoRA files through the API: listing, operator uploads, and requests' LoRAs checked early
(issue #21). Small valid LoRA files are written with safetensors' numpy API: no torch."""

from __future__ import annotations

import hashlib
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save_file

from api.app import create_app
from tests.api.auth_helpers import bearer, make_key, secured
from workers.db import get_database
from workers.settings import Settings

DIFFUSERS_KEY = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
KOHYA_KEY = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"


def lora_bytes(tmp: Path, kind: str = "diffusers", seed: int = 0) -> bytes:
    """A tiny LoRA for an SD 1.x UNet (cross-attention width 768), in either key style."""
    rng = np.random.default_rng(seed)
    down, up = rng.standard_normal((4, 768), np.float32), rng.standard_normal((320, 4),
                                                                               np.float32)
    tensors = {f"{DIFFUSERS_KEY}.lora_A.weight": down, f"{DIFFUSERS_KEY}.lora_B.weight": up} \
        if kind == "diffusers" else {f"{KOHYA_KEY}.lora_down.weight": down,
                                     f"{KOHYA_KEY}.lora_up.weight": up,
                                     f"{KOHYA_KEY}.alpha": np.array(4.0, np.float32)}
    path = tmp / f"made-{kind}-{seed}.safetensors"
    save_file(tensors, str(path))
    return path.read_bytes()


def short_hash(data: bytes) -> str:
    (length,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + length:]).hexdigest()[:12]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[TestClient, Path, dict, dict]]:
    """Keys required; a LoRA folder holding one file; an admin and a plain key."""
    data_dir = tmp_path_factory.mktemp("loras")
    folder = data_dir / "loras"
    folder.mkdir()
    (folder / "ink.safetensors").write_bytes(lora_bytes(data_dir))
    (folder / "Paper.safetensors").write_bytes(lora_bytes(data_dir, seed=9))
    (folder / "notes.txt").write_text("not a LoRA")
    settings = secured(data_dir, rate_limit="", lora_dir=folder, lora_upload_max_bytes=40_000,
                       models=["fractal", str(data_dir / "not-a-model")])
    admin, plain = make_key(settings, "ops", admin=True), make_key(settings, "user")
    with TestClient(create_app(settings, start_worker=False)) as client:
        yield client, folder, bearer(admin), bearer(plain)
        get_database(settings.resolved_database_url).engine.dispose()


def _upload(client: TestClient, headers: dict, data: bytes, filename: str = "new.safetensors",
            **fields: str):  # type: ignore[no-untyped-def]
    return client.post("/loras", files={"file": (filename, data)}, data=fields,
                       headers=headers)


def test_the_folder_is_listed_with_family_format_and_hash(served) -> None:  # type: ignore
    client, folder, _, plain = served
    listed = client.get("/loras", headers=plain)
    assert listed.status_code == 200
    (ink,) = [lora for lora in listed.json()["loras"] if lora["name"] == "ink"]
    data = (folder / "ink.safetensors").read_bytes()
    assert ink == {"name": "ink", "family": "sd15", "format": "diffusers", "size": len(data),
                   "hash": short_hash(data)}
    assert "notes" not in {lora["name"] for lora in listed.json()["loras"]}


def test_an_admin_uploads_and_deletes(served, tmp_path: Path) -> None:  # type: ignore
    client, folder, admin, plain = served
    data = lora_bytes(tmp_path, "kohya", seed=1)
    made = _upload(client, admin, data, "Kohya Style.safetensors")
    assert made.status_code == 201, made.text
    assert made.json() == {"name": "Kohya Style", "family": "sd15", "format": "kohya",
                           "size": len(data), "hash": short_hash(data)}
    assert (folder / "Kohya Style.safetensors").read_bytes() == data
    assert not [path for path in folder.iterdir() if path.name.startswith(".")]
    clash = _upload(client, admin, data, "kohya style.safetensors")
    assert clash.status_code == 409
    named = _upload(client, admin, data, "whatever.safetensors", name="renamed")
    assert named.status_code == 201 and named.json()["name"] == "renamed"
    assert "renamed" in {lora["name"] for lora in client.get("/loras", headers=plain).json()[
        "loras"]}
    assert client.delete("/loras/RENAMED", headers=plain).status_code == 403
    assert client.delete("/loras/RENAMED", headers=admin).status_code == 204
    assert client.delete("/loras/kohya style", headers=admin).status_code == 204
    assert client.delete("/loras/kohya style", headers=admin).status_code == 404
    assert client.delete("/loras/..%2F..%2Fetc", headers=admin).status_code == 404
    assert sorted(path.name for path in folder.iterdir()) == [
        "Paper.safetensors", "ink.safetensors", "notes.txt"]


def test_only_admins_upload(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, folder, _, plain = served
    refused = _upload(client, plain, lora_bytes(tmp_path))
    assert refused.status_code == 403
    assert not (folder / "new.safetensors").exists()


@pytest.mark.parametrize(("filename", "content", "fields", "loc"), [
    ("evil.safetensors", pickle.dumps({"weights": [1, 2, 3]}), {}, ["body", "file"]),
    ("evil.ckpt", b"PK\x03\x04 a zip of pickles", {}, ["body", "file"]),
    ("empty.safetensors", b"", {}, ["body", "file"]),
    ("short.safetensors", struct.pack("<Q", 10 ** 12) + b"{}", {}, ["body", "file"]),
    ("ok.safetensors", None, {"name": "../escape"}, ["body", "name"]),
    ("ok.safetensors", None, {"name": "owner/repo"}, ["body", "name"]),
    ("ok.safetensors", None, {"name": "x" * 300}, ["body", "name"]),
])
def test_bad_uploads_name_the_field(served, tmp_path: Path, filename: str,  # type: ignore
                                    content: bytes | None, fields: dict, loc: list) -> None:
    client, folder, admin, _ = served
    before = sorted(folder.iterdir())
    data = content if content is not None else lora_bytes(tmp_path)
    refused = _upload(client, admin, data, filename, **fields)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == loc
    assert sorted(folder.iterdir()) == before  # nothing left behind


def test_uploads_over_the_cap_are_refused_while_streaming(served) -> None:  # type: ignore
    client, folder, admin, _ = served
    before = sorted(folder.iterdir())
    big = b"\0" * 50_000
    assert _upload(client, admin, big).status_code == 413  # declared length
    boundary = "cafebabe"
    sent = {"bytes": 0}

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
               f"filename=\"big.safetensors\"\r\n\r\n").encode()
        for _ in range(1000):
            sent["bytes"] += 8192
            yield b"\0" * 8192
        yield f"\r\n--{boundary}--\r\n".encode()

    refused = client.post("/loras", content=chunks(), headers={
        **admin, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert refused.status_code == 413
    assert sorted(folder.iterdir()) == before


def test_multipart_only(served) -> None:  # type: ignore[no-untyped-def]
    client, _, admin, _ = served
    assert client.post("/loras", json={"file": "x"}, headers=admin).status_code == 415
    broken = client.post("/loras", content=b"--x\r\nnonsense", headers={
        **admin, "Content-Type": "multipart/form-data; boundary=x"})
    assert broken.status_code in (413, 422)
    no_file = client.post("/loras", data={"name": "n"}, files={"other": ("a", b"b")},
                          headers=admin)
    assert no_file.status_code == 422


def _submit(client: TestClient, headers: dict, **body):  # type: ignore[no-untyped-def]
    body = body if "content" in body else {"prompt": "a heron", **body}
    return client.post("/generate", json=body,
                       headers={**headers, "Prefer": "respond-async"})


def _loc(response) -> list:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    return response.json()["detail"][0]["loc"]


def test_requests_loras_are_checked_early(served) -> None:  # type: ignore[no-untyped-def]
    client, _, _, plain = served
    # The built-in engine takes no LoRA: by name, or by a prompt tag.
    assert _loc(_submit(client, plain, loras=[{"name": "ink", "weight": 0.5}])) == \
        ["body", "loras", 0, "name"]
    assert _loc(_submit(client, plain, prompt="a heron <lora:ink:0.5>")) == ["body", "prompt"]
    assert _loc(_submit(client, plain, content="a heron <lora:ink>")) == ["body", "content"]
    for bad, loc in (([{"name": "ink", "weight": float("nan")}], None),
                     ([{"name": "ink", "weight": 9}], ["body", "loras", 0, "weight"]),
                     ([{"name": "\ud800"}], None),
                     ([{"name": "ink"}] * 9, ["body", "loras"]),
                     ({"name": "ink"}, ["body", "loras"]),
                     ([{"name": "ink", "weight": True}], ["body", "loras", 0, "weight"]),
                     ([{"name": "../../x"}], ["body", "loras", 0, "name"])):
        if loc is None:  # not JSON the API reads: refused before the model sees it
            continue
        assert _loc(_submit(client, plain, loras=bad)) == loc, bad
    listed = {model["id"]: model for model in client.get("/models", headers=plain).json()[
        "models"]}
    assert listed["fractal"]["loras"] is False
    assert listed["not-a-model"]["loras"] is True  # unreadable here: a diffusers model


def test_loras_for_a_diffusion_model(served, tmp_path: Path) -> None:  # type: ignore

    client, _, _, plain = served
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    # A model the API cannot read is the workers' to decide: only the folder and hub
    # rules apply here.
    model = settings.models[1]
    assert _loc(_submit(client, plain, model=model, loras=[{"name": "owner/repo"}])) == \
        ["body", "loras", 0, "name"]
    missing = _submit(client, plain, model=model, loras=[{"name": "absent"}])
    assert _loc(missing) == ["body", "loras", 0, "name"]
    assert missing.json()["detail"][0]["ctx"]["choices"] == ["Paper", "ink"]
    accepted = _submit(client, plain, model=model, loras=[{"name": "INK", "weight": 0.7}])
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["request"]["loras"] == [{"name": "INK", "weight": 0.7}]
    tagged = _submit(client, plain, model=model, prompt="a heron <lora:ink:0.3>")
    assert tagged.status_code == 202, tagged.text


def test_hub_ids_when_the_server_takes_them(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, lora_hub=True, lora_dir=tmp_path,
                        models=["fractal", str(tmp_path / "elsewhere")])
    with TestClient(create_app(settings, start_worker=False)) as client:
        made = client.post("/generate", json={"prompt": "x", "model": settings.models[1],
                                              "loras": [{"name": "owner/repo"}]},
                           headers={"Prefer": "respond-async"})
        assert made.status_code == 202, made.text
        # Auth off: anyone may upload.
        assert _upload(client, {}, lora_bytes(tmp_path)).status_code == 201


def test_no_folder(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path), start_worker=False)) as client:
        assert client.get("/loras").json() == {"loras": []}
        assert _upload(client, {}, lora_bytes(tmp_path)).status_code == 501


def test_a_dead_uploads_temporary_file_goes_at_the_next_start(tmp_path: Path) -> None:
    """An API process that dies mid-upload leaves its hidden temporary file; the next start
    removes it once it is an hour without a write. Fresh ones (another API process's upload
    in progress) and the LoRAs themselves stay."""
    import os
    import time

    from api.lora_upload import STALE_UPLOAD_SECONDS, TEMP_PREFIX

    folder = tmp_path / "loras"
    folder.mkdir()
    dead, live = folder / f"{TEMP_PREFIX}dead.part", folder / f"{TEMP_PREFIX}live.part"
    kept = folder / "ink.safetensors"
    for path in (dead, live):
        path.write_bytes(b"half a file")
    kept.write_bytes(lora_bytes(tmp_path))
    old = time.time() - STALE_UPLOAD_SECONDS - 60
    os.utime(dead, (old, old))
    os.utime(kept, (old, old))
    settings = Settings(data_dir=tmp_path / "data", lora_dir=folder)
    with TestClient(create_app(settings, start_worker=False)) as client:
        assert [lora["name"] for lora in client.get("/loras").json()["loras"]] == ["ink"]
    assert not dead.exists() and live.exists() and kept.exists()


@pytest.mark.parametrize(("raw", "loc"), [
    ('{"prompt": "x", "loras": [{"name": "ink", "weight": NaN}]}', ["body", "loras", 0]),
    ('{"prompt": "x", "loras": [{"name": "\\ud800"}]}', ["body", "loras", 0]),
    ('{"prompt": "x", "loras": ' + "[" * 100 + "]" * 100 + "}", ["body"]),
    ('{"prompt": "x", "loras": "ink"}', ["body", "loras"]),
    ('{"prompt": "x", "loras": [' + ", ".join(['{"name": "a"}'] * 20000) + "]}",
     ["body", "loras"]),
])
def test_hostile_lora_fields(served, raw: str, loc: list) -> None:  # type: ignore
    client, _, _, plain = served
    response = client.post("/generate", content=raw.encode("utf-8", "surrogatepass"),
                           headers={**plain, "Content-Type": "application/json",
                                    "Prefer": "respond-async"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:len(loc)] == loc


def test_loras_in_a_multipart_form(served) -> None:  # type: ignore[no-untyped-def]
    client, _, _, plain = served
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    form = {"prompt": "a heron", "model": settings.models[1],
            "loras": '[{"name": "ink", "weight": 0.25}]'}
    made = client.post("/generate", data=form, headers={**plain, "Prefer": "respond-async"})
    assert made.status_code == 202, made.text
    assert made.json()["request"]["loras"] == [{"name": "ink", "weight": 0.25}]
    for text, loc in (('[{"name": "ink"', ["body", "loras"]),
                      ('[{"name": "absent"}]', ["body", "loras", 0, "name"]),
                      ('{"name": "ink"}', ["body", "loras"])):
        refused = client.post("/generate", data={**form, "loras": text}, headers=plain)
        assert _loc(refused)[:len(loc)] == loc, text


def test_openai_images_take_loras(tmp_path: Path) -> None:
    """/v1/images/generations and /edits take `loras` (JSON text in the edits form), checked
    as POST /generate checks them; the job carries them."""
    import io

    from PIL import Image

    folder = tmp_path / "loras"
    folder.mkdir()
    (folder / "ink.safetensors").write_bytes(lora_bytes(tmp_path))
    model = str(tmp_path / "not-a-model")
    settings = Settings(data_dir=tmp_path / "data", lora_dir=folder, sync_timeout=0,
                        models=["fractal", model])
    png = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(png, format="PNG")
    with TestClient(create_app(settings, start_worker=False)) as client:
        def generations(**body):  # type: ignore[no-untyped-def]
            return client.post("/v1/images/generations", json={"prompt": "a heron", **body})

        def edits(loras: str):  # type: ignore[no-untyped-def]
            return client.post("/v1/images/edits", data={"prompt": "a heron", "model": model,
                                                          "loras": loras},
                               files={"image": ("in.png", png.getvalue(), "image/png")})

        def param(response) -> str:  # type: ignore[no-untyped-def]
            assert response.status_code == 400, response.text
            return response.json()["error"]["param"]

        assert param(generations(loras=[{"name": "ink"}])) == "loras.0.name"  # the engine
        assert param(generations(model=model, loras=[{"name": "ink", "weight": 9}])) == \
            "loras.0.weight"
        assert param(generations(model=model, loras=[{"name": "absent"}])) == "loras.0.name"
        assert param(generations(model=model, loras={"name": "ink"})) == "loras"
        assert param(edits('[{"name": "ink"')).startswith("loras")  # not JSON: where it ends
        assert param(edits('[{"name": "ink", "weight": NaN}]')) == "loras.0.weight"
        for response in (generations(model=model, loras=[{"name": "INK", "weight": 0.7}]),
                         edits('[{"name": "INK", "weight": 0.7}]')):
            assert response.status_code == 202, response.text
            job = client.get(f"/jobs/{response.json()['job_id']}").json()
            assert job["request"]["loras"] == [{"name": "INK", "weight": 0.7}]
