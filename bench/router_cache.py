"""Cache-aware routing through SGLang's gateway (SMG 1.13.0) against round robin, side by side in one run.

    .venv/bin/python bench/router_cache.py [--engines 2] [--sessions 8] [--turns 4] [--concurrency 4]

N engines (`sglang-engine serve --backend sglang`, SGLang 0.5.23's real frontend with the simulated
scheduler, SGLANG_SIM_TOKENS=synthetic) whose prefix cache charges SGLANG_SIM_PREFILL_S_PER_TOKEN seconds per
prompt token it does NOT hold (the cost of prefill on a GPU, proportional to the uncached tokens). Two SMGs
in front of the same engines, one `--policy cache_aware`, one `--policy round_robin` (what a plain Service
does). The same multi-turn workload (each session: a long system prompt of its own, then turns that append
the previous answer and a new question) runs through each, with the engines' caches flushed in between.
Measured per policy: prefix-cache hit ratio (SGLang's usage `cached_tokens` over `prompt_tokens`, with
--enable-cache-report), TTFT p50/p99, completion tokens/s; then the router's own TTFT cost at one stream
(the same warm prompt straight to an engine and through SMG, interleaved).
Writes bench/results/router_cache_<engines>engines_<turns>turns.json.
Needs the side venv (`make sglang-sim`) and the `router` extra (smg). Bounded: about 2-3 minutes here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from openai import AsyncOpenAI
from procs import BENCH_DIR, Proc, machine
from sglang_dev.sglang_sim import MODULE, SIDE_VENV_PYTHON
from sglang_dev.smg import free_ports, running_smg

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_ready(base: str, proc: Proc, within_s: float = 300) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"engine at {base} exited; see {proc.log}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=3) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"engine at {base} not ready within {within_s} s; see {proc.log}")


def flush(sglang_urls: list[str]) -> None:
    for url in sglang_urls:
        urllib.request.urlopen(urllib.request.Request(f"{url}/flush_cache", method="POST"), timeout=10).read()


def system_prompt(session: int, words: int) -> str:
    rng = random.Random(session)
    return f"Session {session} briefing: " + " ".join(rng.choice(WORDS) for _ in range(words))


async def one_turn(client: AsyncOpenAI, messages: list[dict], max_tokens: int) -> tuple[float, str, dict]:
    started = time.perf_counter()
    ttft, text, usage = None, [], {}
    stream = await client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if ttft is None:
                ttft = time.perf_counter() - started
            text.append(chunk.choices[0].delta.content)
        if chunk.usage:
            details = chunk.usage.prompt_tokens_details
            usage = {"prompt": chunk.usage.prompt_tokens, "completion": chunk.usage.completion_tokens,
                     "cached": (details.cached_tokens or 0) if details else 0}
    return (ttft if ttft is not None else time.perf_counter() - started), "".join(text), usage


async def workload(base: str, args: argparse.Namespace) -> dict:
    client = AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
    ttfts: list[float] = []
    prompt = cached = completion = 0
    gate = asyncio.Semaphore(args.concurrency)

    async def session(n: int) -> None:
        nonlocal prompt, cached, completion
        messages = [{"role": "system", "content": system_prompt(n, args.prefix_words)}]
        async with gate:
            for turn in range(args.turns):
                messages.append({"role": "user", "content": f"Question {turn} of session {n}: what next?"})
                ttft, text, usage = await one_turn(client, messages, args.max_tokens)
                messages.append({"role": "assistant", "content": text})
                ttfts.append(ttft)
                prompt += usage.get("prompt", 0)
                cached += usage.get("cached", 0)
                completion += usage.get("completion", 0)

    started = time.perf_counter()
    await asyncio.gather(*(session(n) for n in range(args.sessions)))
    wall = time.perf_counter() - started
    await client.close()
    return {"requests": len(ttfts), "cache_hit_ratio": round(cached / prompt, 3) if prompt else 0.0,
            "prompt_tokens": prompt, "cached_tokens": cached,
            "ttft_p50_s": round(pct(ttfts, 50), 4), "ttft_p99_s": round(pct(ttfts, 99), 4),
            "completion_tokens_per_s": round(completion / wall, 1), "wall_s": round(wall, 2)}


async def added_ttft(engine: str, router: str, rounds: int) -> dict:
    """One stream: the same warm prompt straight to an engine and through SMG, interleaved."""
    messages = [{"role": "user", "content": "ping"}]
    clients = {name: AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
               for name, base in (("direct", engine), ("router", router))}
    times: dict[str, list[float]] = {"direct": [], "router": []}
    for name in ("direct", "router"):  # warm both paths (connections, the prefix cache)
        await one_turn(clients[name], messages, 2)
    for _ in range(rounds):
        for name in ("direct", "router"):
            times[name].append((await one_turn(clients[name], messages, 2))[0])
    for c in clients.values():
        await c.close()
    p50 = {name: statistics.median(v) for name, v in times.items()}
    return {"rounds": rounds, "direct_ttft_p50_ms": round(p50["direct"] * 1000, 2),
            "router_ttft_p50_ms": round(p50["router"] * 1000, 2),
            "added_ttft_p50_ms": round((p50["router"] - p50["direct"]) * 1000, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", type=int, default=2)
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--prefix-words", type=int, default=250, help="words in each session's system prompt")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--prefill-s-per-token", type=float, default=0.0005)
    p.add_argument("--token-delay-s", type=float, default=0.005)
    p.add_argument("--single-stream-rounds", type=int, default=40)
    args = p.parse_args()
    if not SIDE_VENV_PYTHON.exists():
        print(f"{SIDE_VENV_PYTHON} missing: run `make sglang-sim`", file=sys.stderr)
        return 2
    env = {"SGLANG_SIM_TOKENS": "synthetic", "SGLANG_SIM_PREFILL_S_PER_TOKEN": str(args.prefill_s_per_token),
           "SGLANG_SIM_TOKEN_DELAY_S": str(args.token_delay_s), "PYTHONUNBUFFERED": "1"}
    logs = Path(tempfile.mkdtemp(prefix="router-bench-"))
    engines: list[tuple[Proc, str, str]] = []
    started = time.monotonic()
    try:
        for i in range(args.engines):
            port, sglang_port = free_ports(2)
            argv = [sys.executable, "-m", "sglang_engine.cli", "serve", "--model", "builtin:tiny",
                    "--backend", "sglang", "--sglang-python", str(SIDE_VENV_PYTHON),
                    "--sglang-module", MODULE,
                    "--served-model-name", "tiny", "--port", str(port), "--sglang-port", str(sglang_port),
                    "--startup-timeout", "300", "--shutdown-grace", "5", "--", "--enable-cache-report"]
            proc = Proc(argv, env={**os.environ, **env}, log=logs / f"engine{i}.log").start()
            engines.append((proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sglang_port}"))
        for proc, base, _ in engines:
            wait_ready(base, proc)
        startup = time.monotonic() - started
        urls = [base for _, base, _ in engines]
        sglang_urls = [s for _, _, s in engines]
        results: dict = {}
        with running_smg(urls, logs / "smg-cache.log", policy="cache_aware") as cache_aware, \
                running_smg(urls, logs / "smg-rr.log", policy="round_robin") as round_robin:
            for name, router in (("cache_aware", cache_aware), ("round_robin", round_robin)):
                flush(sglang_urls)
                results[name] = asyncio.run(workload(router.base, args))
                print(name, json.dumps(results[name]), flush=True)
            results["single_stream"] = asyncio.run(added_ttft(urls[0], cache_aware.base,
                                                              args.single_stream_rounds))
            print("single_stream", json.dumps(results["single_stream"]), flush=True)
        ca, rr = results["cache_aware"], results["round_robin"]
        speedup = rr["ttft_p50_s"] / ca["ttft_p50_s"] if ca["ttft_p50_s"] else None
        results["ttft_p50_speedup"] = round(speedup, 2) if speedup else None
        out = {"args": vars(args), "machine": machine(), "engine_startup_s": round(startup, 1),
               "total_s": round(time.monotonic() - started, 1), **results}
        (BENCH_DIR / "results").mkdir(exist_ok=True)
        name = f"router_cache_{args.engines}engines_{args.turns}turns.json"
        (BENCH_DIR / "results" / name).write_text(json.dumps(out, indent=2) + "\n")
        print(f"TTFT p50 round_robin/cache_aware = {results['ttft_p50_speedup']}x; "
              f"added TTFT at one stream {results['single_stream']['added_ttft_p50_ms']} ms; "
              f"total {out['total_s']} s", flush=True)
        return 0
    finally:
        for proc, _, _ in engines:
            proc.stop(grace=10)


if __name__ == "__main__":
    raise SystemExit(main())
