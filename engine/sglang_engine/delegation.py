"""OpenAI requests delegated to SGLang's own OpenAI server: the request rewrite and the byte relay (pure).

On the SGLang backend `POST /v1/chat/completions` and `POST /v1/completions` go to SGLang's endpoints of the
same path, so every OpenAI and SGLang feature SGLang serves (tools, response_format, logprobs, n, images,
reasoning, SGLang's extensions) reaches the client. The engine changes the request only where it must:

- `model`: resolved against the engine's names (served name, model id, loaded adapter, `<served>:<adapter>`;
  anything else is a 404 `model_not_found`) and sent in a form SGLang reads the same way; SGLang echoes the
  `model` it was sent, so the client sees its own string back without any rewriting, except where SGLang
  cannot be sent that string (a name with `:` that is not `<served>:<adapter>`), where the echo is renamed
  byte-for-byte (`rename`).
- the model's generation defaults are filled into the fields the request leaves out (absent or null);
- streams always ask SGLang for the final usage chunk (the engine's token metrics come from it), which is
  dropped again when the client did not ask for it;
- `rid` (when the client sets none and n is 1): the engine aborts a stream by it the moment its client leaves.

Everything else passes through unchanged. The relay does not parse tokens: each read from SGLang is cut at
the last event boundary and written as is; only the usage chunk (found by its byte signature, once per
stream) is decoded.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sglang_engine.backends.base import BackendError
from sglang_engine.contract import GenerationDefaults
from sglang_engine.errors import invalid_request, model_not_found
from sglang_engine.protocol import error_message

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
DELEGATED_PATHS = frozenset({CHAT_PATH, COMPLETIONS_PATH})
DONE = b"data: [DONE]\n\n"
# SGLang's final usage chunk is the one chunk with no choices and a usage object (pydantic's compact JSON;
# a content chunk has choices, and with continuous_usage_stats its usage follows non-empty choices).
USAGE_SIGNATURE = b'"choices":[],"usage":{'
EVENT_END = b"\n\n"
# The request fields the model's generation defaults fill when a request leaves them out.
_DEFAULT_FIELDS = ("temperature", "top_p", "top_k", "repetition_penalty", "skip_special_tokens")


@dataclass(frozen=True)
class ModelNames:
    """What `model` may name: the served name, the model id, or a loaded adapter (bare or after `served:`)."""

    served: str  # the engine's served name (what clients use)
    model_id: str  # --model as given
    upstream: str  # SGLang's --served-model-name (the served name without `:`)
    adapters: Collection[str]


def route_model(model: str | None, names: ModelNames) -> str | None:
    """The adapter `model` selects (None: the base model); 404 model_not_found for anything else."""
    if model is None or model in (names.served, names.model_id):
        return None
    if model in names.adapters:
        return model
    prefix = names.served + ":"
    if model.startswith(prefix) and model[len(prefix):] in names.adapters:
        return model[len(prefix):]
    raise model_not_found(model)


def _model_field(name: str) -> bytes:
    """`"model":"<name>"` as SGLang's pydantic/msgspec JSON writes it (compact, UTF-8, not \\u-escaped)."""
    return b'"model":' + json.dumps(name, ensure_ascii=False).encode()


@dataclass(frozen=True)
class UpstreamCall:
    """One delegated request, ready to send: the body SGLang gets and what the relay must do to the reply."""

    path: str
    body: bytes
    stream: bool
    client_usage: bool  # the client asked for the stream's usage chunk
    rid: str | None  # set by the engine (abort by it when the client leaves), else None
    adapter: str | None
    rename: tuple[bytes, bytes] | None  # (SGLang's `"model":...`, the client's) when they differ
    client_model: str | None = None  # the client's `model` when SGLang was sent another


def prepare_upstream(path: str, body: Any, names: ModelNames, defaults: GenerationDefaults) -> UpstreamCall:
    """Resolve the model, fill defaults, ask for usage, set a rid: the body for SGLang (one JSON dump)."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.", None)
    asked = body.get("model")
    if asked is not None and not isinstance(asked, str):
        raise invalid_request("model must be a string.", "model")
    adapter = route_model(asked, names)
    rename = None
    if asked is None:
        body["model"] = names.upstream
    elif adapter is not None and asked == adapter:
        body["lora_path"] = adapter  # a bare adapter name: SGLang reads `model` without `:` as the base
    elif ":" in asked and (adapter is None or names.upstream != names.served):
        # SGLang would split this name at `:` (builtin:tiny, a served name with `:`): send its own form.
        body["model"] = names.upstream if adapter is None else f"{names.upstream}:{adapter}"
        rename = (_model_field(body["model"]), _model_field(asked))
    fill_defaults(body, defaults)
    stream = body.get("stream") is True
    client_usage = False
    if stream:
        options = body.get("stream_options")
        client_usage = isinstance(options, dict) and options.get("include_usage") is True
        if options is None or isinstance(options, dict):
            body["stream_options"] = {**(options or {}), "include_usage": True}
    rid = None
    if body.get("rid") is None and body.get("n") in (None, 1):
        # SGLang expands n > 1 into requests with fresh ids of its own: those it aborts itself (2 s after the
        # connection closes); a client's own rid is its own business.
        rid = body["rid"] = uuid.uuid4().hex
    raw = json.dumps(body, ensure_ascii=False).encode()
    return UpstreamCall(path, raw, stream, client_usage, rid, adapter, rename, asked if rename else None)


def fill_defaults(body: dict[str, Any], defaults: GenerationDefaults) -> None:
    """The model's generation defaults, into the fields the request leaves out (absent or null) only.

    `maxLength` (prompt + answer) needs the prompt's length, which only SGLang knows: it is not applied on
    this path (maxNewTokens is)."""
    for key in _DEFAULT_FIELDS:  # the same names in GenerationDefaults and SGLang's OpenAI requests
        value = getattr(defaults, key)
        if value is not None and body.get(key) is None:
            body[key] = value
    if defaults.max_new_tokens is not None and body.get("max_tokens") is None \
            and body.get("max_completion_tokens") is None:
        body["max_tokens"] = defaults.max_new_tokens
    if defaults.stop and body.get("stop") is None:
        body["stop"] = list(defaults.stop)


class StreamRelay:
    """SGLang's SSE bytes -> the client's, per read: whole events only, as they arrive.

    Per read: one `rfind` for the last event boundary, one `find` for the usage signature and, only when
    the model name must be renamed, one `replace`. No JSON is decoded except the usage chunk."""

    __slots__ = ("_pending", "client_usage", "done", "rename", "usage")

    def __init__(self, client_usage: bool, rename: tuple[bytes, bytes] | None = None) -> None:
        self.client_usage = client_usage
        self.rename = rename
        self.usage: dict[str, Any] | None = None
        self.done = False  # SGLang's `data: [DONE]` went out
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        if self._pending:
            data = self._pending + data
        end = data.rfind(EVENT_END) + 2
        if end == 1:  # no whole event yet
            self._pending = data
            return b""
        if end < len(data):
            self._pending = data[end:]
            data = data[:end]
        else:
            self._pending = b""
        if USAGE_SIGNATURE in data:
            data = self._take_usage(data)
        if self.rename is not None:
            data = data.replace(*self.rename)
        if data:
            self.done = data.endswith(DONE)
        return data

    def _take_usage(self, data: bytes) -> bytes:
        at = data.find(USAGE_SIGNATURE)
        start = data.rfind(b"data:", 0, at)
        end = data.find(EVENT_END, at) + 2
        try:
            usage = json.loads(data[start + 5:end])["usage"]
            self.usage = usage if isinstance(usage, dict) else None
        except (ValueError, KeyError, TypeError):
            return data  # not SGLang's usage chunk after all: relay it untouched
        return data if self.client_usage else data[:start] + data[end:]

    def finish(self, failure: str | None = None) -> bytes:
        """What to write after SGLang's stream ended: nothing if it ended with [DONE], else an error event
        (the stream broke, or SGLang died) and [DONE], so the client never waits on a truncated stream."""
        if self.done:
            return b""
        message = failure or "SGLang's stream ended before [DONE]"
        error = {"error": {"message": f"The model backend failed mid-stream: {message}",
                           "type": "server_error", "param": None, "code": None}}
        return b"data: " + json.dumps(error).encode() + EVENT_END + DONE


def complete_body(raw: bytes, client_model: str | None) -> tuple[bytes, dict[str, Any] | None]:
    """A non-streamed reply: (the bytes for the client, its usage for the metrics). Decoded once; encoded
    again only when `model` must name what the client asked for."""
    try:
        reply = json.loads(raw)
    except ValueError:
        return raw, None
    if not isinstance(reply, dict):
        return raw, None
    if client_model is not None:
        reply["model"] = client_model
        raw = json.dumps(reply, ensure_ascii=False).encode()
    usage = reply.get("usage")
    return raw, usage if isinstance(usage, dict) else None


def error_from_upstream(status: int, raw: bytes) -> BackendError:
    """A non-200 reply from SGLang's OpenAI server (its ErrorResponse `{object, message, type, param, code}`,
    FastAPI's `{"detail": ...}`, or text) -> the client's error: SGLang's 4xx status and message in
    OpenAI's shape; 503 stays 503 (starting, draining); any other 5xx is SGLang failing the engine: 502."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    message = error_message(body) if body is not None else (
        raw.decode("utf-8", "replace").strip() or f"HTTP {status}")
    param = None
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("param"), str):
            param = inner["param"]
    if 400 <= status < 500:
        return BackendError(message, status=status, type="invalid_request_error", param=param)
    if status == 503:
        return BackendError(f"SGLang is not ready: {message}", status=503)
    return BackendError(f"SGLang answered HTTP {status}: {message}", status=502)
