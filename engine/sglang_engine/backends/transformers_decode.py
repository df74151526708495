"""Pure pieces of the transformers backend's decode loop: token choice, detokenization, stop strings.

No threads, no model: each piece takes plain inputs, so each is tested on its own.
"""

from __future__ import annotations

from typing import Protocol

import torch

from sglang_engine.backends.base import SamplingParams

GREEDY_BELOW = 1e-6  # temperatures below this mean greedy, as in SGLang
# Detokenizing a token alone loses context for some tokenizers (SentencePiece's leading-space rule), so the
# last few prompt tokens seed the window; they are never emitted.
PROMPT_CONTEXT_TOKENS = 5
REPLACEMENT = "\ufffd"  # what decode() yields for an incomplete UTF-8 sequence


class Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


def choose_token(
    logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor, generator: torch.Generator | None,
) -> int:
    """The next token from one row of logits (float32, shape [vocab]); `seen` marks prompt and output ids.

    Repetition penalty as in transformers (divide positive scores, multiply negative ones); then greedy,
    or temperature, top-k and top-p (nucleus) sampling drawn from `generator` (a per-request seed).
    """
    if params.repetition_penalty != 1.0:
        penalty = params.repetition_penalty
        penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits = torch.where(seen, penalized, logits)
    if params.temperature < GREEDY_BELOW:
        return int(torch.argmax(logits))
    logits = logits / params.temperature
    if 0 < params.top_k < logits.numel():
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens before it already cover top_p; the first token always stays.
        drop = (torch.cumsum(probs, dim=-1) - probs) >= params.top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas, never splitting a multi-byte character.

    Decodes a short window (a few already-emitted tokens plus the new ones) and emits the part past what
    the window's head already produced, holding text back while it ends in an incomplete UTF-8 sequence.
    """

    def __init__(self, tokenizer: Decoder, prompt_ids: list[int], skip_special_tokens: bool) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._ids = list(prompt_ids[-PROMPT_CONTEXT_TOKENS:])
        self._prefix = 0  # window start
        self._read = len(self._ids)  # ids before this were emitted

    def _pending(self) -> str:
        head = self._tok.decode(self._ids[self._prefix:self._read], skip_special_tokens=self._skip)
        full = self._tok.decode(self._ids[self._prefix:], skip_special_tokens=self._skip)
        return full[len(head):]

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        delta = self._pending()
        if not delta or delta.endswith(REPLACEMENT):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return delta

    def flush(self) -> str:
        """Whatever is still held back (an incomplete sequence at the very end decodes to U+FFFD)."""
        if self._read == len(self._ids):
            return ""
        delta = self._pending()
        self._prefix, self._read = self._read, len(self._ids)
        return delta


class StopStrings:
    """Cuts the output at the first stop string; holds back text that may be the start of one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""

    def feed(self, delta: str) -> tuple[str, bool]:
        """(text safe to emit now, whether a stop string was hit: then the text ends before it)."""
        if not self._stops:
            return delta, False
        self._pending += delta
        hits = [i for i in (self._pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            out, self._pending = self._pending[:min(hits)], ""
            return out, True
        hold = max((k for s in self._stops for k in range(1, len(s)) if self._pending.endswith(s[:k])),
                   default=0)
        cut = len(self._pending) - hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out
