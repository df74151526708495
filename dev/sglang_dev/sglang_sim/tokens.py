"""The simulated scheduler's tokens: the model's real forward pass on CPU, or a synthetic source.

`ModelTokens` runs the model at --model-path with transformers (float32, one request per forward, a KV cache
per request), so greedy output equals the engine's transformers backend for the same prompt ids. LoRA
adapters (peft folders) are applied by forward hooks on the targeted projections: delta = B(A x) * alpha/r.
`SyntheticTokens` draws word-like token ids from a seeded generator: no forward pass, for throughput work.
Both honour temperature/top-k/top-p, seeds (`sampling_seed`, else the server's --random-seed stream), and
suppress stop tokens before `min_new_tokens`; adapters change what both produce.
"""

from __future__ import annotations

import json
import random
import zlib
from pathlib import Path
from typing import Any

import torch


class Sequence:
    """One request's token-source state (KV cache, pending token, random generator)."""

    def __init__(self, prompt: list[int], adapter: str | None, seed: int) -> None:
        self.prompt = prompt
        self.adapter = adapter
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = random.Random(seed)
        self.cache: Any = None
        self.logits: torch.Tensor | None = None
        self.pending: int | None = None


def sample(logits: torch.Tensor, sp: Any, generator: torch.Generator) -> int:
    """SGLang's sampling semantics on one row of logits (temperature < eps was normalised to top_k=1)."""
    if sp.top_k == 1:
        return int(torch.argmax(logits))
    logits = logits / max(sp.temperature, 1e-6)
    if 0 < sp.top_k < logits.numel():
        kth = torch.topk(logits, sp.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    probs = torch.softmax(logits, dim=-1)
    if sp.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        drop = torch.cumsum(sorted_p, 0) - sorted_p > sp.top_p
        probs[order[drop]] = 0.0
        probs = probs / probs.sum()
    if sp.min_p > 0:
        probs = probs.masked_fill(probs < sp.min_p * probs.max(), 0.0)
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator))


class LoraWeights:
    """A peft adapter folder: per-module (A, B) matrices and the alpha/r scale."""

    def __init__(self, path: str) -> None:
        from safetensors.torch import load_file

        config = json.loads((Path(path) / "adapter_config.json").read_text())
        self.rank = int(config["r"])
        self.scale = float(config.get("lora_alpha", self.rank)) / self.rank
        tensors = load_file(str(Path(path) / "adapter_model.safetensors"))
        self.modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for key, a in tensors.items():
            if ".lora_A." not in key:
                continue
            module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            self.modules[module] = (a.float(), b.float())


class ModelTokens:
    name = "model"

    def __init__(self, model_path: str, random_seed: int) -> None:
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(1)  # tiny matrices: more threads only contend on a 2-core machine
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        self.vocab_size = int(self.model.config.vocab_size)
        self.adapters: dict[str, LoraWeights] = {}
        self._active: LoraWeights | None = None
        self._hooked = False

    def load_adapter(self, lora_id: str, path: str) -> None:
        weights = LoraWeights(path)
        if not self._hooked:
            for name, module in self.model.named_modules():
                if isinstance(module, torch.nn.Linear):
                    module.register_forward_hook(self._hook(name))
            self._hooked = True
        self.adapters[lora_id] = weights

    def unload_adapter(self, lora_id: str) -> None:
        self.adapters.pop(lora_id, None)

    def _hook(self, name: str) -> Any:
        def add_delta(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> Any:
            active = self._active
            if active is None or name not in active.modules:
                return None
            a, b = active.modules[name]
            return out + (inputs[0] @ a.T) @ b.T * active.scale
        return add_delta

    def start(self, seq: Sequence) -> None:
        self._forward(seq, seq.prompt)

    def next_token(self, seq: Sequence, sp: Any, banned: list[int]) -> int:
        if seq.pending is not None:
            self._forward(seq, [seq.pending])
        assert seq.logits is not None
        logits = seq.logits.clone()
        if banned:
            logits[banned] = -float("inf")
        token = sample(logits, sp, seq.generator)
        seq.pending = token
        return token

    def logprobs(self, seq: Sequence, token: int, top: int) -> tuple[float, list[float], list[int]]:
        """The produced token's log-probability under the distribution it was drawn from (before
        temperature, as SGLang reports by default) and the `top` most likely tokens'."""
        assert seq.logits is not None
        logp = torch.log_softmax(seq.logits, dim=-1)
        values, ids = torch.topk(logp, top) if top > 0 else (logp[:0], logp[:0].long())
        return float(logp[token]), [float(v) for v in values], [int(i) for i in ids]

    def _forward(self, seq: Sequence, ids: list[int]) -> None:
        self._active = self.adapters.get(seq.adapter) if seq.adapter else None
        try:
            with torch.no_grad():
                out = self.model(input_ids=torch.tensor([ids]), past_key_values=seq.cache, use_cache=True)
        finally:
            self._active = None
        seq.cache = out.past_key_values
        seq.logits = out.logits[0, -1].float()

    def release(self, seq: Sequence) -> None:
        seq.cache = seq.logits = None


class SyntheticTokens:
    """Word-like tokens from a seeded generator: greedy output depends on the prompt and adapter only."""

    name = "synthetic"

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        words = []
        for token_id in range(min(vocab_size, 50_000)):
            text = tokenizer.decode([token_id])
            if text.strip().isalpha() and text.isascii():
                words.append(token_id)
        self.words = words or list(range(vocab_size))
        self.vocab_size = vocab_size
        self.adapters: dict[str, str] = {}

    def load_adapter(self, lora_id: str, path: str) -> None:
        self.adapters[lora_id] = path

    def unload_adapter(self, lora_id: str) -> None:
        self.adapters.pop(lora_id, None)

    def start(self, seq: Sequence) -> None:
        pass

    def next_token(self, seq: Sequence, sp: Any, banned: list[int]) -> int:
        if sp.top_k == 1:  # greedy: a function of the prompt, the adapter and the position
            if seq.pending is None:
                key = json.dumps([seq.prompt, self.adapters.get(seq.adapter or "")])
                seq.rng = random.Random(zlib.crc32(key.encode()))
        seq.pending = self.words[seq.rng.randrange(len(self.words))]
        return seq.pending

    def release(self, seq: Sequence) -> None:
        pass
