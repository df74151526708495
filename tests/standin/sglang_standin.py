"""TEST DOUBLE: a protocol-faithful stand-in for SGLang 0.5.23's HTTP server. Never used in production.

Launched exactly like SGLang (`python -m sglang_standin <the argv the engine builds>`): tests put
`tests/standin` on PYTHONPATH and pass `--sglang-module sglang_standin`, so the engine's real launch,
readiness, streaming, adapter and shutdown code runs against it. It parses its argv with argparse
(exit 2 on an unknown flag, like SGLang) and speaks SGLang's wire protocol as
/work/shared/design/SGLANG_PROTOCOL.md describes: cumulative `text`, the `finish_reason` dict, 400 on
unknown sampling keys, an error event after streaming began, adapter replies, abort on disconnect.

It generates REAL tokens with the model at `--model-path` (transformers, plus peft for LoRA adapters)
one forward pass at a time in one worker thread, so seeds and adapters measurably change the output.
It deliberately encodes the protocol on its own (it imports nothing from sglang_engine), so a wrong
key in the engine is caught rather than mirrored.

Test knobs (environment):
  SGLANG_STANDIN_STARTUP_DELAY  seconds /health answers 503 after the model loaded (default 0)
  SGLANG_STANDIN_NEVER_READY    "1": /health never answers 200
  SGLANG_STANDIN_TOKEN_DELAY    seconds to sleep between tokens (default 0)
  SGLANG_STANDIN_IGNORE_SIGTERM "1": ignore SIGTERM (like SGLang draining forever), in the child too
  SGLANG_STANDIN_SKIP_MODEL     "1": load no model (process-lifecycle tests); /generate answers 503
Debug: GET /_standin/requests lists what it received (generate bodies, aborts, adapter calls).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

VERSION = "0.5.23"
SAMPLING_KEYS = {
    "max_new_tokens", "temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty",
    "repetition_penalty", "min_new_tokens", "stop", "stop_token_ids", "skip_special_tokens",
    "spaces_between_special_tokens", "ignore_eos", "n", "sampling_seed",
}
LORA_BACKENDS = ["triton", "csgmv", "ascend", "torch_native", "triton_v2"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sglang_standin")  # exits 2 on unknown flags, like SGLang
    a = p.add_argument
    a("--model-path", "--model", required=True)
    a("--tokenizer-path")
    a("--revision")
    a("--served-model-name")
    a("--host", default="127.0.0.1")
    a("--port", type=int, default=30000)
    a("--tp-size", "--tensor-parallel-size", "--tp", type=int, default=1)
    a("--dtype", default="auto", choices=["auto", "half", "float16", "bfloat16", "float", "float32"])
    a("--log-level", default="info")
    a("--enable-metrics", action="store_true")
    a("--context-length", type=int)
    a("--mem-fraction-static", type=float)
    a("--max-running-requests", type=int)
    a("--download-dir")
    a("--chat-template")
    a("--random-seed", type=int)
    a("--trust-remote-code", action="store_true")
    a("--api-key")
    a("--enable-lora", action="store_true")
    a("--lora-paths", nargs="*")
    a("--max-lora-rank", type=int)
    a("--lora-target-modules", nargs="*")
    a("--max-loaded-loras", type=int)
    a("--max-loras-per-batch", type=int, default=8)
    a("--lora-backend", default="csgmv", choices=LORA_BACKENDS)
    a("--disable-radix-cache", action="store_true")
    a("--chunked-prefill-size", type=int)  # a harmless flag tests can pass through extraArgs
    args = p.parse_args(argv)
    shape_unknown = args.max_lora_rank is None or not args.lora_target_modules
    if args.enable_lora and not args.lora_paths and shape_unknown:
        p.error("--max-lora-rank and --lora-target-modules are required with --enable-lora and no "
                "--lora-paths")
    if args.max_loaded_loras is not None and args.max_loaded_loras < args.max_loras_per_batch:
        p.error("--max-loaded-loras must be >= --max-loras-per-batch")
    return args


class RequestError(Exception):
    """Rejected before streaming: HTTP 400."""


@dataclass
class Job:
    rid: str
    input_ids: list[int]
    sp: dict[str, Any]
    adapter: str | None
    aborted: str | None = None  # why, once aborted
    output_ids: list[int] = field(default_factory=list)


class Model:
    """The tiny model plus peft adapters; every method runs in the single worker thread."""

    def __init__(self, path: str, random_seed: int | None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        torch.set_num_threads(1)  # tiny matrices: more threads only contend with the tests on 2 cores
        self.tok = AutoTokenizer.from_pretrained(path)
        self.base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.peft: Any = None
        eos = self.base.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.context_length = int(self.base.config.max_position_embeddings)
        self.seed_rng = torch.Generator().manual_seed(random_seed or 0)

    def load(self, name: str, path: str) -> None:
        from peft import PeftModel

        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base, path, adapter_name=name).eval()
        else:
            self.peft.load_adapter(path, adapter_name=name)

    def unload(self, name: str, remaining: int) -> None:
        if remaining == 0:  # peft cannot delete its last adapter; drop the wrapper instead
            self.base = self.peft.unload()
            self.peft = None
        else:
            if name in self.peft.active_adapters:
                self.peft.set_adapter(next(n for n in self.peft.peft_config if n != name))
            self.peft.delete_adapter(name)

    def next_token(self, job: Job, gen: Any) -> int:
        torch = self.torch
        ids = torch.tensor([job.input_ids + job.output_ids])
        with torch.no_grad():
            if job.adapter is not None:
                self.peft.set_adapter(job.adapter)
                logits = self.peft(input_ids=ids).logits[0, -1]
            elif self.peft is not None:
                with self.peft.disable_adapter():
                    logits = self.peft(input_ids=ids).logits[0, -1]
            else:
                logits = self.base(input_ids=ids).logits[0, -1]
        sp = job.sp
        penalty = sp.get("repetition_penalty", 1.0)
        if penalty != 1.0 and job.output_ids:
            seen = torch.tensor(sorted(set(job.input_ids + job.output_ids)))
            vals = logits[seen]
            logits[seen] = torch.where(vals > 0, vals / penalty, vals * penalty)
        if sp.get("ignore_eos"):
            logits[list(self.eos_ids)] = -float("inf")
        temperature = sp.get("temperature", 1.0)
        if temperature < 1e-6:
            return int(torch.argmax(logits))
        logits = logits / temperature
        top_k = sp.get("top_k", -1)
        if top_k > 0:
            kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
            logits[logits < kth] = -float("inf")
        probs = torch.softmax(logits, dim=-1)
        top_p = sp.get("top_p", 1.0)
        if top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            drop = torch.cumsum(sorted_p, 0) - sorted_p > top_p
            probs[order[drop]] = 0.0
            probs = probs / probs.sum()
        return int(torch.multinomial(probs, 1, generator=gen))

    def generator(self, seed: int | None) -> Any:
        if seed is None:  # unseeded requests draw from the server's --random-seed stream
            seed = int(self.torch.randint(0, 2**31 - 1, (1,), generator=self.seed_rng))
        return self.torch.Generator().manual_seed(seed)


class StandIn:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.served = args.served_model_name or args.model_path
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="standin-model")
        self.model: Model | None = None
        self.ready_at = float("inf")
        self.adapters: dict[str, str] = {}
        self.jobs: dict[str, Job] = {}
        self.recent_prompts: list[list[int]] = []
        self.received: dict[str, list[Any]] = {"generate": [], "aborts": [], "load": [], "unload": []}
        self.health_answers: dict[str, float] = {}  # status -> count, and the wall time of the first 200
        self.finished = 0
        self.scheduler: subprocess.Popen[bytes] | None = None

    # ---- lifecycle
    async def startup(self, app: web.Application) -> None:
        # Like SGLang's scheduler processes: a child in the same process group that does not exit by itself
        # when this process dies (bounded to 120 s so a broken test cannot leak it forever).
        self.scheduler = subprocess.Popen([sys.executable, "-c", _SCHEDULER_CHILD])  # noqa: ASYNC220
        asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        if os.environ.get("SGLANG_STANDIN_SKIP_MODEL") != "1":
            self.model = await loop.run_in_executor(
                self.pool, Model, self.args.model_path, self.args.random_seed)
            print(f"[standin] model loaded from {self.args.model_path}", flush=True)
        for item in self.args.lora_paths or []:
            name, _, path = item.partition("=")
            if self.model is not None:
                await loop.run_in_executor(self.pool, self.model.load, name, path)
            self.adapters[name] = path
        if os.environ.get("SGLANG_STANDIN_NEVER_READY") != "1":
            self.ready_at = time.monotonic() + float(os.environ.get("SGLANG_STANDIN_STARTUP_DELAY", "0"))

    async def cleanup(self, app: web.Application) -> None:
        if self.scheduler is not None:
            self.scheduler.kill()
        self.pool.shutdown(wait=False, cancel_futures=True)

    @property
    def context_length(self) -> int:
        assert self.model is not None
        return self.args.context_length or self.model.context_length

    # ---- validation (before streaming: HTTP 400)
    def validate(self, body: dict[str, Any]) -> Job:
        sp = dict(body.get("sampling_params") or {})
        unknown = sorted(set(sp) - SAMPLING_KEYS)
        if unknown:
            raise RequestError(f"SamplingParams.__init__() got an unexpected keyword argument '{unknown[0]}'")
        if sp.get("top_k", -1) == 0 or sp.get("top_k", -1) < -1:
            raise RequestError(f"top_k must be -1 (disable), or at least 1, got {sp['top_k']}.")
        if sp.get("temperature", 1.0) < 0:
            raise RequestError(f"temperature must be non-negative, got {sp['temperature']}.")
        if not 0 < sp.get("top_p", 1.0) <= 1:
            raise RequestError(f"top_p must be in (0, 1], got {sp['top_p']}.")
        if not 0 < sp.get("repetition_penalty", 1.0) <= 2:
            raise RequestError(f"repetition_penalty must be in (0, 2], got {sp['repetition_penalty']}.")
        if sp.get("max_new_tokens", 128) < 0:
            raise RequestError(f"max_new_tokens must be at least 0, got {sp['max_new_tokens']}.")
        stop = sp.get("stop")
        sp["stop"] = [stop] if isinstance(stop, str) else list(stop or [])
        if len(sp["stop"]) > 32:
            raise RequestError("stop: at most 32 stop strings")
        if sp.get("n", 1) != 1:
            raise RequestError("the stand-in supports n=1 only")
        if "input_ids" in body:
            input_ids = list(body["input_ids"])
        elif "text" in body:
            assert self.model is not None
            input_ids = self.model.tok(body["text"])["input_ids"]
        else:
            raise RequestError("Either text or input_ids should be provided.")
        adapter = body.get("lora_path")
        if adapter is not None and adapter not in self.adapters:
            raise RequestError(f"LoRA adapter {adapter!r} is not loaded")  # sent as {"error": "<str>"}
        rid = str(body.get("rid") or f"standin-{time.monotonic_ns()}")
        return Job(rid=rid, input_ids=input_ids, sp=sp, adapter=adapter)

    # ---- handlers
    async def health(self, request: web.Request) -> web.Response:
        status = 200 if time.monotonic() >= self.ready_at else 503
        self.health_answers[str(status)] = self.health_answers.get(str(status), 0) + 1
        if status == 200 and "first_200_at" not in self.health_answers:
            self.health_answers["first_200_at"] = time.time()
        return web.Response(status=status)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        if time.monotonic() < self.ready_at or self.model is None:
            return web.json_response({"error": {"message": "no model loaded"}}, status=503)
        body = await request.json()
        self.received["generate"].append(body)
        try:
            job = self.validate(body)
        except RequestError as e:
            if body.get("lora_path") is not None and "LoRA adapter" in str(e):
                return web.json_response({"error": str(e)}, status=400)
            return web.json_response({"error": {"message": str(e)}}, status=400)
        if not body.get("stream"):
            return web.json_response({"error": {"message": "the stand-in implements stream=true only"}},
                                     status=400)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        self.jobs[job.rid] = job
        try:
            await self._stream(job, resp)
        except (ConnectionError, asyncio.CancelledError):
            # Client gone: SGLang aborts the request server-side.
            job.aborted = job.aborted or "client disconnected"
            self.received["aborts"].append({"rid": job.rid, "why": "disconnect", "at": time.time()})
            raise
        finally:
            self.jobs.pop(job.rid, None)
        return resp

    async def _stream(self, job: Job, resp: web.StreamResponse) -> None:
        assert self.model is not None
        model, loop = self.model, asyncio.get_running_loop()
        if len(job.input_ids) >= self.context_length:
            message = (f"The input ({len(job.input_ids)} tokens) is longer than the model's context length "
                       f"({self.context_length} tokens).")
            await send(resp, {"error": {"message": message}})
            await resp.write(b"data: [DONE]\n\n")
            return
        cached = self._cached_prefix(job.input_ids)
        gen = model.generator(job.sp.get("sampling_seed"))
        max_new = min(job.sp.get("max_new_tokens", 128), self.context_length - len(job.input_ids))
        token_delay = float(os.environ.get("SGLANG_STANDIN_TOKEN_DELAY", "0"))
        skip_special = job.sp.get("skip_special_tokens", True)
        stop_ids = set(job.sp.get("stop_token_ids") or [])
        text, finish = "", None
        while finish is None:
            if job.aborted:
                finish = {"type": "abort", "message": f"Abort request {job.rid}: {job.aborted}"}
                break
            if len(job.output_ids) >= max_new:
                finish = {"type": "length", "length": len(job.output_ids)}
                break
            token = await loop.run_in_executor(self.pool, model.next_token, job, gen)
            job.output_ids.append(token)
            if token in model.eos_ids or token in stop_ids:
                finish = {"type": "stop", "matched": token}
                job.output_ids.pop()  # SGLang leaves the matched eos out of the text
            new_text = model.tok.decode(job.output_ids, skip_special_tokens=skip_special)
            for s in job.sp["stop"]:
                at = new_text.find(s)
                if s and at >= 0:
                    new_text, finish = new_text[:at], {"type": "stop", "matched": s}
                    break
            if finish is None and new_text.endswith("\ufffd"):
                continue  # an incomplete UTF-8 character: SGLang's detokenizer holds it back
            text = new_text
            if finish is None:
                await send(resp, self._event(job, text, None, cached))
            if token_delay:
                await asyncio.sleep(token_delay)
        await send(resp, self._event(job, text, finish, cached))
        await resp.write(b"data: [DONE]\n\n")
        self.finished += 1

    def _event(self, job: Job, text: str, finish: dict[str, Any] | None, cached: int) -> dict[str, Any]:
        return {"text": text, "output_ids": list(job.output_ids), "meta_info": {
            "id": job.rid, "finish_reason": finish, "prompt_tokens": len(job.input_ids),
            "completion_tokens": len(job.output_ids), "cached_tokens": cached}}

    def _cached_prefix(self, ids: list[int]) -> int:
        """A radix cache in miniature: the longest prefix shared with a recent prompt."""
        best = 0
        for old in self.recent_prompts:
            n = 0
            for a, b in zip(old, ids, strict=False):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        self.recent_prompts = [*self.recent_prompts[-63:], list(ids)]
        return min(best, max(len(ids) - 1, 0))

    async def abort_request(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received["aborts"].append({"rid": body.get("rid"), "why": "abort_request", "at": time.time()})
        targets = list(self.jobs.values()) if body.get("abort_all") else [self.jobs.get(body.get("rid", ""))]
        for job in targets:
            if job is not None:
                job.aborted = "abort_request"
        return web.Response(status=200)

    async def load_lora(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received["load"].append(body)
        name, path = body.get("lora_name"), body.get("lora_path")
        error = self._load_error(name, path)
        if error is None:
            assert self.model is not None
            try:
                await asyncio.get_running_loop().run_in_executor(self.pool, self.model.load, name, path)
                self.adapters[name] = path
            except Exception as e:
                error = f"Failed to load LoRA adapter {name}: {e}"
        return self._adapter_reply(error)

    def _load_error(self, name: str | None, path: str | None) -> str | None:
        if not self.args.enable_lora:
            return "LoRA is not enabled. Please set `--enable-lora` when launching the server."
        if not name or not path:
            return "lora_name and lora_path are required"
        if name in self.adapters:
            return f"LoRA adapter {name} is already loaded"
        limit = self.args.max_loaded_loras
        if limit is not None and len(self.adapters) >= limit:
            return f"Maximum number of loaded LoRA adapters ({limit}) reached"
        config_file = Path(path) / "adapter_config.json"
        if not config_file.is_file():
            return f"Failed to load LoRA adapter {name}: no adapter_config.json at {path}"
        config = json.loads(config_file.read_text())
        if self.args.max_lora_rank is not None and config.get("r", 0) > self.args.max_lora_rank:
            return (f"LoRA adapter {name} has rank {config['r']}, larger than --max-lora-rank "
                    f"{self.args.max_lora_rank}")
        allowed = set(self.args.lora_target_modules or ["all"])
        wanted = set(config.get("target_modules") or [])
        if "all" not in allowed and not wanted <= allowed:
            return f"LoRA adapter {name} targets {sorted(wanted - allowed)}, not in --lora-target-modules"
        return None

    async def unload_lora(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received["unload"].append(body)
        name = body.get("lora_name")
        if name not in self.adapters:
            return self._adapter_reply(f"LoRA adapter {name} is not loaded")
        del self.adapters[name]
        assert self.model is not None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.pool, self.model.unload, name, len(self.adapters))
        return self._adapter_reply(None)

    def _adapter_reply(self, error: str | None) -> web.Response:
        body = {"success": error is None, "error_message": error, "loaded_adapters": dict(self.adapters)}
        return web.json_response(body, status=200 if error is None else 400)

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": self.served, "object": "model", "owned_by": "sglang", "root": self.args.model_path,
                 "max_model_len": self.context_length if self.model else None}]
        data += [{"id": n, "object": "model", "owned_by": "sglang", "root": p, "parent": self.served}
                 for n, p in self.adapters.items()]
        return web.json_response({"object": "list", "data": data})

    async def model_info(self, request: web.Request) -> web.Response:
        return web.json_response({"model_path": self.args.model_path, "tokenizer_path": self.args.model_path,
                                  "is_generation": True, "served_model_name": self.served,
                                  "weight_version": "default"})

    async def server_info(self, request: web.Request) -> web.Response:
        return web.json_response({**vars(self.args), "version": VERSION, "standin": True})

    async def metrics(self, request: web.Request) -> web.Response:
        if not self.args.enable_metrics:
            raise web.HTTPNotFound()
        label = f'{{model_name="{self.served}"}}'
        lines = [
            "# TYPE sglang:num_running_reqs gauge", f"sglang:num_running_reqs{label} {len(self.jobs)}",
            "# TYPE sglang:num_queue_reqs gauge", f"sglang:num_queue_reqs{label} 0",
            "# TYPE sglang:token_usage gauge", f"sglang:token_usage{label} 0.0",
            "# TYPE sglang:num_requests_total counter", f"sglang:num_requests_total{label} {self.finished}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def debug_requests(self, request: web.Request) -> web.Response:
        return web.json_response({**self.received, "health": self.health_answers})


async def send(resp: web.StreamResponse, event: dict[str, Any]) -> None:
    await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")


_SCHEDULER_CHILD = """
import os, signal, time
if os.environ.get("SGLANG_STANDIN_IGNORE_SIGTERM") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(120)
"""


def build_app(standin: StandIn) -> web.Application:
    app = web.Application()
    app.on_startup.append(standin.startup)
    app.on_cleanup.append(standin.cleanup)
    s = standin
    app.add_routes([
        web.get("/health", s.health), web.get("/ready", s.health), web.post("/generate", s.generate),
        web.post("/abort_request", s.abort_request), web.post("/load_lora_adapter", s.load_lora),
        web.post("/unload_lora_adapter", s.unload_lora), web.get("/v1/models", s.models),
        web.get("/model_info", s.model_info), web.get("/get_model_info", s.model_info),
        web.get("/server_info", s.server_info), web.get("/metrics", s.metrics),
        web.get("/_standin/requests", s.debug_requests),
    ])
    return app


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.environ.get("SGLANG_STANDIN_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"[standin] SGLang {VERSION} stand-in on {args.host}:{args.port} pid {os.getpid()}", flush=True)
    # handler_cancellation: a client disconnect cancels the handler, which aborts the generation.
    web.run_app(build_app(StandIn(args)), host=args.host, port=args.port, print=None,
                handle_signals=os.environ.get("SGLANG_STANDIN_IGNORE_SIGTERM") != "1",
                handler_cancellation=True, access_log=None)


if __name__ == "__main__":
    main()
