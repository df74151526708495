"""OpenAI chat-completions request parsing and error shapes. Parsed once per request, never per token."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from sglang_engine.backends.base import BackendError
from sglang_engine.errors import invalid_request
from sglang_engine.sampling import SamplingRequest


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    include_obfuscation: bool | None = None  # OpenAI's padding against side channels: nothing to pad here


OWN_BACKEND = "transformers"  # the backend the engine's own OpenAI implementation serves (SGLang delegates)


class ChatCompletionRequest(BaseModel):
    # Unknown fields are refused by name: a misspelt parameter must not be silently ignored.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str | None = None
    messages: list[Any]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # SGLang/vLLM extension
    repetition_penalty: float | None = None  # extension
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    max_new_tokens: int | None = None  # the seed's name
    max_length: int | None = None  # the seed's name: prompt + answer
    stop: str | list[str] | None = None
    n: int | None = 1
    seed: int | None = None
    skip_special_tokens: bool | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    user: str | None = None
    system: str | None = None  # the seed API's separate system prompt
    # Documented OpenAI parameters that SDKs and gateways send. Bookkeeping ones are accepted and ignored
    # (nothing is stored, there is one service tier); the ones that would change the answer are accepted
    # only at their neutral value (see unsupported()).
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    logit_bias: dict[str, float] | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None

    def sampling(self) -> SamplingRequest:
        unsupported = self.unsupported()
        if unsupported:
            names = ", ".join(name + what for name, what in unsupported)
            raise invalid_request(f"Not supported by the {OWN_BACKEND} backend: {names} (backend: sglang "
                                  "serves SGLang's whole OpenAI API).", unsupported[0][0])
        max_tokens = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        if max_tokens is None:
            max_tokens = self.max_new_tokens
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingRequest(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
            repetition_penalty=self.repetition_penalty, max_new_tokens=max_tokens, max_length=self.max_length,
            stop=stop, skip_special_tokens=self.skip_special_tokens, seed=self.seed,
            n=1 if self.n is None else self.n,
        )

    def unsupported(self) -> list[tuple[str, str]]:
        """The features asked for that the engine's own implementation lacks: (parameter, detail)."""
        found = [(name, "") for name in ("presence_penalty", "frequency_penalty", "logprobs", "top_logprobs",
                                         "logit_bias") if getattr(self, name)]  # 0/None/{} are neutral
        if self.tools and self.tool_choice != "none":
            found.append(("tools", " (tool calls)"))
        if self.response_format and self.response_format.get("type") != "text":
            found.append(("response_format", f" {self.response_format.get('type')!r}"))
        return found

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def parse_chat_request(body: Any) -> ChatCompletionRequest:
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.", None)
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("str", "list")))
        raise invalid_request(f"{param}: {err['msg']}", param or None) from None


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def backend_error_body(exc: BackendError) -> dict[str, Any]:
    return error_body(exc.message, exc.type, exc.param, exc.code)


def error_type_for(status: int) -> str:
    # As OpenAI answers: a bad key is a 401 of type invalid_request_error with code invalid_api_key.
    return {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
            404: "invalid_request_error", 408: "invalid_request_error", 413: "invalid_request_error",
            415: "invalid_request_error", 421: "invalid_request_error",
            429: "rate_limit_error"}.get(status, "server_error")
