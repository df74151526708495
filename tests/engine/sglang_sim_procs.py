"""Helpers for tests whose upstream is SGLang 0.5.23's real frontend with the simulated scheduler
(`python -m sglang_dev.sglang_sim` under the side venv that `make sglang-sim` builds).

A missing side venv fails the test loudly (never a skip): `make test` builds it first.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sglang_dev.sglang_sim import MODULE, SIDE_VENV_PYTHON

# Startup of SGLang's frontend is 12-25 s on an idle 2-core machine (imports dominate); more when busy.
SIM_STARTUP_TIMEOUT_S = 240.0


def sim_python() -> str:
    if not os.access(SIDE_VENV_PYTHON, os.X_OK):
        pytest.fail(f"{SIDE_VENV_PYTHON} is missing: run `make sglang-sim` (scripts/sglang_venv.sh)")
    return str(SIDE_VENV_PYTHON)


def sim_engine_args() -> list[str]:
    """`sglang-engine serve` flags that make the engine launch the simulator through its normal path."""
    return ["--sglang-python", sim_python(), "--sglang-module", MODULE]


def server_info(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/server_info", timeout=10) as resp:
        return json.loads(resp.read())


def sim_state(base_url: str) -> dict[str, Any]:
    """The simulated scheduler's own report (counts of what it received), via SGLang's /server_info."""
    return server_info(base_url)["internal_states"][0]["simulated_scheduler"]


def scheduler_pids(pgid: int) -> list[int]:
    """SGLang's scheduler processes (the simulated one is titled `sglang::scheduler` by SGLang's code)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        pid = int(cmdline.parent.name)
        try:
            if cmdline.read_bytes().startswith(b"sglang::scheduler") and os.getpgid(pid) == pgid:
                pids.append(pid)
        except (OSError, ProcessLookupError):
            continue
    return pids
