"""`sglang-engine serve` on a Hugging Face repo id, through HF_ENDPOINT and the real client, from the local
Hub stand-in: /status shows the download rising, then the later phases, then Serving; an engine killed
mid-download resumes from where it was; a gated repository without a token is reported and waited on (no crash
loop)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_procs import engine_env, free_port, get_json, poll_until, stop_engine
from sglang_dev.hub_standin import (
    PADDING_FILE,
    TINY_GATED_REPO,
    TINY_REPO,
    HubStandIn,
    serving_in_thread,
    tiny_repos,
)

PAD_MB = 24
MB = 1024 * 1024


@pytest.fixture(scope="module")
def hub(engine_cache: Path) -> Iterator[tuple[HubStandIn, str]]:
    stand_in = HubStandIn(tiny_repos(engine_cache, lora_seeds=(), pad_mb=PAD_MB), rate=6 * MB)
    with serving_in_thread(stand_in) as endpoint:
        yield stand_in, endpoint


def start(model: str, endpoint: str, hf_home: Path, cache: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = engine_env(cache, HF_ENDPOINT=endpoint, HF_HOME=str(hf_home))
    env.pop("HF_TOKEN", None)
    argv = [sys.executable, "-m", "sglang_engine.cli", "serve", "--model", model, "--backend", "transformers",
            "--port", str(port)]
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def watch(base: str, proc: subprocess.Popen, until: str, within_s: float = 180) -> list[dict]:
    """Every distinct /status `loading` seen until its phase is `until`."""
    seen: list[dict] = []
    deadline = time.monotonic() + within_s
    while not (seen and seen[-1]["phase"] == until):
        assert proc.poll() is None, f"the engine exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"no {until} within {within_s} s; saw {seen[-3:]}"
        code, body = get_json(f"{base}/status")
        if code == 200 and (not seen or body["loading"] != seen[-1]):
            seen.append(body["loading"])
        time.sleep(0.1)
    return seen


def test_download_progress_then_serving_and_a_restart_resumes(
        hub: tuple[HubStandIn, str], tmp_path: Path, engine_cache: Path) -> None:
    stand_in, endpoint = hub
    stand_in.served.clear()
    total = sum(len(f.data) for f in next(r for r in stand_in.repos if r.repo_id == TINY_REPO).files)
    proc, base = start(TINY_REPO, endpoint, tmp_path / "hf", engine_cache)
    try:
        poll_until(lambda: get_json(f"{base}/status")[1].get("loading", {}).get("bytesDone", 0) >= 10 * MB,
                   180, proc)
        assert get_json(f"{base}/livez")[0] == 200  # the download runs off the event loop
        code, body = get_json(f"{base}/readyz")
        assert code == 503 and body["reason"].startswith("Downloading ")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # no goodbye: what an OOM kill or a node loss does
        proc.wait()
    first = [(s.start, s.complete) for s in stand_in.served if s.path == PADDING_FILE]
    assert first[0][0] == 0

    proc, base = start(TINY_REPO, endpoint, tmp_path / "hf", engine_cache)
    try:
        seen = watch(base, proc, "Serving")
        downloading = [s for s in seen if s["phase"] == "Downloading" and s["bytesTotal"]]
        assert downloading and all(s["bytesTotal"] == total for s in downloading)
        assert downloading[0]["bytesDone"] >= 10 * MB  # what the first engine wrote counts from the start
        phases = [s["phase"] for s in seen]
        assert phases.index("Downloading") < phases.index("Serving")
        assert "Failed" not in phases
        resumed = [(s.start, s.complete) for s in stand_in.served if s.path == PADDING_FILE][len(first):]
        assert len(resumed) == 1 and resumed[0][0] >= 10 * MB and resumed[0][1]  # a Range request, completed
        code, metrics = 0, ""
        import urllib.request

        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            code, metrics = resp.status, resp.read().decode()
        assert code == 200 and 'sglang_engine_load_phase{phase="Serving"} 1.0' in metrics
        assert get_json(f"{base}/readyz")[0] == 200
    finally:
        stop_engine(proc)


def test_a_gated_repo_without_a_token_is_reported_not_crash_looped(
        hub: tuple[HubStandIn, str], tmp_path: Path, engine_cache: Path) -> None:
    proc, base = start(TINY_GATED_REPO, hub[1], tmp_path / "hf", engine_cache)
    try:
        seen = watch(base, proc, "Failed", within_s=120)
        assert seen[-1]["reason"] == "GatedRepo" and seen[-1]["permanent"] is True
        assert "hfTokenSecret" in seen[-1]["message"]
        time.sleep(1.5)
        assert proc.poll() is None and get_json(f"{base}/livez")[0] == 200  # waits for a fix, alive
        code, body = get_json(f"{base}/readyz")
        assert code == 503 and body["reason"].startswith("Failed (GatedRepo)")
    finally:
        stop_engine(proc)
