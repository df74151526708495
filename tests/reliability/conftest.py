"""Fixtures for the reliability and security tests.

The engine tests' helpers (tests/engine: FakeBackend harness, subprocess helpers) and the operator tests'
helpers (tests/operator/sgm_testlib.py) are reused, not copied: their folders go on sys.path and the engine
conftest's fixtures are re-exported here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
STANDIN_DIR = TESTS / "standin"
for folder in (TESTS / "engine", TESTS / "operator", STANDIN_DIR):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

_spec = importlib.util.spec_from_file_location("engine_conftest", TESTS / "engine" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_engine_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_engine_conftest)

engine_cache = _engine_conftest.engine_cache
tiny_templater = _engine_conftest.tiny_templater
harness_factory = _engine_conftest.harness_factory
harness = _engine_conftest.harness
