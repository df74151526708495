"""BASELINE, not project code: the seed engine's streaming pattern, reimplemented minimally for comparison.

LLaMA-Factory's SGLangEngine streams from SGLang with a blocking `requests` response whose lines are
iterated ON THE EVENT LOOP THREAD (the generator is created off-loop, but iterated inside the async
generator the HTTP layer consumes). Every read blocks the loop: one stream at a time makes progress.
This server reproduces exactly that pattern inside an aiohttp handler and writes OpenAI chat chunks, so
the benchmark can put it side by side with the engine. It skips chat templating (a fixed prompt of token
ids), which only flatters it.

    python bench/seed_relay.py --port P --upstream http://127.0.0.1:U
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import requests
from aiohttp import web

PROMPT_IDS = list(range(1, 25))


def blocking_events(upstream: str, max_new_tokens: int) -> Iterator[dict[str, Any]]:
    """The seed's request: POST /generate with stream=True, parse `data:` lines as they arrive (blocking)."""
    body = {"input_ids": PROMPT_IDS, "sampling_params": {"max_new_tokens": max_new_tokens}, "stream": True,
            "rid": uuid.uuid4().hex}
    response = requests.post(f"{upstream}/generate", json=body, stream=True)
    for line in response.iter_lines(decode_unicode=False):
        text = line.decode("utf-8")
        if text == "data: [DONE]":
            break
        if text.startswith("data:"):
            yield json.loads(text[5:].strip("\n"))


async def stream_deltas(upstream: str, max_new_tokens: int) -> AsyncIterator[str]:
    """The seed's stream_chat: cumulative text -> deltas, iterating the blocking generator on the loop."""
    sent = ""
    for event in blocking_events(upstream, max_new_tokens):  # blocks the event loop on every read
        delta = event["text"][len(sent):]
        sent = event["text"]
        yield delta


def chunk(cid: str, created: int, delta: dict[str, Any], finish: str | None) -> bytes:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": "seed",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def build_app(upstream: str) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        req = await request.json()
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk(cid, created, {"role": "assistant", "content": ""}, None))
        async for delta in stream_deltas(upstream, int(req.get("max_tokens") or 128)):
            if delta:
                await response.write(chunk(cid, created, {"content": delta}, None))
        await response.write(chunk(cid, created, {}, "length"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    p = argparse.ArgumentParser(prog="seed_relay")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True)
    args = p.parse_args()
    web.run_app(build_app(args.upstream), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
