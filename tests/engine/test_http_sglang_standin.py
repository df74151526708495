"""The whole chain against the SGLang stand-in (a test double speaking SGLang's wire protocol):
openai client -> `sglang-engine serve --backend sglang` (real launch path) -> stand-in /generate.

Proves at the HTTP level that seeds, adapters, usage and client-disconnect aborts reach SGLang the way
SGLang expects (`sampling_seed`, `lora_path` = adapter name, `/abort_request` or a closed upstream).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from engine_procs import engine_env, free_port, openai_client, running_engine
from openai import OpenAI

pytestmark = pytest.mark.e2e

STANDIN_DIR = Path(__file__).resolve().parents[1] / "standin"
PROMPT = [{"role": "user", "content": "Tell me about adapters"}]


@dataclass
class Chain:
    proc: subprocess.Popen
    base: str
    standin: str

    def openai(self) -> OpenAI:
        return openai_client(self.base)

    def received(self) -> dict:
        with urllib.request.urlopen(f"{self.standin}/_standin/requests", timeout=5) as resp:
            return json.loads(resp.read())


@pytest.fixture(scope="module")
def chain(engine_cache: Path) -> Iterator[Chain]:
    sglang_port = free_port()
    env = engine_env(engine_cache, SGLANG_STANDIN_TOKEN_DELAY="0.02", PYTHONPATH=os.pathsep.join(
        filter(None, [str(STANDIN_DIR), os.environ.get("PYTHONPATH")])))
    args = ["--model", "builtin:tiny", "--backend", "sglang", "--sglang-module", "sglang_standin",
            "--sglang-port", str(sglang_port), "--served-model-name", "tiny",
            "--lora-adapter", "l7=builtin:tiny-lora-7", "--startup-timeout", "120", "--shutdown-grace", "5"]
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
    params = chain.received()["generate"][-1]["sampling_params"]
    assert params["sampling_seed"] == 12 and "seed" not in params


def test_adapter_selected_by_model_name_reaches_sglang_as_lora_path(chain: Chain) -> None:
    client = chain.openai()

    def greedy(model: str) -> str:
        return client.chat.completions.create(model=model, messages=PROMPT, max_tokens=8,
                                              temperature=0).choices[0].message.content

    assert greedy("tiny:l7") != greedy("tiny")
    bodies = chain.received()["generate"]
    assert bodies[-2]["lora_path"] == "l7" and bodies[-1].get("lora_path") is None
    assert not any("lora_request" in b for b in bodies)


def test_client_disconnect_aborts_the_sglang_request(chain: Chain) -> None:
    before = len(chain.received()["aborts"])
    body = {"model": "tiny", "messages": PROMPT, "max_tokens": 500, "stream": True}
    with requests.post(f"{chain.base}/v1/chat/completions", json=body, stream=True, timeout=30) as resp:
        lines = resp.iter_lines()
        for _ in range(3):  # role chunk and a token or two: the upstream stream is live
            next(lines)
    # The response is closed here, long before 500 tokens at 20 ms each.
    deadline = time.monotonic() + 5  # a generous liveness bound
    while len(chain.received()["aborts"]) == before:
        assert time.monotonic() < deadline, "the stand-in saw no abort after the client left"
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
    assert chain.proc.wait(timeout=30) == 0
