"""Measure the SGLang simulator (dev/sglang_dev/sglang_sim): startup time, RSS of all its processes, and
streaming throughput straight to its /generate (no engine in between).

    .venv/bin/python bench/sglang_sim.py [--streams 64] [--tokens 256] [--rounds 3] [--tokens-source model]

Needs the side venv (`make sglang-sim`). Writes bench/results/sglang_sim.json; prints a line per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from sglang_dev.sglang_sim import MODULE, SIDE_VENV_PYTHON

RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def group_rss_mb(pgid: int) -> tuple[float, int]:
    """Total RSS (MB) and count of the live processes in process group `pgid` (Linux /proc)."""
    total, count = 0, 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            rss_pages = int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        total += rss_pages * os.sysconf("SC_PAGE_SIZE")
        count += 1
    return total / 2**20, count


async def stream_one(session: aiohttp.ClientSession, url: str, prompt: list[int], tokens: int) -> int:
    body = {"input_ids": prompt, "stream": True,
            "sampling_params": {"max_new_tokens": tokens, "ignore_eos": True, "temperature": 0}}
    last = b""
    async with session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        async for line in resp.content:
            if line.startswith(b"data: {"):
                last = line
    return int(json.loads(last[6:])["meta_info"]["completion_tokens"])


async def round_trip(base: str, streams: int, tokens: int) -> tuple[int, float]:
    connector = aiohttp.TCPConnector(limit=streams + 8)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        done = await asyncio.gather(*(stream_one(session, f"{base}/generate", [1, 40 + i % 500, 7], tokens)
                                      for i in range(streams)))
        return sum(done), time.perf_counter() - began


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens-source", choices=["synthetic", "model"], default="synthetic")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "sglang-engine")
    args = p.parse_args()
    if not SIDE_VENV_PYTHON.exists():
        print(f"{SIDE_VENV_PYTHON} missing: run `make sglang-sim`", file=sys.stderr)
        return 2
    from sglang_engine.tiny import ensure_tiny_model

    model = ensure_tiny_model(args.cache)
    port = free_port()
    argv = [str(SIDE_VENV_PYTHON), "-m", MODULE, "--model-path", str(model), "--host", "127.0.0.1",
            "--port", str(port), "--skip-server-warmup", "--log-level", "warning"]
    env = {**os.environ, "SGLANG_SIM_TOKENS": args.tokens_source}
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        import urllib.error
        import urllib.request

        while True:
            if proc.poll() is not None:
                print(f"the simulator exited with {proc.returncode}", file=sys.stderr)
                return 1
            try:
                with urllib.request.urlopen(f"{base}/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        startup_s = time.perf_counter() - began
        idle_rss, processes = group_rss_mb(proc.pid)
        rounds = [asyncio.run(round_trip(base, args.streams, args.tokens)) for _ in range(args.rounds)]
        busy_rss, _ = group_rss_mb(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    rates = [tokens / seconds for tokens, seconds in rounds]
    result = {
        "tokens_source": args.tokens_source, "streams": args.streams, "tokens_per_stream": args.tokens,
        "startup_s": round(startup_s, 1), "processes": processes, "rss_mb_idle": round(idle_rss),
        "rss_mb_after_load": round(busy_rss), "tokens_per_s": [round(r) for r in rates],
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sglang_sim.json").write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
