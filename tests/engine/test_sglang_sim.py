"""The simulator (dev/sglang_dev/sglang_sim), launched directly as SGLang is launched, and its side venv.

One SGLang (real frontend, simulated scheduler, synthetic tokens, a simulated prefill cost) serves the
module; its finish reasons, prefix cache, adapters and control requests are checked against SGLang's own
HTTP endpoints. The engine's use of it: test_sglang_backend.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from engine_procs import free_port
from sglang_dev.sglang_sim import MODULE
from sglang_engine.tiny import ensure_tiny_model, resolve_builtin_adapter
from sglang_sim_procs import SIM_STARTUP_TIMEOUT_S, sim_python, sim_state

pytestmark = pytest.mark.timeout(300)
PREFILL_S_PER_TOKEN = 0.004
PROMPT = [1, 40, 41, 42, 43, 44]


class Sim:
    def __init__(self, base: str, cache: Path) -> None:
        self.base, self.cache = base, cache

    def generate(self, **body: Any) -> dict[str, Any]:
        body.setdefault("input_ids", PROMPT)
        resp = requests.post(f"{self.base}/generate", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> requests.Response:
        return requests.post(f"{self.base}{path}", json=body or {}, timeout=30)


def launch(cache: Path, port: int, *flags: str, **env: str) -> subprocess.Popen[bytes]:
    argv = [sim_python(), "-m", MODULE, "--model-path", str(ensure_tiny_model(cache)),
            "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), *flags]
    return subprocess.Popen(argv, env={**os.environ, **env}, start_new_session=True)


@pytest.fixture(scope="module")
def sim(engine_cache: Path) -> Iterator[Sim]:
    port = free_port()
    proc = launch(engine_cache, port, "--enable-lora", "--max-lora-rank", "16", "--lora-target-modules",
                  "all", "--skip-server-warmup", SGLANG_SIM_TOKENS="synthetic",
                  SGLANG_SIM_PREFILL_S_PER_TOKEN=str(PREFILL_S_PER_TOKEN))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SIM_STARTUP_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"the simulator exited with {proc.returncode}"
            assert time.monotonic() < deadline, "the simulator did not become ready"
            try:
                if requests.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        yield Sim(base, engine_cache)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_a_flag_sglang_rejects_exits_2_with_sglangs_message(engine_cache: Path) -> None:
    proc = launch(engine_cache, free_port(), "--lora-backend", "flashinfer")
    try:
        assert proc.wait(120) == 2
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_the_side_venv_has_no_stub_modules() -> None:
    """triton (brought by torch) and torchvision 0.28.0 (built for torch 2.13.0) are the real packages and
    import on CPU; torch is the project's 2.13.0. A stub would show as a module without its dist-info."""
    check = ("import importlib.metadata as m, torch, triton, torchvision.transforms, sglang;"
             "print(torch.__version__, m.version('triton'), m.version('torchvision'), m.version('sglang'))")
    out = subprocess.run([sim_python(), "-c", check], capture_output=True, text=True, timeout=120, check=True)
    torch_version, triton, torchvision, sglang = out.stdout.split()
    assert torch_version.split("+")[0] == "2.13.0" and torchvision == "0.28.0" and sglang == "0.5.23"
    assert triton


def test_server_info_says_the_scheduler_is_simulated(sim: Sim) -> None:
    state = sim_state(sim.base)
    assert "SIMULATED SCHEDULER" in state["note"] and state["tokens"] == "synthetic"


def test_finish_reasons_length_stop_token_and_stop_string(sim: Sim) -> None:
    greedy = {"temperature": 0, "max_new_tokens": 8}
    full = sim.generate(sampling_params=greedy)
    assert full["meta_info"]["finish_reason"] == {"type": "length", "length": 8}
    ids = full["output_ids"]
    stop_id = ids[3]
    stopped = sim.generate(sampling_params={**greedy, "stop_token_ids": [stop_id]})
    assert stopped["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop_id}
    assert stopped["meta_info"]["completion_tokens"] == ids.index(stop_id) + 1  # the stop token counts
    stop_text = full["text"][len(full["text"]) // 2:][:3]
    by_string = sim.generate(sampling_params={**greedy, "stop": [stop_text]})
    assert by_string["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop_text}
    assert by_string["text"] == full["text"][:full["text"].index(stop_text)]


def test_abort_by_rid_ends_a_request_with_an_abort_finish(sim: Sim) -> None:
    import threading

    # 1500 fresh prompt tokens: about 6 s of simulated prefill, so the abort lands while it runs.
    body = {"input_ids": [1, *range(100, 600)] * 3, "rid": "to-abort",
            "sampling_params": {"max_new_tokens": 4}}
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(
        requests.post(f"{sim.base}/generate", json=body, timeout=60).json()))
    worker.start()
    deadline = time.monotonic() + 10
    while sim_state(sim.base)["running"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    began = time.monotonic()
    assert sim.post("/abort_request", {"rid": "to-abort"}).status_code == 200
    worker.join(30)
    assert result["meta_info"]["finish_reason"]["type"] == "abort", result
    assert time.monotonic() - began < 3


def test_the_prefix_cache_skips_prefill_time_and_reports_cached_tokens(sim: Sim) -> None:
    prompt = [1, *range(300, 500)]  # 201 tokens: about 0.8 s of simulated prefill
    sp = {"max_new_tokens": 1}
    began = time.monotonic()
    cold = sim.generate(input_ids=prompt, sampling_params=sp)
    cold_s = time.monotonic() - began
    began = time.monotonic()
    warm = sim.generate(input_ids=prompt, sampling_params=sp)
    warm_s = time.monotonic() - began
    assert cold["meta_info"]["cached_tokens"] <= 1 and warm["meta_info"]["cached_tokens"] == len(prompt) - 1
    assert cold_s >= 200 * PREFILL_S_PER_TOKEN and warm_s < cold_s / 2
    assert sim.post("/flush_cache").status_code == 200
    again = sim.generate(input_ids=prompt, sampling_params=sp)
    assert again["meta_info"]["cached_tokens"] <= 1


def test_adapters_change_the_synthetic_output(sim: Sim) -> None:
    path = resolve_builtin_adapter("builtin:tiny-lora-3", sim.cache)
    loaded = sim.post("/load_lora_adapter", {"lora_name": "three", "lora_path": str(path)})
    assert loaded.status_code == 200 and loaded.json()["loaded_adapters"] == {"three": str(path)}
    greedy = {"temperature": 0, "max_new_tokens": 8}
    assert sim.generate(lora_path="three", sampling_params=greedy)["text"] != \
        sim.generate(sampling_params=greedy)["text"]
    missing = sim.post("/load_lora_adapter", {"lora_name": "gone", "lora_path": "/no/such/adapter"})
    assert missing.status_code == 400 and not missing.json()["success"]
    assert sim.post("/unload_lora_adapter", {"lora_name": "three"}).status_code == 200


def test_pause_and_continue(sim: Sim) -> None:
    assert sim.post("/pause_generation", {"mode": "in_place"}).status_code == 200
    try:
        assert requests.get(f"{sim.base}/ready", timeout=5).status_code == 503
        assert sim_state(sim.base)["paused"]
    finally:
        assert sim.post("/continue_generation").status_code == 200
    assert requests.get(f"{sim.base}/ready", timeout=5).status_code == 200
    assert sim.generate(sampling_params={"max_new_tokens": 2})["meta_info"]["completion_tokens"] == 2


def test_sessions_open_and_close(sim: Sim) -> None:
    opened = sim.post("/open_session", {"capacity_of_str_len": 1000, "session_id": "s1"})
    assert opened.status_code == 200 and opened.json() == "s1"
    assert sim.post("/open_session", {"capacity_of_str_len": 1000, "session_id": "s1"}).status_code != 200
    assert sim.post("/close_session", {"session_id": "s1"}).status_code == 200


def test_a_request_for_an_unknown_session_ends_its_stream_with_a_400_abort(sim: Sim) -> None:
    """What the engine's protocol.parse_stream_event turns into a 400 with SGLang's message."""
    body = {"input_ids": PROMPT, "stream": True, "session_params": {"id": "no-such-session"},
            "sampling_params": {"max_new_tokens": 4}}
    raw = requests.post(f"{sim.base}/generate", json=body, timeout=30).text
    events = [json.loads(e[6:]) for e in raw.split("\n\n") if e.startswith("data: {")]
    finish = events[-1]["meta_info"]["finish_reason"]
    assert finish["type"] == "abort" and finish["status_code"] == 400
    assert "session id no-such-session does not exist" in finish["message"]


def test_a_control_request_it_does_not_simulate_is_refused_at_once(sim: Sim) -> None:
    began = time.monotonic()
    resp = sim.post("/update_weights_from_disk", {"model_path": "/nowhere"})
    assert time.monotonic() - began < 10  # answered, not left to hang until a timeout
    assert resp.status_code == 400 and "not simulated" in resp.text
    assert sim_state(sim.base)["refused"].get("UpdateWeightFromDiskReqInput") == 1
