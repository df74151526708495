#!/usr/bin/env python3
"""Serve builtin:tiny on 127.0.0.1 and stream one chat completion to the terminal (`make serve-tiny`).

Starts `sglang-engine serve --model builtin:tiny --backend transformers` on a free port, waits for /readyz
(showing progress), streams a chat completion with the official `openai` client, then stops the server,
also on Ctrl-C, and leaves no process behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

STARTUP_BUDGET_S = 300.0  # the first run builds builtin:tiny; imports alone take a while on 2 cores
STOP_GRACE_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_command(port: int) -> list[str]:
    script = shutil.which("sglang-engine", path=os.path.dirname(sys.executable))
    launcher = [script] if script else [sys.executable, "-m", "sglang_engine.cli"]
    return [*launcher, "serve", "--model", "builtin:tiny", "--backend", "transformers", "--served-model-name",
            "tiny", "--host", "127.0.0.1", "--port", str(port)]


def readyz(base: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as resp:
            return resp.status, ""
    except urllib.error.HTTPError as exc:  # 503 while starting, with a JSON reason
        try:
            return exc.code, json.loads(exc.read()).get("reason", "")
        except ValueError:
            return exc.code, ""
    except OSError:
        return 0, "not listening yet"


def wait_ready(proc: subprocess.Popen[bytes], base: str) -> None:
    started = time.monotonic()
    last_reason = None
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"serve_tiny: the engine exited with code {proc.returncode} before it was ready")
        status, reason = readyz(base)
        if status == 200:
            print(f"serve_tiny: ready after {time.monotonic() - started:.1f} s", file=sys.stderr)
            return
        if reason != last_reason:
            print(f"serve_tiny: waiting for /readyz: {reason or status}", file=sys.stderr)
            last_reason = reason
        if time.monotonic() - started > STARTUP_BUDGET_S:
            raise SystemExit(f"serve_tiny: not ready within {STARTUP_BUDGET_S:.0f} s")
        time.sleep(0.5)


def stream_chat(base: str, prompt: str, max_tokens: int) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
    print(f"\n> {prompt}\n", flush=True)
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
        stream=True, stream_options={"include_usage": True})
    finish, usage = None, None
    for chunk in stream:
        if chunk.choices:
            sys.stdout.write(chunk.choices[0].delta.content or "")
            sys.stdout.flush()
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    print(f"\n\n[finish_reason={finish}, prompt_tokens={usage and usage.prompt_tokens}, "
          f"completion_tokens={usage and usage.completion_tokens}]", flush=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful drain), then SIGKILL of the whole group after a grace period."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print(f"serve_tiny: engine stopped (exit code {proc.returncode})", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="Write a haiku about tiny models.")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = engine_command(port)
    print(f"serve_tiny: starting {' '.join(command)}", file=sys.stderr)
    # Its own session: Ctrl-C reaches only this script, which then stops the engine in order.
    proc = subprocess.Popen(command, start_new_session=True)
    try:
        wait_ready(proc, base)
        stream_chat(base, args.prompt, args.max_tokens)
        return 0
    except KeyboardInterrupt:
        print("\nserve_tiny: interrupted", file=sys.stderr)
        return 130
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
