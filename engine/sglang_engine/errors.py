"""Client-visible errors raised by the engine core, in OpenAI's error vocabulary.

They are `BackendError`s so the HTTP layer maps every failure (core or backend) the same way.
"""

from __future__ import annotations

from sglang_engine.backends.base import BackendError


def invalid_request(message: str, param: str | None) -> BackendError:
    return BackendError(message, status=400, type="invalid_request_error", param=param)


def model_not_found(model: str) -> BackendError:
    return BackendError(
        f"The model {model!r} does not exist (not the served model nor a loaded adapter).",
        status=404, type="invalid_request_error", param="model", code="model_not_found",
    )


def not_ready(message: str) -> BackendError:
    return BackendError(message, status=503, type="server_error", code="not_ready")
