"""Engine streaming overhead: clients straight to a synthetic SGLang upstream's `/v1/chat/completions`
(SGLang's own chat stream shape, model-free) and through the engine's `/v1/chat/completions` (which delegates
to it and relays the bytes), side by side in one run; optionally the seed's blocking /generate relay too.

    .venv/bin/python bench/engine_stream.py                      # the default (issue 16's runs, ~2-3 min)
    .venv/bin/python bench/engine_stream.py --paths direct,engine,seed --levels 1,16,64,256

Processes: the engine (`sglang-engine serve --backend sglang --sglang-module synthetic_sglang`, so its real
SGLang backend path runs: launcher, /ready readiness, the delegated chat relay), the upstream it launches,
the seed baseline (restarted for every run: once cut at the deadline it stays blocked on its reads), and this
process, which is the load generator (its own event loop, never the relay's). CPU per process comes from
/proc/<pid>/stat. Every run stops at its deadline; everything started is killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import (
    BENCH_DIR,
    VENV_BIN,
    Proc,
    cmdline,
    cpu_seconds,
    find_pid,
    free_port,
    patched_copy,
    print_log_tails,
    wait_http,
)
from report import publish, write_engine_report
from streamload import Target, is_chat_token, percentile, run_load, summarize
from synthetic_sglang import expected_text

SERVED_NAME = "bench"
ENGINE_PACKAGE = BENCH_DIR.parent / "engine" / "sglang_engine"
PATHS = ("direct", "engine", "seed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="engine_stream", description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", default="64,256", help="concurrent streams, comma list")
    p.add_argument("--tokens", type=int, default=256, help="tokens per stream")
    p.add_argument("--rate", type=float, default=30.0, help="paced mode: tokens/s per stream")
    p.add_argument("--modes", default="paced,unpaced", help="paced and/or unpaced")
    p.add_argument("--paths", default="direct,engine", help="direct, engine, seed (comma list)")
    p.add_argument("--deadline", type=float, default=20.0,
                   help="seconds per run before streams are cut (the seed baseline needs it)")
    p.add_argument("--probe", type=int, default=40,
                   help="sequential one-token requests per path for the 1-stream TTFT figure (0: skip)")
    p.add_argument("--repeats", type=int, default=1, help="runs per (mode, level, path); the median is kept")
    p.add_argument("--engine-patch", type=Path,
                   help="measure a proposed engine change: this diff (paths under sglang_engine/) is applied "
                   "to a temporary copy of the engine package, which the engine process imports instead")
    p.add_argument("--label", default="", help="suffix for the result files and plots (e.g. 'after')")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="measure nothing: recompute ratios and targets from a result file's raw runs and "
                   "rewrite its JSON, markdown and plots")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--img", type=Path, default=BENCH_DIR.parent / "docs" / "img")
    return p.parse_args(argv)


def post_json(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def targets(upstream: int, engine: int, seed: int) -> dict[str, Target]:
    def chat_body(tokens: int) -> dict[str, Any]:
        return {"model": SERVED_NAME, "messages": [{"role": "user", "content": "Tell me a story."}],
                "max_tokens": tokens, "temperature": 0, "stream": True}

    def direct_body(tokens: int) -> dict[str, Any]:  # what the engine sends SGLang for chat_body
        return {**chat_body(tokens), "stream_options": {"include_usage": True}, "rid": uuid.uuid4().hex}

    chat = "/v1/chat/completions"
    return {
        "direct": Target("direct", f"http://127.0.0.1:{upstream}{chat}", direct_body, is_chat_token),
        "engine": Target("engine", f"http://127.0.0.1:{engine}{chat}", chat_body, is_chat_token),
        "seed": Target("seed", f"http://127.0.0.1:{seed}{chat}", chat_body, is_chat_token),
    }


class Bench:
    def __init__(self, args: argparse.Namespace, logs: Path) -> None:
        self.args, self.logs = args, logs
        self.upstream_port, self.engine_port, self.seed_port = free_port(), free_port(), free_port()
        first = [str(patched_copy(ENGINE_PACKAGE, args.engine_patch, logs))] if args.engine_patch else []
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [*first, str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.engine: Proc | None = None
        self.upstream_pid: int | None = None
        self.upstream_argv = ""
        self.targets = targets(self.upstream_port, self.engine_port, self.seed_port)

    def start_engine(self) -> None:
        argv = [str(VENV_BIN / "sglang-engine"), "serve", "--model", "builtin:tiny", "--backend", "sglang",
                "--served-model-name", SERVED_NAME, "--sglang-module", "synthetic_sglang",
                "--sglang-port", str(self.upstream_port), "--port", str(self.engine_port),
                "--max-concurrent-requests", "1024", "--startup-timeout", "180", "--log-level", "warning"]
        self.engine = Proc(argv, env=self.env, log=self.logs / "engine.log").start()
        wait_http(f"http://127.0.0.1:{self.engine_port}/readyz", 240, self.engine)
        self.upstream_pid = find_pid("synthetic_sglang", f"--port {self.upstream_port}")
        if self.upstream_pid is None:
            raise RuntimeError("the engine's upstream process was not found in /proc")
        self.upstream_argv = cmdline(self.upstream_pid)
        self.verify_text()

    def verify_text(self) -> None:
        """The engine must relay exactly the upstream's text (a patched engine could count garbage)."""
        body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 23}
        reply = post_json(f"http://127.0.0.1:{self.engine_port}/v1/chat/completions", body)
        text, want = reply["choices"][0]["message"]["content"], expected_text(23)
        if text != want:
            raise RuntimeError(f"the engine relayed {text!r}, expected {want!r}")

    def start_seed(self) -> Proc:
        argv = [sys.executable, str(BENCH_DIR / "seed_relay.py"), "--port", str(self.seed_port),
                "--upstream", f"http://127.0.0.1:{self.upstream_port}"]
        seed = Proc(argv, env=self.env, log=self.logs / "seed.log").start()
        wait_http(f"http://127.0.0.1:{self.seed_port}/health", 30, seed)
        return seed

    def set_pace(self, tokens_per_s: float) -> None:
        post_json(f"http://127.0.0.1:{self.upstream_port}/_bench/pace", {"tokens_per_s": tokens_per_s})

    def run_one(self, path: str, level: int) -> dict[str, Any]:
        assert self.engine is not None and self.upstream_pid is not None
        seed = self.start_seed() if path == "seed" else None
        try:
            relay_pid = {"engine": self.engine.pid, "seed": seed.pid if seed else None}.get(path)
            pids = {"relay": relay_pid, "upstream": self.upstream_pid, "client": os.getpid()}
            target = self.targets[path]
            # Warm-up: one 1-token request (pooled connections, the tokenizer's first call), not measured.
            warm, _, _ = asyncio.run(run_load(target, 1, 10, tokens=1))
            if not warm[0].arrivals:
                raise RuntimeError(f"{path}: the warm-up request failed: {warm[0].error}")
            before = {k: cpu_seconds(pid) for k, pid in pids.items() if pid}
            streams, start, end = asyncio.run(run_load(target, level, self.args.deadline, self.args.tokens))
            after = {k: cpu_seconds(pid) for k, pid in pids.items() if pid}
        finally:
            if seed is not None:
                seed.stop(grace=1.0)
        summary = summarize(streams, start, end, self.args.deadline)
        cpu = {f"{k}_cpu_s": round(after[k] - before[k], 3) for k in before}
        per_1k = {f"{k}_cpu_s_per_1k_tokens": round((after[k] - before[k]) / summary["tokens"] * 1000, 4)
                  for k in before if summary["tokens"]}
        return {"path": path, "level": level, **summary, **cpu, **per_1k}

    def ttft_probe(self) -> dict[str, Any]:
        """Time to first token at 1 stream, robustly: `--probe` one-token requests per path, one at a time,
        alternating direct and engine so drifting machine load hits both alike."""
        samples: dict[str, list[float]] = {"direct": [], "engine": []}
        for _ in range(self.args.probe):
            for path, values in samples.items():
                streams, _, _ = asyncio.run(run_load(self.targets[path], 1, 10, tokens=1))
                if streams[0].arrivals:
                    values.append((streams[0].arrivals[0] - streams[0].sent) * 1000)
        out: dict[str, Any] = {"requests_per_path": self.args.probe}
        for path, values in samples.items():
            out[f"{path}_p50_ms"] = round(percentile(values, 50) or 0, 2)
            out[f"{path}_p99_ms"] = round(percentile(values, 99) or 0, 2)
        out["added_p50_ms"] = round(out["engine_p50_ms"] - out["direct_p50_ms"], 2)
        out["added_p99_ms"] = round(out["engine_p99_ms"] - out["direct_p99_ms"], 2)
        print(f"TTFT probe (1 stream, {self.args.probe} requests per path): {out}", flush=True)
        return out

    def run(self) -> list[dict[str, Any]]:
        args = self.args
        runs = []
        for mode in args.modes.split(","):
            self.set_pace(args.rate if mode == "paced" else 0)
            for level in (int(x) for x in args.levels.split(",")):
                for path in args.paths.split(","):
                    repeats = [self.run_one(path, level) for _ in range(args.repeats)]
                    best = sorted(repeats, key=lambda r: r["tok_per_s"])[len(repeats) // 2]
                    best["mode"] = mode
                    if len(repeats) > 1:  # the spread, for the figures the median run hides
                        for key in ("tok_per_s", "ttft_p50_ms", "itl_p99_ms"):
                            best[f"repeats_{key}"] = [r[key] for r in repeats]
                    runs.append(best)
                    print(f"{mode:8} {level:4} {path:7} {best['tok_per_s']:9.1f} tok/s  "
                          f"ttft p50 {best['ttft_p50_ms']:8.2f} ms  itl p99 {best['itl_p99_ms']} ms "
                          f"(steady {best['itl_p99_steady_ms']})  "
                          f"relay cpu/1k {best.get('relay_cpu_s_per_1k_tokens')}  "
                          f"complete {best['complete_streams']}/{level}", flush=True)
                    time.sleep(1.0)  # let sockets and the upstream settle between runs
        return runs

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.stop(grace=10)


def ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (mode, level): engine/direct, seed/direct and engine/seed throughput; added TTFT and ITL."""
    by = {(r["mode"], r["level"], r["path"]): r for r in runs}
    out = []
    for mode, level in dict.fromkeys((r["mode"], r["level"]) for r in runs):
        d, e, s = (by.get((mode, level, p)) for p in PATHS)
        row: dict[str, Any] = {"mode": mode, "level": level}
        if d and e:
            row["engine_over_direct"] = round(e["tok_per_s"] / d["tok_per_s"], 3)
            row["ttft_p50_ratio"] = round(e["ttft_p50_ms"] / max(d["ttft_p50_ms"], 1e-9), 2)
            if e.get("relay_cpu_s_per_1k_tokens") is not None:
                row["relay_cpu_us_per_token"] = round(e["relay_cpu_s_per_1k_tokens"] * 1000, 2)
            direct_cpu = [d.get(f"{k}_cpu_s_per_1k_tokens") for k in ("client", "upstream")]
            if all(v is not None for v in direct_cpu):
                row["direct_cpu_us_per_token"] = round(sum(direct_cpu) * 1000, 2)  # type: ignore[arg-type]
            row["ttft_p50_added_ms"] = round(e["ttft_p50_ms"] - d["ttft_p50_ms"], 2)
            row["ttft_p99_added_ms"] = round(e["ttft_p99_ms"] - d["ttft_p99_ms"], 2)
            for key in ("itl_p99_ms", "itl_p99_steady_ms"):
                if e[key] is not None and d[key] is not None:
                    row[key.replace("_ms", "_added_ms")] = round(e[key] - d[key], 2)
        if d and s:
            row["seed_over_direct"] = round(s["tok_per_s"] / d["tok_per_s"], 3)
        if e and s:
            row["engine_over_seed"] = round(e["tok_per_s"] / max(s["tok_per_s"], 1e-9), 1)
        out.append(row)
    return out


def check_targets(rows: list[dict[str, Any]], probe: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Issue 16's relay targets, each with its measured value and met/missed. The 1-stream TTFT target uses
    the probe (many sequential requests), not a single request."""
    by = {(r["mode"], r["level"]): dict(r) for r in rows}  # copies: the probe's figure stays out of `rows`
    if probe is not None:
        by.setdefault(("paced", 1), {})["ttft_p50_added_ms"] = probe["added_p50_ms"]
    specs = [
        ("paced 30 tok/s, 64 streams: >= 0.98 of direct", "paced", 64, "engine_over_direct",
         lambda v: v >= 0.98),
        ("paced 30 tok/s, 256 streams: >= 0.98 of direct", "paced", 256, "engine_over_direct",
         lambda v: v >= 0.98),
        ("relay CPU per token, unpaced, 64 streams: <= 8 us", "unpaced", 64, "relay_cpu_us_per_token",
         lambda v: v <= 8.0),
        ("(diagnostic) same at 256 streams", "unpaced", 256, "relay_cpu_us_per_token", lambda v: v <= 8.0),
        ("(reported, no target) unpaced throughput, 64 streams, of direct", "unpaced", 64,
         "engine_over_direct", None),
        ("TTFT p50 when 256 streams start at once: <= 1.25x direct", "paced", 256, "ttft_p50_ratio",
         lambda v: v <= 1.25),
        ("added TTFT p50 at 1 stream: <= 1 ms", "paced", 1, "ttft_p50_added_ms", lambda v: v <= 1.0),
    ]
    out = []
    for name, mode, level, key, ok in specs:
        value = by.get((mode, level), {}).get(key)
        met = None if value is None or ok is None else bool(ok(value))
        out.append({"target": name, "value": value, "met": met})
    return out


def rerender(path: Path, img: Path) -> None:
    result = json.loads(path.read_text())
    result["ratios"] = ratios(result["runs"])
    result["targets"] = check_targets(result["ratios"], result.get("ttft_probe"))
    path.write_text(json.dumps(result, indent=2) + "\n")
    write_engine_report(result, path.with_suffix(".md"), img)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        rerender(args.render, args.img)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        bench = Bench(args, Path(tmp))
        started = time.time()
        try:
            bench.start_engine()
            probe = bench.ttft_probe() if args.probe and "engine" in args.paths else None
            runs = bench.run()
        except BaseException:
            print_log_tails(Path(tmp))
            raise
        finally:
            bench.stop()
    rows = ratios(runs)
    body = {"upstream_argv": bench.upstream_argv, "ttft_probe": probe, "runs": runs, "ratios": rows,
            "targets": check_targets(rows, probe)}
    publish("engine_stream" + (f"_{args.label}" if args.label else ""), body, args, started,
            write_engine_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
