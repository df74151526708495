"""Engine soak: `sglang-engine serve --backend sglang` (real launch path; upstream: SGLang 0.5.23's real
frontend with a simulated scheduler generating with builtin:tiny, or `--upstream standin`, the hand-written
stand-in) under a long mixed load with faults, watching for leaks.

Load: `--workers` clients loop over full streams, streams dropped mid-way, non-streamed answers and, every
`--flood-every` s, a burst of twice the concurrency cap (the excess must get 429 + Retry-After; clients back
off 1 s on 429/503; half the requests name the adapter `l7`). Faults: every `--kill-every` s SGLang is
SIGKILLed; the engine must report not-ready within 2 s and serve again after its restart, with its adapter
reloaded. Sampled every 5 s, and once at rest after the load: the engine's RSS, open fds and threads. At the
end: SIGTERM, and no SGLang process may remain.

Exit 1 when a promise breaks: any 500, RSS growth over `--rss-bound-mb`, open fds at rest beyond the
upstream pool, readiness lost later than 2 s after a kill, no recovery, or a process left behind. Results:
bench/results/soak_engine.json and .md. `make soak` runs 5 minutes; tests/reliability runs the bounded
version of each fault in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import ROOT, Proc, find_pid, free_port, machine, rss_mb, wait_http

STANDIN_DIR = ROOT / "tests" / "standin"
SIDE_VENV_PYTHON = ROOT / ".cache" / "sglang-venv" / "bin" / "python"  # `make sglang-sim`
PROMPT = [{"role": "user", "content": "Tell me about the sea"}]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--cap", type=int, default=48, help="the engine's --max-concurrent-requests")
    p.add_argument("--kill-every", type=float, default=60.0, help="seconds between SGLang kills (0: none)")
    p.add_argument("--flood-every", type=float, default=30.0)
    p.add_argument("--upstream", choices=["sim", "standin"], default="sim",
                   help="sim: SGLang's real frontend with a simulated scheduler (restarts take 20-45 s); "
                        "standin: the hand-written stand-in")
    p.add_argument("--token-delay", type=float, default=0.02, help="the upstream's seconds per token")
    p.add_argument("--rss-bound-mb", type=float, default=200.0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args(argv)


def upstream_module(args: argparse.Namespace) -> str:
    return "sglang_standin" if args.upstream == "standin" else "sglang_dev.sglang_sim"


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


class Soak:
    def __init__(self, args: argparse.Namespace, engine: Proc, base: str, sglang_port: int) -> None:
        self.args, self.engine, self.base, self.sglang_port = args, engine, base, sglang_port
        self.statuses: Counter[str] = Counter()
        self.samples: list[dict[str, float]] = []
        self.kills: list[dict[str, float | None]] = []
        self.problems: list[str] = []
        self.rng = random.Random(args.seed)
        self.stop_at = time.monotonic() + args.minutes * 60

    async def request(self, http: aiohttp.ClientSession, kind: str) -> None:
        stream = kind != "complete"
        body = {"model": self.rng.choice(["tiny", "tiny:l7"]), "messages": PROMPT,
                "max_tokens": self.rng.randint(10, 60), "stream": stream}
        try:
            async with http.post(f"{self.base}/v1/chat/completions", json=body) as resp:
                key = f"{kind}:{resp.status}"
                if resp.status == 429 and not resp.headers.get("Retry-After"):
                    self.problems.append("a 429 without Retry-After")
                if resp.status == 200 and kind == "drop":
                    for _ in range(self.rng.randint(1, 5)):
                        await resp.content.readline()
                    key = "drop:left"
                else:
                    await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            key = f"{kind}:{type(exc).__name__}"
        self.statuses[key] += 1
        if key.endswith(":500"):
            self.problems.append(f"a 500 on {kind}")
        if key.endswith((":429", ":503")):
            await asyncio.sleep(1.0)  # Retry-After: 1, as a well-behaved client does

    async def worker(self, http: aiohttp.ClientSession) -> None:
        while time.monotonic() < self.stop_at:
            await self.request(http, self.rng.choice(["stream", "stream", "drop", "complete"]))

    async def flooder(self, http: aiohttp.ClientSession) -> None:
        while await self._sleep(self.args.flood_every):
            await asyncio.gather(*(self.request(http, "flood") for _ in range(2 * self.args.cap)))

    async def killer(self, http: aiohttp.ClientSession) -> None:
        while self.args.kill_every > 0 and await self._sleep(self.args.kill_every):
            pid = find_pid(upstream_module(self.args), f"--port {self.sglang_port}")
            if pid is None:
                self.problems.append("no SGLang process to kill")
                continue
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            down = await self._until_readyz(http, 503, 10)
            up = await self._until_readyz(http, 200, 60 if self.args.upstream == "standin" else 240)
            self.kills.append({"not_ready_after_s": down and down - killed,
                               "serving_after_s": up and up - killed})
            if down is None or down - killed > 2:
                self.problems.append(f"readiness not lost within 2 s of a kill ({down and down - killed})")
            if up is None:
                self.problems.append("the engine did not serve again after a kill")
                continue
            async with http.get(f"{self.base}/status") as resp:
                states = {a["name"]: a["state"] for a in (await resp.json())["adapters"]}
            if states != {"l7": "loaded"}:
                self.problems.append(f"adapters after a restart: {states}")

    async def sampler(self) -> None:
        began = time.monotonic()
        while True:
            pid = self.engine.pid
            self.samples.append({"t": round(time.monotonic() - began, 1), "rss_mb": round(rss_mb(pid), 1),
                                 "fds": open_fds(pid), "threads": threads(pid)})
            if not await self._sleep(5):
                return

    async def _until_readyz(self, http: aiohttp.ClientSession, status: int, within: float) -> float | None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{self.base}/readyz") as resp:
                    if resp.status == status:
                        return time.monotonic()
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        return None

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless the soak ends first; False once it has ended."""
        await asyncio.sleep(max(0.0, min(seconds, self.stop_at - time.monotonic())))
        return time.monotonic() < self.stop_at

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as http:
            await asyncio.gather(self.sampler(), self.flooder(http), self.killer(http),
                                 *(self.worker(http) for _ in range(self.args.workers)))
        await asyncio.sleep(2)  # the clients are gone: what the engine still holds now is what it keeps
        pid = self.engine.pid
        self.samples.append({"t": -1, "rss_mb": round(rss_mb(pid), 1), "fds": open_fds(pid),
                             "threads": threads(pid)})


def summarize(soak: Soak, leftovers: list[int], exit_code: int | None) -> dict[str, Any]:
    first, last = soak.samples[0], soak.samples[-1]
    peak = max(s["rss_mb"] for s in soak.samples)
    if peak - first["rss_mb"] > soak.args.rss_bound_mb:
        soak.problems.append(f"RSS grew {peak - first['rss_mb']:.0f} MB")
    # At rest the engine keeps its upstream connection pool (up to cap + 8 keep-alive sockets).
    if last["fds"] - first["fds"] > soak.args.cap + 50:
        soak.problems.append(f"open fds grew from {first['fds']} to {last['fds']} at rest")
    if leftovers:
        soak.problems.append(f"processes left behind: {leftovers}")
    if exit_code != 0:
        soak.problems.append(f"the engine exited with {exit_code} on SIGTERM")
    return {"requests": dict(sorted(soak.statuses.items())), "kills": soak.kills, "samples": soak.samples,
            "rss_mb": {"start": first["rss_mb"], "peak": peak, "end": last["rss_mb"]},
            "fds": {"start": first["fds"], "end": last["fds"]}, "leftover_processes": leftovers,
            "engine_exit_code": exit_code, "problems": soak.problems}


def markdown(result: dict[str, Any]) -> str:
    rss, fds, kills = result["rss_mb"], result["fds"], result["kills"]
    lines = [f"# Engine soak ({result['config']['minutes']} min)", "",
             f"- requests: {sum(result['requests'].values())} ({result['requests']})",
             f"- RSS: {rss['start']} MB at start, {rss['peak']} MB peak, {rss['end']} MB at end",
             f"- open fds: {fds['start']} -> {fds['end']}",
             f"- SGLang kills: {len(kills)}; not ready after "
             f"{[round(k['not_ready_after_s'] or -1, 2) for k in kills]} s, serving again after "
             f"{[round(k['serving_after_s'] or -1, 1) for k in kills]} s",
             f"- processes left after SIGTERM: {result['leftover_processes']}",
             f"- problems: {result['problems'] or 'none'}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    port, sglang_port = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.upstream == "standin":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STANDIN_DIR), os.environ.get("PYTHONPATH")]))
        env["SGLANG_STANDIN_TOKEN_DELAY"] = str(args.token_delay)
        upstream = ["--sglang-module", "sglang_standin"]
    else:
        env["SGLANG_SIM_TOKEN_DELAY_S"] = str(args.token_delay)
        upstream = ["--sglang-python", str(SIDE_VENV_PYTHON), "--sglang-module", upstream_module(args),
                    "--startup-timeout", "300"]
    args.out.mkdir(parents=True, exist_ok=True)
    engine = Proc([sys.executable, "-m", "sglang_engine.cli", "serve", "--model", "builtin:tiny",
                   "--backend", "sglang", *upstream,
                   "--sglang-port", str(sglang_port), "--served-model-name", "tiny", "--port", str(port),
                   "--max-concurrent-requests", str(args.cap), "--restart-backoff", "0.5",
                   "--backend-restarts", "5", "--shutdown-grace", "20",
                   "--lora-adapter", "l7=builtin:tiny-lora-7"],
                  env=env, log=args.out / "soak_engine.log").start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", 300, engine)
        soak = Soak(args, engine, base, sglang_port)
        asyncio.run(soak.run())
        exit_code = engine.stop(grace=30)
    finally:
        engine.kill()
    time.sleep(1)
    leftovers = [pid for pid in [find_pid(upstream_module(args), f"--port {sglang_port}")] if pid]
    config = {k: str(v) for k, v in vars(args).items()}
    result = {"benchmark": "soak_engine", "machine": machine(), "config": config,
              "duration_s": round(time.time() - started, 1), **summarize(soak, leftovers, exit_code)}
    result["config"]["minutes"] = args.minutes
    (args.out / "soak_engine.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "soak_engine.md").write_text(markdown(result))
    print(markdown(result))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
