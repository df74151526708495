"""End to end through real processes: `sglang-engine serve --model builtin:tiny --backend transformers`.

The README's demo path (scripts/serve_tiny.py with the official `openai` client), non-streaming answers
with usage, adapters applied from the watched config file, and a graceful SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from engine_procs import READY_WITHIN_S, engine_env, get_json, openai_client, poll_until, running_engine
from openai import OpenAI

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    proc: subprocess.Popen
    base: str
    config: Path

    def openai(self) -> OpenAI:
        return openai_client(self.base)


@pytest.fixture(scope="module")
def served(engine_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = tmp_path_factory.mktemp("engine-config") / "config.json"
    config.write_text(json.dumps({"loraAdapters": [{"name": "l5", "source": "builtin:tiny-lora-5"}],
                                  "generation": {"maxNewTokens": 6}}))
    args = ["--model", "builtin:tiny", "--backend", "transformers", "--served-model-name", "tiny",
            "--config", str(config), "--shutdown-grace", "5"]
    with running_engine(args, engine_env(engine_cache)) as (proc, base):
        yield Served(proc, base, config)


def test_readme_demo_streams_a_chat_completion_with_the_openai_client(engine_cache: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "serve_tiny.py"), "--prompt", "Hello!", "--max-tokens", "12"],
        env=engine_env(engine_cache), capture_output=True, text=True, timeout=READY_WITHIN_S + 60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finish_reason=length" in result.stdout and "completion_tokens=12" in result.stdout
    assert "engine stopped (exit code 0)" in result.stderr


def test_non_stream_answer_with_usage_and_config_defaults(served: Served) -> None:
    resp = served.openai().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Say something"}], temperature=0)
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 6  # maxNewTokens from the config file
    assert resp.usage.prompt_tokens > 0 and resp.choices[0].message.content


def test_streaming_usage_matches_the_requested_tokens(served: Served) -> None:
    stream = served.openai().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Count"}], max_tokens=4, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == 4 and chunks[-1].choices == []


def test_adapters_from_the_config_file_change_greedy_output_and_can_be_removed(served: Served) -> None:
    client = served.openai()
    status = get_json(f"{served.base}/status")[1]
    assert status["adapters"] == [{"name": "l5", "source": "builtin:tiny-lora-5", "state": "loaded",
                                   "message": ""}]
    models = [(m.id, getattr(m, "parent", None)) for m in client.models.list().data]
    assert models == [("tiny", None), ("l5", "tiny")]

    def greedy(model: str) -> str:
        return client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Tell me a story"}], temperature=0,
            max_tokens=10).choices[0].message.content

    base = greedy("tiny")
    assert greedy("tiny:l5") != base and greedy("l5") == greedy("tiny:l5")
    assert greedy("tiny") == base  # the adapter does not leak into base requests

    served.config.write_text(json.dumps({"loraAdapters": [], "generation": {}}))
    poll_until(lambda: get_json(f"{served.base}/status")[1].get("adapters") == [], 15, served.proc)
    err = get_json(f"{served.base}/v1/models")[1]
    assert [m["id"] for m in err["data"]] == ["tiny"]


def test_sigterm_stops_gracefully(served: Served) -> None:
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=30) == 0


def _serve(args: list[str], cache: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = engine_env(cache, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "sglang_engine.cli", "serve", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_print_sglang_argv_prints_a_json_list_and_exits(engine_cache: Path) -> None:
    result = _serve(["--model", "org/model", "--tp-size", "2", "--print-sglang-argv"], engine_cache)
    assert result.returncode == 0, result.stderr
    argv = json.loads(result.stdout)
    assert isinstance(argv, list) and "--tp-size" in argv and argv[argv.index("--tp-size") + 1] == "2"
