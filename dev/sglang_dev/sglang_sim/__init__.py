"""SGLang 0.5.23's real HTTP server with only the GPU scheduler simulated (dev tooling; never in the engine).

`python -m sglang_dev.sglang_sim <any sglang.launch_server flags>` under the SGLang side venv's python
(`make sglang-sim` builds .cache/sglang-venv) does what `python -m sglang.launch_server` does: SGLang's own
`prepare_server_args` parses the flags (a bad flag exits 2 with SGLang's message), then SGLang's
`launch_server` runs its FastAPI server, TokenizerManager and DetokenizerManager, with
`run_scheduler_process_func` set to the simulated scheduler (`scheduler.py`: handshake and generation loop;
`control.py`: control requests; token sources in `tokens.py`).

Knobs (environment): SGLANG_SIM_TOKENS=model|synthetic, SGLANG_SIM_TTFT_S, SGLANG_SIM_PREFILL_S_PER_TOKEN,
SGLANG_SIM_TOKEN_DELAY_S (see scheduler.SimConfig); SGLANG_SIM_JOIN_TIMEOUT_S and SGLANG_SIM_CUT_OFF_RANKS for
multi-node launches (`--nnodes`: the group's rendezvous at `--dist-init-addr`, see group.py). Per request, a
prompt holding `[[sim-reply]]TEXT[[/sim-reply]]` (the last such span of the decoded prompt; see `scripted`) is
answered with exactly TEXT's tokens, then the end-of-sequence token: how tests make SGLang's own tool-call,
JSON and stop-string handling see a known output. Logprobs are returned when asked: the model's own
log-softmax for the model source, placeholders otherwise (0.0 for the token produced, PLACEHOLDER_LOGPROB for
the alternatives). It says it is simulated in its logs at start and in GET /server_info
(`internal_states[0].simulated_scheduler`, which also counts the generations it received).

Only this package's `__init__` is importable without SGLang (it holds constants for the project's side).
"""

from __future__ import annotations

import os
from pathlib import Path

MODULE = "sglang_dev.sglang_sim"
SIMULATED_BANNER = ("SIMULATED SCHEDULER (sglang_dev.sglang_sim): SGLang's real HTTP frontend, tokenizer and "
                    "detokenizer; tokens come from a simulated scheduler process, not SGLang's GPU scheduler")
SCRIPT_OPEN = "[[sim-reply]]"
SCRIPT_CLOSE = "[[/sim-reply]]"
PLACEHOLDER_LOGPROB = -30.0


def scripted(text: str) -> str:
    """A prompt fragment that makes the simulated scheduler answer exactly `text`."""
    return f"{SCRIPT_OPEN}{text}{SCRIPT_CLOSE}"


REPO_ROOT = Path(__file__).resolve().parents[3]
# Built by scripts/sglang_venv.sh (`make sglang-sim`).
SIDE_VENV_PYTHON = REPO_ROOT / ".cache" / "sglang-venv" / "bin" / "python"


def engine_env(python: Path = SIDE_VENV_PYTHON) -> dict[str, str]:
    """The environment that makes an engine's SGLang backend this simulator (the local cluster's node gives it
    to its pods); empty when the side venv is not built. (The engine is imported here, not at the top: the
    side venv, which imports this package, has SGLang but not the engine.)"""
    from sglang_engine.settings import SGLANG_MODULE_ENV, SGLANG_PYTHON_ENV

    if not os.access(python, os.X_OK):
        return {}
    return {SGLANG_PYTHON_ENV: str(python), SGLANG_MODULE_ENV: MODULE}
