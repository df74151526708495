"""Running the project's CLI tools (kubectl, helm from .tools/bin) from tests; shared by tests/conftest.py
and tests/real/conftest.py."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"
CLI_TIMEOUT_S = 60


def tool_path(name: str) -> Path:
    path = TOOLS_BIN / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run `make install` (or `python scripts/install_tools.py`)")
    return path


def cli_runner(command: list[str], env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run(*args, input=None, timeout=60)`: run the command with extra args; never raises on exit code."""

    def run(
        *args: str, input: str | None = None, timeout: float = CLI_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )

    return run
