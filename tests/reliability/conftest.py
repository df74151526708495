"""Fixtures for the reliability and security tests.

The helpers of the engine tests (tests/engine: FakeBackend harness, subprocess helpers), of the operator
tests (tests/operator/sgm_testlib.py) and of the packaging tests (the real helm) are reused, not copied:
their folders go on sys.path and their conftests' fixtures are re-exported here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parent.parent
for folder in ("engine", "operator", "packaging"):
    if str(TESTS / folder) not in sys.path:
        sys.path.insert(0, str(TESTS / folder))


def _conftest_of(folder: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{folder}_conftest", TESTS / folder / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_engine = _conftest_of("engine")
engine_cache = _engine.engine_cache
tiny_templater = _engine.tiny_templater
harness_factory = _engine.harness_factory
harness = _engine.harness
_packaging = _conftest_of("packaging")
run_helm = _packaging.run_helm
render = _packaging.render
