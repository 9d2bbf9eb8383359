"""``--lora NAME:WEIGHT`` and the ``loras`` listing, as a user runs them (issue #21)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fractal.cli import parse_lora_options
from fractal.errors import InvalidRequestError
from tests.api.conftest import served  # noqa: F401  (the `spec2fractal serve` fixture)
from tests.api.test_loras_api import lora_bytes, short_hash
from tests.test_cli import run


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    made = tmp_path / "loras"
    made.mkdir()
    (made / "ink.safetensors").write_bytes(lora_bytes(tmp_path))
    return made


def test_lora_options_parse() -> None:
    assert parse_lora_options(["ink:0.8", "paper", "owner/repo:-1"]) == [
        {"name": "ink", "weight": 0.8}, {"name": "paper", "weight": 1.0},
        {"name": "owner/repo", "weight": -1.0}]
    assert parse_lora_options(None) is None
    with pytest.raises(InvalidRequestError, match="--lora"):
        parse_lora_options(["ink:strong"])


def test_loras_lists_a_folder(folder: Path) -> None:
    result = run("loras", "--lora-dir", str(folder))
    assert result.returncode == 0, result.stderr
    data = (folder / "ink.safetensors").read_bytes()
    assert result.stdout.split()[:3] == ["ink", "sd15", "diffusers"]
    assert short_hash(data) in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--lora", "ink:0.5"], "`loras[0].name`"),  # the built-in engine takes none
    (["--lora", "ink:lots"], "`--lora`"),
    (["--lora", "ink:9"], "`loras[0].weight`"),
    (["--lora", "../up"], "`loras[0].name`"),
])
def test_bad_loras_are_one_clear_line(folder: Path, tmp_path: Path, args: list[str],
                                      message: str) -> None:
    result = run("generate", "a heron", "-o", str(tmp_path / "x.png"), "--size", "64x48",
                 "--lora-dir", str(folder), *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "x.png").exists()


def test_batch_applies_lora_to_items_locally_and_through_a_server(
        folder: Path, tmp_path: Path, served: str) -> None:  # noqa: F811
    from tests.test_batch_cli import manifest
    from tests.test_batch_cli import run as batch

    (tmp_path / "items.jsonl").write_text('{"prompt": "a lake"}\n'
                                          '{"prompt": "a fog", "loras": []}\n')
    # The built-in engine takes no LoRA: the item that names none gets --lora, and fails
    # naming it; the one that gives its own (none) renders.
    for where, extra in (("local", ["--lora-dir", str(folder)]),
                         ("remote", ["--server", served])):
        result = batch("items.jsonl", "-o", where, "--size", "64x48", "--lora", "ink:0.5",
                       *extra, cwd=tmp_path)
        assert "1 succeeded, 1 failed" in result.stdout, (where, result.stdout, result.stderr)
        failed = [entry for entry in manifest(tmp_path / where) if entry["status"] == "failed"]
        # Named as the library names it locally (loras[0].name), as the API's loc remotely.
        assert len(failed) == 1 and failed[0]["error"].startswith(
            ("`loras[0].name`", "`loras.0.name`")), (where, failed)
