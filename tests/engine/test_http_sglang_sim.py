"""The whole chain against SGLang 0.5.23's real frontend with the simulated scheduler:
openai client -> `sglang-engine serve --backend sglang --sglang-python <side venv> --sglang-module
sglang_dev.sglang_sim --tool-call-parser qwen25` (the engine's real launch path) -> SGLang's OpenAI server.

Proves with the `openai` client that SGLang's OpenAI surface reaches the client through the engine: tools
(auto, required, named; streamed deltas) parsed by SGLang's own qwen25 parser, JSON schema, logprobs, n=2,
the developer role, a LoRA adapter by name, stop strings, usage, /v1/completions, SGLang's own 400s; and that
seeds and client-disconnect aborts reach SGLang. The simulated scheduler answers a prompt holding
`scripted(TEXT)` with exactly TEXT (sglang_dev.sglang_sim), so SGLang's parsers see a known output; it does
not enforce grammars (response_format, tool_choice=required), which only the GPU scheduler does.
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
from openai import BadRequestError, OpenAI
from sglang_dev.sglang_sim import scripted
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
            "--lora-adapter", "l7=builtin:tiny-lora-7", "--startup-timeout", "240", "--shutdown-grace", "20",
            "--tool-call-parser", "qwen25"]
    with running_engine(args, env) as (proc, base):
        yield Chain(proc, base, f"http://127.0.0.1:{sglang_port}")


def test_streaming_through_sglang_with_usage_and_finish_reason(chain: Chain) -> None:
    chunks = list(chain.openai().chat.completions.create(
        model="tiny", messages=PROMPT, max_tokens=5, stream=True, stream_options={"include_usage": True}))
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    assert chunks[-1].usage.completion_tokens == 5 and chunks[-1].usage.prompt_tokens > 0
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_status_says_the_scheduler_is_simulated(chain: Chain) -> None:
    status = requests.get(f"{chain.base}/status", timeout=10).json()
    assert status["backend"] == "sglang" and status["ready"]
    assert any("scheduler is SIMULATED" in w for w in status["warnings"]), status


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


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_tools_auto_answer_with_tool_calls(chain: Chain) -> None:
    reply = chain.openai().chat.completions.create(model="tiny", messages=ask(scripted(CALL)),
                                                   tools=[WEATHER])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and reply.model == "tiny"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}


def test_tool_call_deltas_stream(chain: Chain) -> None:
    chunks = list(chain.openai().chat.completions.create(
        model="tiny", messages=ask(scripted(CALL)), tools=[WEATHER], tool_choice="auto", stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize("tool_choice", ["required", NAMED])
def test_required_and_named_tool_choice(chain: Chain, tool_choice: Any) -> None:
    # qwen25's detector owns its format: SGLang constrains (on a GPU) and parses required/named calls in it.
    text = scripted(CALL.replace("Paris", "Oslo"))
    reply = chain.openai().chat.completions.create(model="tiny", messages=ask(text), tools=[WEATHER],
                                                   tool_choice=tool_choice)
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}


def test_a_named_tool_that_is_not_declared_is_sglangs_400(chain: Chain) -> None:
    with pytest.raises(BadRequestError, match="not found in tools list"):
        chain.openai().chat.completions.create(
            model="tiny", messages=ask("hi"), tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}})


def test_json_schema_response_format(chain: Chain) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    reply = chain.openai().chat.completions.create(
        model="tiny", messages=ask(scripted('{"city": "Rome"}')),
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}})
    assert json.loads(reply.choices[0].message.content) == {"city": "Rome"}


def test_logprobs_and_top_logprobs(chain: Chain) -> None:
    reply = chain.openai().chat.completions.create(model="tiny", messages=PROMPT, max_tokens=4, temperature=0,
                                                   logprobs=True, top_logprobs=2)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens == 4
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 2
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob)  # greedy: the likeliest token


def test_n_2_gives_two_choices(chain: Chain) -> None:
    reply = chain.openai().chat.completions.create(model="tiny", messages=PROMPT, max_tokens=3, n=2,
                                                   temperature=1.0)
    assert sorted(c.index for c in reply.choices) == [0, 1]
    assert reply.usage.completion_tokens == 6


def test_the_developer_role_is_a_system_message(chain: Chain) -> None:
    messages = [{"role": "developer", "content": "Answer briefly."}, *ask(scripted("Fine."))]
    reply = chain.openai().chat.completions.create(model="tiny", messages=messages)
    assert reply.choices[0].message.content == "Fine." and reply.choices[0].finish_reason == "stop"


def test_stop_strings_end_the_answer(chain: Chain) -> None:
    reply = chain.openai().chat.completions.create(model="tiny", messages=ask(scripted("Hello STOP world")),
                                                   stop=["STOP"])
    assert reply.choices[0].message.content == "Hello " and reply.choices[0].finish_reason == "stop"


def test_usage_only_when_asked_and_the_model_name_the_client_used(chain: Chain) -> None:
    client = chain.openai()
    plain = list(client.chat.completions.create(model="l7", messages=PROMPT, max_tokens=3, stream=True))
    assert all(c.usage is None and c.choices for c in plain) and {c.model for c in plain} == {"l7"}
    asked = list(client.chat.completions.create(model="builtin:tiny", messages=PROMPT, max_tokens=3,
                                                stream=True, stream_options={"include_usage": True}))
    assert asked[-1].choices == [] and asked[-1].usage.completion_tokens == 3
    assert {c.model for c in asked} == {"builtin:tiny"}  # SGLang was sent its own name: renamed back
    metrics = requests.get(f"{chain.base}/metrics", timeout=10).text
    assert 'sglang_engine_completion_tokens_total{adapter="l7",model="tiny"}' in metrics


def test_completions_endpoint(chain: Chain) -> None:
    reply = chain.openai().completions.create(model="tiny", prompt="Once upon", max_tokens=4)
    assert reply.usage.completion_tokens == 4 and reply.choices[0].text


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
