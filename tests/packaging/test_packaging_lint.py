"""The Dockerfile and the hand-written YAML: linters, and the pins that must agree with the code."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging_tools import ROOT
from sglang_engine.protocol import SGLANG_VERSION

DOCKERFILE = ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent


def _arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"Dockerfile has no `ARG {name}=...`"
    return match.group(1)


def test_hadolint_reports_nothing():
    out = subprocess.run([str(VENV_BIN / "hadolint"), "--no-color", str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


def test_yamllint_passes_on_charts_crds_and_examples():
    out = subprocess.run([str(VENV_BIN / "yamllint"), "--strict", "-c", str(ROOT / ".yamllint.yaml"),
                          "charts", "crds", "examples"],
                         capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_test_file_the_dockerfile_cites_exists():
    cited = re.findall(r"tests/[\w/]+\.py", DOCKERFILE.read_text())
    assert cited, "the Dockerfile names the test that checks its pins"
    assert [c for c in cited if not (ROOT / c).is_file()] == []


def test_dockerfile_has_the_two_targets_non_root():
    text = DOCKERFILE.read_text()
    stages = {alias: base for base, alias in re.findall(r"^FROM (\S+) AS (\w+)$", text, re.MULTILINE)}
    assert stages["operator"] == "${PYTHON_IMAGE}" and stages["engine"] == "${SGLANG_IMAGE}"
    for target in ("operator", "engine"):
        body = text.split(f" AS {target}\n", 1)[1].split("\nFROM ", 1)[0]
        user = re.findall(r"^USER (\d+):(\d+)$", body, re.MULTILINE)
        assert user and int(user[-1][0]) != 0, f"{target}: no numeric non-root USER"
    assert "EXPOSE 8000" in text.split(" AS engine\n", 1)[1]


def test_pins_agree_with_the_project():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert _arg("VERSION") == pyproject["project"]["version"]
    # The engine's base image is the SGLang release the engine's wire facts were read from.
    assert _arg("SGLANG_IMAGE") == f"lmsysorg/sglang:v{SGLANG_VERSION}"
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", _arg("PYTHON_IMAGE")), "pin the exact Python image"
    engine_stage = DOCKERFILE.read_text().split(" AS engine\n", 1)[1]
    assert "requirements/engine-image.txt" in engine_stage  # peft's pin: tests/packaging/test_image_locks.py
    # SGLang's image brings its own torch (and the rest): the engine must never reinstall it.
    assert "--no-deps" in engine_stage and "torch" not in re.sub(r"#.*", "", engine_stage)


def _engine_image_env() -> dict[str, str]:
    stage = DOCKERFILE.read_text().split(" AS engine\n", 1)[1]
    env: dict[str, str] = {}
    for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", stage, re.MULTILINE):
        env.update(re.findall(r"(\w+)=(\S+)", block))
    return env


def test_engine_image_caches_are_writable_in_the_operators_pods():
    """The pod's root filesystem is read-only: every path the image writes to must be a writable mount."""
    rendered = subprocess.run([sys.executable, "-m", "sglang_operator.cli", "render", "-f",
                               str(ROOT / "examples" / "tiny.yaml")],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    (deploy,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    image_env = _engine_image_env()
    for name in ("HOME", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "SGLANG_ENGINE_CACHE", "HF_HOME"):
        assert any(image_env[name] == m or image_env[name].startswith(m + "/") for m in writable), name
    pod_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    for name in ("HF_HOME", "XDG_CACHE_HOME", "SGLANG_ENGINE_CACHE"):
        assert image_env[name] == pod_env[name], name


def test_operator_runs_with_only_the_operator_image_dependencies():
    """The operator image has the project (both packages) with the `[operator]` extras only: no operator
    module may import what only the engine's extras (or torch) provide."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    engine_only = [req.split("==")[0] for req in pyproject["project"]["optional-dependencies"]["engine"]]
    script = f"""
import importlib, pkgutil, sys
import sglang_operator
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {[*engine_only, "torch"]!r}:
            raise ImportError("not in the operator image: " + name)
sys.meta_path.insert(0, Refuse())
for mod in pkgutil.walk_packages(sglang_operator.__path__, "sglang_operator."):
    if not mod.name.startswith("sglang_dev"):  # dev tools are not part of the image's job
        importlib.import_module(mod.name)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
