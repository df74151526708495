"""Chat templating with the model's own tokenizer: messages -> input_ids, once per request.

Both backends receive token ids (SGLang as `input_ids`), so the prompt the model sees is exactly what the
model's chat template makes, and the prompt length is known before generation (for max_length and the
context-length check). Nothing here runs per token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from sglang_engine.backends.base import BackendError
from sglang_engine.errors import invalid_request
from sglang_engine.settings import EngineSettings

log = logging.getLogger(__name__)

Role = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset(get_args(Role))


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    name: str | None = None
    tool_calls: tuple[dict[str, Any], ...] | None = None
    tool_call_id: str | None = None

    def to_template(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls:
            out["tool_calls"] = list(self.tool_calls)
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


def _text_content(content: Any, where: str) -> str:
    """A string, or OpenAI content parts of type text (joined). Other part types are refused by name."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            text = part.get("text") if isinstance(part, dict) and part.get("type") == "text" else None
            if not isinstance(text, str):
                raise invalid_request("Only text content parts are supported.", f"{where}.content[{i}]")
            texts.append(text)
        return "".join(texts)
    raise invalid_request("content must be a string or a list of text parts.", f"{where}.content")


def parse_messages(raw: Any) -> list[ChatMessage]:
    """Validate seed-API / OpenAI-style message dicts once; errors name `messages[i].field`."""
    if not isinstance(raw, list) or not raw:
        raise invalid_request("messages must be a non-empty list.", "messages")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if isinstance(m, ChatMessage):
            out.append(m)
            continue
        if not isinstance(m, dict):
            raise invalid_request("Each message must be an object.", where)
        role = m.get("role")
        if role == "developer":  # OpenAI's name for system instructions to newer models
            role = "system"
        if not isinstance(role, str) or role not in ROLES:
            raise invalid_request(
                f"Unknown role {role!r}; expected one of {sorted(ROLES)}.", f"{where}.role")
        for key in ("name", "tool_call_id"):
            if not isinstance(m.get(key), str | None):
                raise invalid_request(f"{key} must be a string.", f"{where}.{key}")
        tool_calls = m.get("tool_calls")
        if tool_calls is not None and not (
                isinstance(tool_calls, list) and all(isinstance(c, dict) for c in tool_calls)):
            raise invalid_request("tool_calls must be a list of objects.", f"{where}.tool_calls")
        out.append(ChatMessage(
            role=cast(Role, role), content=_text_content(m.get("content"), where), name=m.get("name"),
            tool_calls=tuple(tool_calls) if tool_calls else None, tool_call_id=m.get("tool_call_id"),
        ))
    return out


class ChatTemplater:
    """Wraps one tokenizer. `encode_chat` is synchronous: well under a millisecond for chat-sized prompts,
    seconds for megabytes (the engine runs large ones off the event loop, after `refuse_oversized`)."""

    def __init__(self, tokenizer: Any, context_length: int | None) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("The model's tokenizer has no chat template (set --chat-template).")
        self.tokenizer = tokenizer
        self.context_length = context_length
        # No token covers more characters than the vocabulary's longest entry (byte-level BPE entries are one
        # character per byte, so also at most that many text characters).
        self.longest_token_chars = max(map(len, tokenizer.get_vocab()), default=1)

    def refuse_oversized(self, messages: list[ChatMessage], system: str | None = None) -> int:
        """The prompt's text length in characters; a 400 if it cannot fit the context whatever the tokens
        (more characters than context_length tokens of the longest entry could hold). Costs a sum, not a
        tokenization, so a megabyte prompt for a small context is refused at once."""
        chars = sum(len(m.content) for m in messages) + len(system or "")
        bound = None if self.context_length is None else self.context_length * self.longest_token_chars
        if bound is not None and chars > bound:
            raise BackendError(
                f"This model's maximum context length is {self.context_length} tokens. However, your "
                f"messages are {chars} characters, more than that many tokens can hold (at most "
                f"{self.longest_token_chars} characters each). Please reduce the length of the messages.",
                status=400, type="invalid_request_error", param="messages", code="context_length_exceeded")
        return chars

    def encode_chat(
        self, messages: list[ChatMessage], system: str | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        conversation = [m.to_template() for m in messages]
        if system:
            conversation.insert(0, {"role": "system", "content": system})
        try:
            ids = self.tokenizer.apply_chat_template(
                conversation, tools=tools or None, add_generation_prompt=True, tokenize=True,
                return_dict=False,
            )
        except Exception as exc:  # templates raise on conversations they refuse (jinja `raise_exception`)
            raise invalid_request(f"The chat template refused these messages: {exc}", "messages") from None
        return list(ids)


def _context_length_of(
    model_path: str, revision: str | None, settings: EngineSettings, tokenizer: Any,
) -> int | None:
    if settings.context_length:
        return settings.context_length
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            model_path, revision=revision, trust_remote_code=settings.trust_remote_code)
    except Exception as exc:  # no config.json (tokenizer-only path): fall back to the tokenizer's limit
        log.warning("could not read the model config for its context length: %s", exc)
        config = None
    for attr in ("max_position_embeddings", "max_sequence_length", "seq_length", "n_positions"):
        value = getattr(getattr(config, "text_config", config), attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**7 else None


def resolve_chat_template(value: str) -> str:
    """`--chat-template` is a Jinja template, inline or in a file given by an absolute path.

    The engine templates every chat itself (SGLang receives token ids), so SGLang's named templates
    (`chatml`, ...) would silently not apply: they are refused with a message saying what to give instead.
    """
    if "{{" in value or "{%" in value:
        return value
    if value.startswith("/"):
        try:
            return Path(value).read_text()
        except OSError as exc:
            raise ValueError(
                f"--chat-template {value}: cannot read the template file ({exc.strerror})") from None
    raise ValueError(
        f"--chat-template {value[:80]!r} is neither a Jinja template nor an absolute path to one "
        "(the engine applies the template itself; SGLang's named templates do not apply)")


def load_templater(settings: EngineSettings) -> ChatTemplater:
    """Blocking (file and maybe network I/O): call from a worker thread."""
    from transformers import AutoTokenizer

    from sglang_engine.tiny import resolve_model_path

    path = resolve_model_path(settings)
    if path.startswith("/") and not Path(path).is_dir():
        raise FileNotFoundError(f"model path {path} does not exist (or is not a folder)")
    revision = None if path != settings.model else settings.revision
    tokenizer = AutoTokenizer.from_pretrained(
        path, revision=revision, trust_remote_code=settings.trust_remote_code)
    if settings.chat_template:
        tokenizer.chat_template = resolve_chat_template(settings.chat_template)
    return ChatTemplater(tokenizer, _context_length_of(path, revision, settings, tokenizer))
