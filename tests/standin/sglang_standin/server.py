"""The stand-in's HTTP server: SGLang 0.5.23's endpoints and wire format, with aiohttp (a test double)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from sglang_standin.model import Model
from sglang_standin.protocol import VERSION, Job, RequestError, parse_args, validate_sampling


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
        self.loading: asyncio.Task[None] | None = None

    # ---- lifecycle
    async def startup(self, app: web.Application) -> None:
        # Like SGLang's scheduler processes: a child in the same process group that does not exit by itself
        # when this process dies (bounded to 120 s so a broken test cannot leak it forever).
        self.scheduler = subprocess.Popen([sys.executable, "-c", _SCHEDULER_CHILD])  # noqa: ASYNC220
        self.loading = asyncio.get_running_loop().create_task(self._load_or_exit())

    async def _load_or_exit(self) -> None:
        """Like SGLang, a model or adapter that fails to load ends the server (exit 1), not a hang."""
        try:
            await self._load()
        except Exception as exc:
            print(f"[standin] loading failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if self.scheduler is not None:
                self.scheduler.kill()
            os._exit(1)

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
        sp = validate_sampling(dict(body.get("sampling_params") or {}))
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

        async def emit(text: str, finish: dict[str, Any] | None, cached: int) -> None:
            await send(resp, self._event(job, text, finish, cached))
        try:
            await self._stream(job, resp, emit)
        except (ConnectionError, asyncio.CancelledError):
            # Client gone: SGLang aborts the request server-side.
            job.aborted = job.aborted or "client disconnected"
            self.received["aborts"].append({"rid": job.rid, "why": "disconnect", "at": time.time()})
            raise
        finally:
            self.jobs.pop(job.rid, None)
        return resp

    async def _stream(self, job: Job, resp: web.StreamResponse, emit: Emit) -> None:
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
                await emit(text, None, cached)
            if token_delay:
                await asyncio.sleep(token_delay)
        await emit(text, finish, cached)
        await resp.write(b"data: [DONE]\n\n")
        self.finished += 1

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """A minimal /v1/chat/completions (text only; n=1): the engine delegates chat to SGLang's OpenAI
        server, and the process-fault tests need chat streams to fault. Features are tested against SGLang's
        real frontend (tests/engine/test_http_sglang_openai.py)."""
        if time.monotonic() < self.ready_at or self.model is None:
            return web.json_response({"object": "error", "message": "no model loaded", "code": 503},
                                     status=503)
        body = await request.json()
        self.received["generate"].append(body)
        tok = self.model.tok
        prompt = tok.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=False)
        ids = list(tok(prompt, add_special_tokens=False)["input_ids"])
        sp = {"max_new_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or 128,
              "stop": body.get("stop")}
        for key in ("temperature", "top_p", "top_k", "repetition_penalty"):
            if body.get(key) is not None:
                sp[key] = body[key]
        if body.get("seed") is not None:
            sp["sampling_seed"] = body["seed"]
        try:
            job = self.validate({"input_ids": ids, "sampling_params": sp, "rid": body.get("rid"),
                                 "lora_path": body.get("lora_path")})
        except RequestError as e:
            return web.json_response({"object": "error", "message": str(e), "code": 400}, status=400)
        head = {"id": job.rid, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model")}
        parts: list[str] = []
        stream = bool(body.get("stream"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})

        async def emit(text: str, finish: dict[str, Any] | None, cached: int) -> None:
            delta = text[len("".join(parts)):]
            parts.append(delta)
            if not stream:
                return
            if delta:
                await send(resp, {**head, "choices": [{"index": 0, "delta": {"content": delta},
                                                       "finish_reason": None}]})
            if finish is not None:
                await send(resp, {**head, "choices": [{"index": 0, "delta": {},
                                                       "finish_reason": finish["type"]}]})
                if (body.get("stream_options") or {}).get("include_usage"):
                    await send(resp, {**head, "choices": [], "usage": self._usage(job)})

        if stream:
            await resp.prepare(request)
        else:
            resp = _Collector()  # type: ignore[assignment]
        self.jobs[job.rid] = job
        try:
            await self._stream(job, resp, emit)
        except (ConnectionError, asyncio.CancelledError):
            job.aborted = job.aborted or "client disconnected"
            self.received["aborts"].append({"rid": job.rid, "why": "disconnect", "at": time.time()})
            raise
        finally:
            self.jobs.pop(job.rid, None)
        if stream:
            return resp
        return web.json_response({
            "id": job.rid, "object": "chat.completion", "created": head["created"], "model": head["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(parts)},
                         "finish_reason": "length"}], "usage": self._usage(job)})

    @staticmethod
    def _usage(job: Job) -> dict[str, int]:
        return {"prompt_tokens": len(job.input_ids), "completion_tokens": len(job.output_ids),
                "total_tokens": len(job.input_ids) + len(job.output_ids)}

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


Emit = Callable[[str, "dict[str, Any] | None", int], Awaitable[None]]


class _Collector:
    """A response that keeps nothing: a non-streamed chat collects its text in `emit`."""

    async def write(self, data: bytes) -> None:
        pass


async def send(resp: web.StreamResponse, event: dict[str, Any]) -> None:
    # Compact, as SGLang's pydantic/msgspec JSON (the engine finds the usage chunk by its bytes).
    await resp.write(b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n")


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
        web.post("/v1/chat/completions", s.chat),
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
