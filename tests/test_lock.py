"""requirements/lock.txt, the constraints file both README set-up commands install through:
it pins every requirement pyproject declares, within pyproject's bounds, pulls no CUDA build of
torch, and leaves the project itself out (scripts/lock writes it; see README "Dependencies")."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
LOCK_OPTION = "-c requirements/lock.txt"


def locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in LOCK.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"not a plain pin: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"{name} pinned twice"
        pins[name] = Version(match[2])
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return [Requirement(text) for text in requirements]


def test_every_declared_requirement_is_pinned_within_its_bounds() -> None:
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in the lock: run scripts/lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"the lock has {name}=={pins[name]}, outside pyproject's {requirement}: "
            "run scripts/lock")


def test_the_lock_pins_the_cpu_torch_and_not_the_project() -> None:
    pins = locked()
    # torch 2.13.0 is the CPU build on our machines; a CUDA build brings nvidia-* and triton.
    assert pins["torch"] == Version("2.13.0")
    cuda = [name for name in pins if name.startswith(("nvidia-", "cuda-")) or name == "triton"]
    assert not cuda, f"CUDA packages in the lock: {cuda}"
    assert "spec2fractal" not in pins
    assert "pip" not in pins


def test_both_set_up_commands_install_through_the_lock() -> None:
    readme = (ROOT / "README.md").read_text()
    set_up = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    assert f"pip install {LOCK_OPTION} torch==2.13.0 ." in set_up
    assert "scripts/test" in set_up
    script = (ROOT / "scripts" / "test").read_text()
    assert "requirements/lock.txt" in script and '-c "$lock"' in script
