"""Client-visible errors raised by the engine core, in OpenAI's error vocabulary.

They are `BackendError`s so the HTTP layer maps every failure (core or backend) the same way.
"""

from __future__ import annotations

from sglang_engine.backends.base import BackendError


def invalid_request(message: str, param: str | None) -> BackendError:
    return BackendError(message, status=400, type="invalid_request_error", param=param)


def context_exceeded(context: int, prompt: int, completion: int | None, param: str) -> BackendError:
    """A request that cannot fit the context: OpenAI's own words and code, as vLLM answers too (clients look
    for "maximum context length" and `context_length_exceeded` to tell it from other 400s)."""
    if completion is None:
        asked = f"your messages resulted in {prompt} tokens. Please reduce the length of the messages."
    else:
        asked = (f"you requested {prompt + completion} tokens ({prompt} in the messages, {completion} in the "
                 "completion). Please reduce the length of the messages or completion.")
    return BackendError(f"This model's maximum context length is {context} tokens. However, {asked}",
                        status=400, type="invalid_request_error", param=param, code="context_length_exceeded")


def model_not_found(model: str) -> BackendError:
    return BackendError(
        f"The model {model!r} does not exist (not the served model nor a loaded adapter).",
        status=404, type="invalid_request_error", param="model", code="model_not_found",
    )


def not_ready(message: str) -> BackendError:
    return BackendError(message, status=503, type="server_error", code="not_ready")
