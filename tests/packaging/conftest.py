"""Fixtures for the packaging tests: the real helm binary (from scripts/install_tools.py), run offline."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
import yaml
from packaging_tools import CHART, HELM_TIMEOUT_S, VARIANTS, isolated_env, tool


@pytest.fixture(scope="session")
def run_helm(tmp_path_factory) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real helm with isolated caches; returns the completed process (never raises on exit code)."""
    helm = tool("helm")
    env = isolated_env(tmp_path_factory.mktemp("helm-home"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(helm), *args], capture_output=True, text=True, env=env,
                              timeout=HELM_TIMEOUT_S, check=False)

    return run


@pytest.fixture(scope="session")
def render(run_helm) -> Callable[[str], list[dict]]:
    """`helm template` one of VARIANTS (cached per session) into a list of manifests."""
    cache: dict[str, list[dict]] = {}

    def rendered(variant: str) -> list[dict]:
        if variant not in cache:
            out = run_helm("template", "rel", str(CHART), "--namespace", "sglang-system", *VARIANTS[variant])
            assert out.returncode == 0, out.stderr
            cache[variant] = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
        return cache[variant]

    return rendered
