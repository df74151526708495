"""The images' hashed lock files (requirements/*.txt, scripts/lock_images.py) agree with pyproject.toml and
the Dockerfile installs from them with --require-hashes. Offline: regenerating them needs PyPI."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging_tools import ROOT

LOCKS = ROOT / "requirements"
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def entries(name: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of a pip-compile --generate-hashes file."""
    text = (LOCKS / name).read_text()
    out: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[^\s#])", text):
        match = re.match(r"([A-Za-z0-9][\w.-]*)==([\w.!+-]+)", block)
        if match:
            hashes = re.findall(r"--hash=sha256:(\w{64})", block)
            out[match.group(1).lower().replace("_", "-")] = (match.group(2), hashes)
    return out


def _norm(req: str) -> tuple[str, str | None]:
    name = re.match(r"[\w.-]+", req).group(0).lower().replace("_", "-")  # type: ignore[union-attr]
    pin = re.search(r"==([\w.!+-]+)", req)
    return name, pin.group(1) if pin else None


@pytest.mark.parametrize("name", ["build.txt", "operator-image.txt", "engine-image.txt"])
def test_every_locked_package_is_pinned_with_hashes_and_torch_was_pinned(name):
    locked = entries(name)
    assert locked, name
    for package, (version, hashes) in locked.items():
        assert hashes, f"{name}: {package}=={version} has no --hash"
    makefile_torch = re.search(r"torch==([\w.]+)", (ROOT / "Makefile").read_text()).group(1)  # type: ignore
    assert f"torch pinned to {makefile_torch} while resolving" in (LOCKS / name).read_text()


def test_the_operator_lock_is_pyprojects_operator_closure():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = entries("operator-image.txt")
    for req in [*pyproject["dependencies"], *pyproject["optional-dependencies"]["operator"]]:
        name, pin = _norm(req)
        assert name in locked, f"{name} missing from the operator lock"
        assert pin is None or locked[name][0] == pin, (name, pin, locked[name][0])
    engine_only = {_norm(r)[0] for r in pyproject["optional-dependencies"]["engine"]} | {"torch"}
    assert not engine_only & set(locked), "the operator image must not get the engine's packages"


def test_the_engine_lock_holds_exactly_what_the_engine_stage_adds():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_norm(line) for line in (LOCKS / "engine-image.in").read_text().splitlines()
                  if line.strip() and not line.startswith("#"))
    locked = entries("engine-image.txt")
    assert {k: v[0] for k, v in locked.items()} == wanted
    peft = dict(_norm(r) for r in pyproject["optional-dependencies"]["engine"])["peft"]
    assert wanted["peft"] == peft, "the image's peft is pyproject's"


def test_the_dockerfile_installs_only_from_the_locks():
    runs = re.findall(r"^RUN ((?:.*\\\n)*.*)$", DOCKERFILE, re.MULTILINE)
    installs = [cmd for run in runs for cmd in run.split("&&") if re.search(r"pip (install|wheel)", cmd)]
    assert installs
    for cmd in installs:
        flat = " ".join(cmd.replace("\\\n", " ").split())
        from_lock = "--require-hashes -r /tmp/" in flat
        wheel = re.search(r'"/wheels/sglang_operator-\S+\.whl"', flat)
        only_the_project = "--no-deps" in flat and wheel and not re.search(r"\s[a-z][\w.-]*==", flat)
        builds_the_project = "pip wheel" in flat and "--no-build-isolation" in flat and "--no-deps" in flat
        assert from_lock or only_the_project or builds_the_project, flat
    for lock in ("build.txt", "operator-image.txt", "engine-image.txt"):
        assert f"COPY requirements/{lock} " in DOCKERFILE, lock
    assert "!requirements/*.txt" in (ROOT / ".dockerignore").read_text()
