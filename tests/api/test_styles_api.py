"""Styles as API resources: the server's presets and each key's own (issue #21)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from fractal import InvalidRequestError
from tests.api.auth_helpers import bearer, make_key, secured
from workers.db import get_database

INK = {"name": "Ink Wash", "prompt": "sumi-e ink wash of {prompt}, rice paper",
       "negative_prompt": "colour", "description": "Black ink on paper", "effect": "pencil",
       "palette": ["black", "#f4efe3"], "lighting": "soft", "steps": 12, "guidance": 6.5,
       "loras": [{"name": "ink", "weight": 0.8}]}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict, dict]]:
    """An app that requires keys, offline (no worker), with two callers' keys."""
    settings = secured(tmp_path_factory.mktemp("styles"), max_styles_per_key=3, rate_limit="")
    alice, bob = make_key(settings, "alice"), make_key(settings, "bob")
    with TestClient(create_app(settings, start_worker=False)) as client:
        yield client, bearer(alice), bearer(bob)
        get_database(settings.resolved_database_url).engine.dispose()


def _clear(client: TestClient, headers: dict) -> None:
    for style in client.get("/styles", headers=headers).json()["styles"]:
        if style["source"] == "user":
            client.delete(f"/styles/{style['name']}", headers=headers)


def _submit(client: TestClient, body: dict, headers: dict | None = None):  # type: ignore
    """POST /generate without waiting: 202 and the queued job (no worker runs here)."""
    return client.post("/generate", json=body,
                       headers={**(headers or {}), "Prefer": "respond-async"})


def _loc(response) -> list:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    return response.json()["detail"][0]["loc"]


def test_crud_of_a_callers_own_style(keyed) -> None:  # type: ignore[no-untyped-def]
    client, alice, _ = keyed
    _clear(client, alice)
    created = client.post("/styles", json=INK, headers=alice)
    assert created.status_code == 201, created.text
    info = created.json()
    assert info["source"] == "user" and info["template"] == INK["prompt"]
    assert info["loras"] == [{"name": "ink", "weight": 0.8}]
    assert info["palette"] == INK["palette"] and info["steps"] == 12
    assert created.headers["location"] == "/styles/Ink%20Wash"

    listed = client.get("/styles", headers=alice).json()["styles"]
    sources = {style["name"]: style["source"] for style in listed}
    assert sources["Ink Wash"] == "user" and sources["Watercolor"] == "builtin"
    assert client.get("/styles/ink WASH", headers=alice).json() == info  # any case

    changed = dict(INK, name="INK wash", prompt="{prompt} in ink", loras=[])
    replaced = client.put("/styles/ink wash", json=changed, headers=alice)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"] == "INK wash" and replaced.json()["loras"] == []
    assert client.get("/styles/Ink Wash", headers=alice).json()["template"] == "{prompt} in ink"

    assert client.delete("/styles/ink wash", headers=alice).status_code == 204
    assert client.get("/styles/Ink Wash", headers=alice).status_code == 404
    assert client.delete("/styles/ink wash", headers=alice).status_code == 404


def test_another_keys_style_is_unknown(keyed) -> None:  # type: ignore[no-untyped-def]
    client, alice, bob = keyed
    _clear(client, alice)
    assert client.post("/styles", json=INK, headers=alice).status_code == 201
    assert client.get("/styles/Ink Wash", headers=bob).status_code == 404
    assert "Ink Wash" not in {s["name"] for s in client.get("/styles", headers=bob).json()[
        "styles"]}
    assert client.put("/styles/Ink Wash", json=INK, headers=bob).status_code == 404
    assert client.delete("/styles/Ink Wash", headers=bob).status_code == 404
    # Bob may keep a style by the same name: names are unique per key.
    assert client.post("/styles", json=INK, headers=bob).status_code == 201
    assert client.delete("/styles/Ink Wash", headers=bob).status_code == 204
    # ...and cannot render with Alice's.
    refused = _submit(client, {"prompt": "a heron", "style": "Ink Wash"},
                      headers=bob)
    assert _loc(refused) == ["body", "style"]
    assert client.get("/styles/Ink Wash", headers=alice).status_code == 200


def test_a_callers_style_is_inlined_into_the_job(keyed) -> None:  # type: ignore[no-untyped-def]
    client, alice, _ = keyed
    _clear(client, alice)
    plain = dict(INK, loras=[])
    assert client.post("/styles", json=plain, headers=alice).status_code == 201
    job = _submit(client, {"prompt": "a heron", "style": "ink wash"}, headers=alice)
    assert job.status_code == 202, job.text
    style = job.json()["request"]["style"]
    assert style["name"] == "Ink Wash" and style["prompt"] == INK["prompt"]
    assert style["effect"] == "pencil"
    listed = client.get("/jobs", params={"style": "Ink Wash"}, headers=alice).json()["jobs"]
    assert job.json()["id"] in {listed_job["id"] for listed_job in listed}
    # A server style stays a name.
    job = _submit(client, {"prompt": "a heron", "style": "watercolor"},
                      headers=alice)
    assert job.json()["request"]["style"] == "watercolor"


def test_the_servers_styles_are_read_only(keyed) -> None:  # type: ignore[no-untyped-def]
    client, alice, _ = keyed
    body = dict(INK, name="Watercolor")
    assert client.put("/styles/watercolor", json=body, headers=alice).status_code == 403
    assert client.delete("/styles/WATERCOLOR", headers=alice).status_code == 403
    taken = client.post("/styles", json=body, headers=alice)
    assert taken.status_code == 409
    assert client.get("/styles/watercolor", headers=alice).json()["source"] == "builtin"


def test_names_are_unique_per_key_in_any_case(keyed) -> None:  # type: ignore[no-untyped-def]
    client, alice, _ = keyed
    _clear(client, alice)
    assert client.post("/styles", json=INK, headers=alice).status_code == 201
    again = client.post("/styles", json=dict(INK, name="INK WASH"), headers=alice)
    assert again.status_code == 409 and "exists" in again.json()["detail"]
    mismatch = client.put("/styles/Ink Wash", json=dict(INK, name="Other"), headers=alice)
    assert _loc(mismatch) == ["body", "name"]


def test_a_key_keeps_at_most_its_limit(keyed) -> None:  # type: ignore[no-untyped-def]
    client, alice, _ = keyed
    _clear(client, alice)
    for index in range(3):
        made = client.post("/styles", json=dict(INK, name=f"s{index}"), headers=alice)
        assert made.status_code == 201
    full = client.post("/styles", json=dict(INK, name="s3"), headers=alice)
    assert full.status_code == 409 and full.json()["limit"] == 3
    _clear(client, alice)


@pytest.mark.parametrize(("change", "loc"), [
    ({"prompt": "no placeholder"}, ["body", "prompt"]),
    ({"prompt": None}, ["body", "prompt"]),
    ({"prompt": 5}, ["body", "prompt"]),
    ({"prompt": "x" * 2001 + "{prompt}"}, ["body", "prompt"]),
    ({"name": ""}, ["body", "name"]),
    ({"name": "a/b"}, ["body", "name"]),
    ({"name": "tab\there"}, ["body", "name"]),
    ({"name": "n" * 65}, ["body", "name"]),
    ({"name": ["list"]}, ["body", "name"]),
    ({"effect": "glitter"}, ["body", "effect"]),
    ({"lighting": "disco"}, ["body", "lighting"]),
    ({"steps": 0}, ["body", "steps"]),
    ({"steps": True}, ["body", "steps"]),
    ({"steps": 1.5}, ["body", "steps"]),
    ({"guidance": "high"}, ["body", "guidance"]),
    ({"strength": 2}, ["body", "strength"]),
    ({"palette": ["red"] * 17}, ["body", "palette"]),
    ({"palette": "red"}, ["body", "palette"]),
    ({"loras": [{"name": "ink"}] * 9}, ["body", "loras"]),
    ({"loras": [{"name": "../etc/passwd"}]}, ["body", "loras", 0, "name"]),
    ({"loras": [{"name": "ink", "weight": 5}]}, ["body", "loras", 0, "weight"]),
    ({"loras": [{"name": "ink", "weight": "1"}]}, ["body", "loras", 0, "weight"]),
    ({"loras": [{"name": "ink", "extra": 1}]}, ["body", "loras", 0, "extra"]),
    ({"loras": [{"name": "ink"}, {"name": "INK"}]}, ["body", "loras", 1, "name"]),
    ({"loras": [{"name": "owner/repo"}]}, ["body", "loras", 0, "name"]),
    ({"loras": {"name": "ink"}}, ["body", "loras"]),
    ({"colour": "red"}, ["body", "colour"]),
])
def test_bad_bodies_name_the_field(keyed, change: dict, loc: list) -> None:  # type: ignore
    client, alice, _ = keyed
    assert _loc(client.post("/styles", json={**INK, "name": "fuzzed", **change},
                            headers=alice)) == loc


@pytest.mark.parametrize(("raw", "loc"), [
    ('{"name": "n", "prompt": "{prompt}", "guidance": NaN}', ["body", "guidance"]),
    ('{"name": "n", "prompt": "{prompt}", "steps": Infinity}', ["body", "steps"]),
    ('{"name": "\\ud800", "prompt": "{prompt}"}', ["body", "name"]),
    ('{"name": "n", "prompt": "{prompt} \\udfff"}', ["body", "prompt"]),
    ('{"name": "n", "prompt": "{prompt}", "loras": ' + "[" * 200 + "]" * 200 + "}",
     ["body"]),
    ("[1, 2]", ["body"]),
])
def test_hostile_json_is_a_422(keyed, raw: str, loc: list) -> None:  # type: ignore
    client, alice, _ = keyed
    response = client.post("/styles", content=raw.encode("utf-8", "surrogatepass"),
                           headers={**alice, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:len(loc)] == loc


def test_huge_bodies_are_refused(keyed) -> None:  # type: ignore[no-untyped-def]
    client, alice, _ = keyed
    huge = {**INK, "name": "huge", "description": "d" * 200_000}
    assert client.post("/styles", json=huge, headers=alice).status_code == 413
    many = {**INK, "name": "many", "loras": [{"name": f"l{i}"} for i in range(5000)]}
    assert client.post("/styles", json=many, headers=alice).status_code in (413, 422)
    assert client.get("/styles/" + "x" * 300, headers=alice).status_code == 422


def test_auth_off_shares_one_owner(tmp_path: Path) -> None:
    from workers.settings import Settings

    with TestClient(create_app(Settings(data_dir=tmp_path), start_worker=False)) as client:
        assert client.post("/styles", json=INK).status_code == 201
        assert client.get("/styles/ink wash").json()["source"] == "user"
        job = _submit(client, {"prompt": "a heron", "style": "Ink Wash",
                                         "model": "fractal"})
        # The engine skips a style's LoRAs (noted in the record): the job is accepted.
        assert job.status_code == 202, job.text
        assert job.json()["request"]["style"]["loras"] == [{"name": "ink", "weight": 0.8}]
        raw = json.dumps({"name": "x", "prompt": "{prompt}"})
        assert client.post("/styles", content=raw, headers={
            "Content-Type": "text/plain"}).status_code in (415, 422)


def test_styles_on_each_database(offline_on_each_database: TestClient) -> None:
    """The store and the jobs' style filter on SQLite and PostgreSQL (auth off: one owner)."""
    client = offline_on_each_database
    assert client.post("/styles", json=INK).status_code == 201
    assert client.post("/styles", json=dict(INK, name="ink WASH")).status_code == 409
    job = _submit(client, {"prompt": "a heron", "style": "INK WASH"})
    assert job.status_code == 202, job.text
    plain = _submit(client, {"prompt": "a heron", "style": "Watercolor"})
    for name, expected in (("Ink Wash", job), ("Watercolor", plain)):
        listed = client.get("/jobs", params={"style": name}).json()["jobs"]
        assert [found["id"] for found in listed] == [expected.json()["id"]]
    assert client.delete("/styles/INK wash").status_code == 204


def test_a_style_object_in_a_request(keyed) -> None:  # type: ignore[no-untyped-def]
    client, alice, _ = keyed
    inline = {"name": "Once", "prompt": "{prompt}, once", "effect": "pencil"}
    job = _submit(client, {"prompt": "a heron", "style": inline}, headers=alice)
    assert job.status_code == 202, job.text
    assert job.json()["request"]["style"] == inline
    bad = _submit(client, {"prompt": "a heron", "style": {"name": "x", "prompt": "none"}},
                  headers=alice)
    assert _loc(bad) == ["body", "style", "prompt"]
    bad = _submit(client, {"prompt": "a heron", "style": {
        "name": "x", "prompt": "{prompt}", "loras": [{"name": "a", "weight": 7}]}},
        headers=alice)
    assert _loc(bad) == ["body", "style", "loras", 0, "weight"]
    assert _loc(_submit(client, {"prompt": "a heron", "style": 5}, headers=alice))[:2] == \
        ["body", "style"]


def test_operator_styles_come_from_files(tmp_path: Path) -> None:
    from workers.settings import Settings

    file = tmp_path / "house.toml"
    file.write_text('["House ink"]\ndescription = "The studio\'s ink look"\n'
                    'prompt = "{prompt}, house ink"\neffect = "pencil"\n'
                    'loras = [{name = "ink", weight = 0.6}]\n')
    settings = Settings(data_dir=tmp_path / "data", styles_files=str(file))
    with TestClient(create_app(settings, start_worker=False)) as client:
        info = client.get("/styles/house INK").json()
        assert (info["source"], info["loras"]) == ("operator", [{"name": "ink", "weight": 0.6}])
        assert client.put("/styles/House ink", json=dict(INK, name="House ink")
                          ).status_code == 403
        assert client.post("/styles", json=dict(INK, name="HOUSE INK")).status_code == 409
        # Workers need not have the file: the job carries the style whole.
        job = _submit(client, {"prompt": "a heron", "style": "house ink"})
        assert job.status_code == 202, job.text
        assert job.json()["request"]["style"] == {
            "name": "House ink", "prompt": "{prompt}, house ink", "effect": "pencil",
            "description": "The studio's ink look", "loras": [{"name": "ink", "weight": 0.6}]}
    broken = tmp_path / "broken.toml"
    broken.write_text('[Broken]\nprompt = "no placeholder"\n')
    with pytest.raises(InvalidRequestError, match="Broken"):
        create_app(Settings(data_dir=tmp_path / "data", styles_files=f"{file},{broken}"),
                   start_worker=False)
