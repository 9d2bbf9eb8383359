"""The README's "Clients" snippets run as written against a real server."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from tests.client.conftest import Server

README = Path(__file__).resolve().parents[2] / "README.md"
README_SERVER = "http://localhost:8000"


def _python_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Clients"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def _block(marker: str) -> str:
    found = [block for block in _python_blocks() if marker in block]
    assert len(found) == 1, f"one README Clients block with {marker!r}"
    return found[0]


def test_the_python_client_snippet_runs(service: Server, tmp_path: Path, monkeypatch,
                                        capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPEC2FRACTAL_API_KEY", service.key)
    code = _block("Spec2FractalClient(").replace(README_SERVER, service.url)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.count("(512, 512) A tropical island") == 2
    assert "step " in out
    assert len(list((tmp_path / "renders").glob("*.png"))) == 2


def test_the_openai_snippet_runs(service: Server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (96, 64), (20, 120, 60)).save("photo.png")
    code = _block("from openai import").replace(README_SERVER, service.url)
    scope: dict = {"KEY": service.key}
    exec(compile(code, "README.md", "exec"), scope)
    assert len(scope["answer"].data) == 2 and scope["answer"].data[0].b64_json
    assert scope["edited"].data[0].url
