"""BENCHMARK DOUBLE: a synthetic upstream that speaks SGLang 0.5.23's streaming `/generate` with no model.

Launched exactly like SGLang (`python -m synthetic_sglang <SGLang argv>`, with `bench/` on PYTHONPATH), so
`sglang-engine serve --backend sglang --sglang-module synthetic_sglang` runs the engine's real SGLang
backend path against it. It encodes the protocol itself (imports nothing from sglang_engine):

- `GET /ready` 200 (the engine's readiness), `GET /health` 200; `POST /abort_request` 200.
- `POST /generate` with `stream: true`: exactly `sampling_params.max_new_tokens` tokens, one event each,
  `data: {"text": <CUMULATIVE text>, "output_ids": <cumulative ids>, "meta_info": {id, finish_reason,
  prompt_tokens, completion_tokens, cached_tokens}}`, the last with `finish_reason {"type": "length"}`,
  then `data: [DONE]`.
- `--incremental-streaming-output` (SGLang's flag): `text` and `output_ids` carry only what is new since
  the previous event, instead of everything so far.
- `POST /v1/chat/completions` (SGLang's own OpenAI server, where the engine delegates chat): the same n tokens
  as SGLang 0.5.23's chat stream shape (compact JSON: a role chunk, one chunk per token
  `"delta":{"reasoning_content":null,"content":...}`, a finish chunk, the usage chunk when
  `stream_options.include_usage`, then `data: [DONE]`), `model` echoed as sent; non-streamed: one
  chat.completion object. `max_tokens` / `max_completion_tokens` give n (default 128).
- Pacing: `POST /_bench/pace {"tokens_per_s": 30}` paces every stream on its own clock (token i is due
  at start + i/rate; the first token goes out at once, so time to first token measures the relay);
  `{"tokens_per_s": 0}` is unpaced (as fast as the loop can write). Also `--tokens-per-s` at launch.

Events are pre-encoded per length (only the request id is spliced in), so the upstream's own CPU stays
small next to the relay's and the relay is what the benchmark measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from functools import lru_cache

from aiohttp import web

WORDS = (" the", " model", " streams", " tokens", " to", " a", " client", " through", " relay", ",")
RID_MARK = "\x00RID\x00"
DONE = b"data: [DONE]\n\n"


def expected_text(n: int) -> str:
    """The whole answer of an n-token generation."""
    return "".join(WORDS[i % len(WORDS)] for i in range(n))


@lru_cache(maxsize=8)
def encoded_events(n: int, prompt_tokens: int, incremental: bool = False) -> tuple[tuple[bytes, bytes], ...]:
    """Event i as (bytes before the rid, bytes after it): cumulative text and ids, as SGLang sends them
    by default, or only the new token's with `incremental`."""
    events = []
    text, ids = "", []
    for i in range(n):
        if incremental:
            text, ids = "", []
        text += WORDS[i % len(WORDS)]
        ids.append(100 + i % len(WORDS))
        finish = {"type": "length", "length": n} if i == n - 1 else None
        meta = {"id": RID_MARK, "finish_reason": finish, "prompt_tokens": prompt_tokens,
                "completion_tokens": i + 1, "cached_tokens": 0}
        line = "data: " + json.dumps({"text": text, "output_ids": ids, "meta_info": meta}) + "\n\n"
        before, after = line.split(json.dumps(RID_MARK))
        events.append((before.encode() + b'"', b'"' + after.encode()))
    return tuple(events)


def _compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


@lru_cache(maxsize=16)
def chat_events(n: int, model: str, usage: bool) -> tuple[tuple[bytes, bytes], ...]:
    """SGLang's chat stream as (bytes before the id, bytes after it) per event: the role chunk, n token
    chunks, the finish chunk, and the usage chunk when asked."""
    def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
        return {"id": RID_MARK, "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": {"reasoning_content": None, **delta}, "logprobs": None,
                             "finish_reason": finish, "matched_stop": None}]}

    objs = [chunk({"role": "assistant", "content": ""})]
    objs += [chunk({"content": WORDS[i % len(WORDS)]}) for i in range(n)]
    objs.append(chunk({"content": ""}, "length"))
    if usage:
        objs.append({"id": RID_MARK, "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [], "usage": {"prompt_tokens": 24, "total_tokens": 24 + n,
                                              "completion_tokens": n, "prompt_tokens_details": None}})
    events = []
    for obj in objs:
        before, after = ("data: " + _compact(obj) + "\n\n").split(_compact(RID_MARK))
        events.append((before.encode() + b'"', b'"' + after.encode()))
    return tuple(events)


class Upstream:
    def __init__(self, tokens_per_s: float, incremental: bool) -> None:
        self.tokens_per_s = tokens_per_s
        self.incremental = incremental

    async def health(self, _request: web.Request) -> web.Response:
        return web.Response(text="")

    async def abort(self, _request: web.Request) -> web.Response:
        return web.json_response({})

    async def pace(self, request: web.Request) -> web.Response:
        self.tokens_per_s = float((await request.json())["tokens_per_s"])
        return web.json_response({"tokens_per_s": self.tokens_per_s})

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body.get("sampling_params", {}).get("max_new_tokens", 128))
        rid = str(body.get("rid") or "r").encode()
        prompt_tokens = len(body.get("input_ids") or []) or 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        rate = self.tokens_per_s
        start = loop.time()
        try:
            for i, (before, after) in enumerate(encoded_events(n, prompt_tokens, self.incremental)):
                if rate > 0 and i:
                    delay = start + i / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await response.write(before + rid + after)
            await response.write(DONE)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client left: SGLang aborts the request
        return response


    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body.get("max_completion_tokens") or body.get("max_tokens") or 128)
        rid = str(body.get("rid") or "r").encode()
        model = str(body.get("model") or "default")
        if not body.get("stream"):
            return web.Response(content_type="application/json", text=_compact({
                "id": rid.decode(), "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": expected_text(n)},
                             "finish_reason": "length"}],
                "usage": {"prompt_tokens": 24, "completion_tokens": n, "total_tokens": 24 + n}}))
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        rate = self.tokens_per_s
        start = loop.time()
        try:
            for i, (before, after) in enumerate(chat_events(n, model, usage)):
                if rate > 0 and 1 < i <= n:  # token i (event i) is due at start + (i - 1) / rate
                    delay = start + (i - 1) / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await response.write(before + rid + after)
            await response.write(DONE)
            await response.write_eof()
        except ConnectionResetError:
            pass
        return response


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="synthetic_sglang")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--tokens-per-s", type=float, default=30.0)
    p.add_argument("--incremental-streaming-output", action="store_true")
    args, _sglang_flags = p.parse_known_args(argv)  # the rest of SGLang's argv means nothing here
    upstream = Upstream(args.tokens_per_s, args.incremental_streaming_output)
    app = web.Application()
    app.router.add_get("/health", upstream.health)
    app.router.add_get("/ready", upstream.health)
    app.router.add_post("/generate", upstream.generate)
    app.router.add_post("/v1/chat/completions", upstream.chat)
    app.router.add_post("/abort_request", upstream.abort)
    app.router.add_post("/_bench/pace", upstream.pace)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None, backlog=1024)


if __name__ == "__main__":
    main(sys.argv[1:])
