"""Shared helpers for the operator's tests (pure ones need no cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sglang_dev.emulator import EmulatorThread

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "sglangmodels.serving.sglang-operator.io.yaml"
LWS_STAND_IN = ROOT / "tests" / "data" / "leaderworkerset-crd-stand-in.yaml"


@pytest.fixture
def lws_emulator(tmp_path: Path) -> Iterator[EmulatorThread]:
    """The emulator (as the `emulator` fixture) with a stand-in LeaderWorkerSet CRD installed too."""
    with EmulatorThread(tmp_path / "emulator" / "kubeconfig", crds=[CRD_PATH, LWS_STAND_IN],
                        bookmark_interval=1.0) as k8s:
        yield k8s


@pytest.fixture(scope="session")
def crd() -> dict:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="session")
def crd_schema(crd) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
