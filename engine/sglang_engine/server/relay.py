"""OpenAI chunk encoding for one chat completion: lean on the per-token path.

Everything constant in a chunk (id, created, model) is serialised once per request; a token costs one
`json.dumps` of its text and a string concatenation.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from sglang_engine.backends.base import GenerationChunk

DONE = b"data: [DONE]\n\n"


def usage_of(chunk: GenerationChunk | None, prompt_length: int) -> dict[str, int]:
    prompt = chunk.prompt_tokens if chunk else prompt_length
    completion = chunk.completion_tokens if chunk else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ChunkEncoder:
    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        head = json.dumps({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                           "model": model})
        self._head = "data: " + head[:-1]  # open object: choices/usage are appended
        self._content = self._head + ',"choices":[{"index":0,"delta":{"content":'
        self._content_end = '},"logprobs":null,"finish_reason":null}]}\n\n'

    def role(self) -> bytes:
        return (self._head + ',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
                '"logprobs":null,"finish_reason":null}]}\n\n').encode()

    def content(self, text: str) -> bytes:
        return (self._content + json.dumps(text) + self._content_end).encode()

    def finish(self, finish_reason: str | None) -> bytes:
        return (self._head + ',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":'
                + json.dumps(finish_reason) + "}]}\n\n").encode()

    def usage(self, usage: dict[str, int]) -> bytes:
        return (self._head + ',"choices":[],"usage":' + json.dumps(usage) + "}\n\n").encode()

    @staticmethod
    def error(body: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    def completion(self, text: str, finish_reason: str | None, usage: dict[str, int]) -> dict[str, Any]:
        """The non-streaming response object."""
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage,
        }
