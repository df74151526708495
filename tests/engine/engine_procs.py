"""Helpers for tests that run `sglang-engine serve` as a real subprocess (and always clean it up)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from openai import OpenAI

READY_WITHIN_S = 180.0  # generous: imports of torch/transformers on 2 busy cores
STOP_WITHIN_S = 15.0


def engine_env(cache: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SGLANG_ENGINE_CACHE": str(cache), "PYTHONUNBUFFERED": "1", **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> tuple[int, dict]:
    """(status, body); status 0 when nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


@contextmanager
def environment(**env: str) -> Iterator[None]:
    """Variables set for the block: knobs (SGLANG_SIM_*, SGLANG_STANDIN_*, PYTHONPATH) reach an SGLang the
    backend starts through its inherited environment."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def wait_until(predicate: Callable[[], object], within: float, step: float = 0.1) -> bool:
    """Poll `predicate` on the event loop until it holds or `within` seconds pass; its last answer."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


def poll_until(predicate: Callable[[], bool], within_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the engine exited early with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s} s")
        time.sleep(0.2)


def stop_engine(proc: subprocess.Popen) -> None:
    """SIGTERM (the engine drains and stops its backend), SIGKILL of the group if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def running_engine(args: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen, str]]:
    """`sglang-engine serve ARGS --port <free>` until /readyz is 200; stopped on exit, even on failure."""
    port = free_port()
    cmd = [sys.executable, "-m", "sglang_engine.cli", "serve", *args, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        poll_until(lambda: get_json(f"{base}/readyz")[0] == 200, READY_WITHIN_S, proc)
        yield proc, base
    finally:
        stop_engine(proc)


def openai_client(base: str) -> OpenAI:
    """The official client against an engine at `base`, failing fast (no retries) so tests see real errors."""
    return OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
