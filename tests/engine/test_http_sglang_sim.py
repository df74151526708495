"""The whole chain against SGLang 0.5.23's real frontend with the simulated scheduler:
openai client -> `sglang-engine serve --backend sglang --sglang-python <side venv> --sglang-module
sglang_dev.sglang_sim` (the engine's real launch path) -> SGLang's /generate.

Proves at the HTTP level that seeds, adapters, usage and client-disconnect aborts reach SGLang the way
SGLang expects: SGLang itself refuses a `seed` sampling key (400) and ignores an unknown `lora_request`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from engine_procs import engine_env, free_port, openai_client, running_engine
from openai import OpenAI
from sglang_sim_procs import sim_engine_args, sim_state

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PROMPT = [{"role": "user", "content": "Tell me about adapters"}]


@dataclass
class Chain:
    proc: subprocess.Popen
    base: str
    sglang: str

    def openai(self) -> OpenAI:
        return openai_client(self.base)

    def sim(self) -> dict[str, Any]:
        return sim_state(self.sglang)


@pytest.fixture(scope="module")
def chain(engine_cache: Path) -> Iterator[Chain]:
    sglang_port = free_port()
    env = engine_env(engine_cache, SGLANG_SIM_TOKEN_DELAY_S="0.02")
    args = ["--model", "builtin:tiny", "--backend", "sglang", *sim_engine_args(),
            "--sglang-port", str(sglang_port), "--served-model-name", "tiny",
            "--lora-adapter", "l7=builtin:tiny-lora-7", "--startup-timeout", "240", "--shutdown-grace", "20"]
    with running_engine(args, env) as (proc, base):
        yield Chain(proc, base, f"http://127.0.0.1:{sglang_port}")


def test_streaming_through_sglang_with_usage_and_finish_reason(chain: Chain) -> None:
    chunks = list(chain.openai().chat.completions.create(
        model="tiny", messages=PROMPT, max_tokens=5, stream=True, stream_options={"include_usage": True}))
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    assert chunks[-1].usage.completion_tokens == 5 and chunks[-1].usage.prompt_tokens > 0
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_seeds_reach_sglang_as_sampling_seed(chain: Chain) -> None:
    client = chain.openai()

    def sampled(seed: int) -> str:
        return client.chat.completions.create(model="tiny", messages=PROMPT, max_tokens=8, temperature=1.0,
                                              seed=seed).choices[0].message.content

    assert sampled(11) == sampled(11)
    assert sampled(11) != sampled(12)


def test_adapter_selected_by_model_name_reaches_sglang_as_lora_path(chain: Chain) -> None:
    client = chain.openai()

    def greedy(model: str) -> str:
        return client.chat.completions.create(model=model, messages=PROMPT, max_tokens=8,
                                              temperature=0).choices[0].message.content

    assert greedy("tiny:l7") != greedy("tiny")  # an ignored adapter key would give the base model's text
    assert greedy("l7") == greedy("tiny:l7")
    models = {m.id: m for m in chain.openai().models.list().data}
    assert models["l7"].model_extra["parent"] == "tiny"


def test_gateway_worker_endpoints_are_sglangs_own(chain: Chain) -> None:
    """SGLang's gateway (SMG) reads /server_info, /model_info and /v1/loads: SGLang's answers pass through
    (so SMG treats the engine as SGLang); /loads, which SGLang lacks, is SGLang's /v1/loads too."""
    def both(path: str) -> tuple[Any, Any]:
        mine = requests.get(f"{chain.base}{path}", timeout=10)
        assert mine.status_code == 200, mine.text
        return mine.json(), requests.get(f"{chain.sglang}{path}", timeout=10).json()

    info, sglang_info = both("/server_info")
    assert info["version"] == sglang_info["version"] == "0.5.23" and info["served_model_name"] == "tiny"
    assert both("/model_info")[0] == both("/model_info")[1]
    loads = requests.get(f"{chain.base}/loads?model=tiny", timeout=10).json()
    sglang_loads = requests.get(f"{chain.sglang}/v1/loads", timeout=10).json()
    assert set(loads) == set(sglang_loads) and "loads" in loads  # the timestamps differ
    assert requests.get(f"{chain.base}/health", timeout=10).json() == {"ready": True}


def test_client_disconnect_aborts_the_sglang_request(chain: Chain) -> None:
    before = chain.sim()["counts"]["aborted"]
    body = {"model": "tiny", "messages": PROMPT, "max_tokens": 500, "stream": True}
    with requests.post(f"{chain.base}/v1/chat/completions", json=body, stream=True, timeout=30) as resp:
        lines = resp.iter_lines()
        for _ in range(3):  # role chunk and a token or two: the upstream stream is live
            next(lines)
    # The response is closed here, long before 500 tokens at 20 ms each.
    deadline = time.monotonic() + 5  # a generous liveness bound
    while chain.sim()["counts"]["aborted"] == before:
        assert time.monotonic() < deadline, "SGLang saw no abort after the client left"
        time.sleep(0.05)


def test_sigterm_lets_an_in_flight_stream_finish_and_refuses_new_requests(chain: Chain) -> None:
    """Runs last: it stops the engine."""
    body = {"model": "tiny", "messages": PROMPT, "max_tokens": 60, "stream": True}  # ~1.2 s at 20 ms/token
    with requests.post(f"{chain.base}/v1/chat/completions", json=body, stream=True, timeout=30) as resp:
        lines = (line for line in resp.iter_lines() if line)
        next(lines)
        chain.proc.send_signal(signal.SIGTERM)
        refused = requests.post(f"{chain.base}/v1/chat/completions", json=body, timeout=10)
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        rest = [line.decode() for line in lines]
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2][len("data: "):])["choices"][0]["finish_reason"] == "length"
    assert chain.proc.wait(timeout=60) == 0
