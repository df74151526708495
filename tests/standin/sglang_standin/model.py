"""The stand-in's tokens: the model at --model-path (transformers) with peft LoRA adapters (a test double)."""

from __future__ import annotations

from typing import Any

from sglang_standin.protocol import Job


class Model:
    """The tiny model plus peft adapters; every method runs in the single worker thread."""

    def __init__(self, path: str, random_seed: int | None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        torch.set_num_threads(1)  # tiny matrices: more threads only contend with the tests on 2 cores
        self.tok = AutoTokenizer.from_pretrained(path)
        self.base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.peft: Any = None
        eos = self.base.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.context_length = int(self.base.config.max_position_embeddings)
        self.seed_rng = torch.Generator().manual_seed(random_seed or 0)

    def load(self, name: str, path: str) -> None:
        from peft import PeftModel

        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base, path, adapter_name=name).eval()
        else:
            self.peft.load_adapter(path, adapter_name=name)

    def unload(self, name: str, remaining: int) -> None:
        if remaining == 0:  # peft cannot delete its last adapter; drop the wrapper instead
            self.base = self.peft.unload()
            self.peft = None
        else:
            if name in self.peft.active_adapters:
                self.peft.set_adapter(next(n for n in self.peft.peft_config if n != name))
            self.peft.delete_adapter(name)

    def next_token(self, job: Job, gen: Any) -> int:
        torch = self.torch
        ids = torch.tensor([job.input_ids + job.output_ids])
        with torch.no_grad():
            if job.adapter is not None:
                self.peft.set_adapter(job.adapter)
                logits = self.peft(input_ids=ids).logits[0, -1]
            elif self.peft is not None:
                with self.peft.disable_adapter():
                    logits = self.peft(input_ids=ids).logits[0, -1]
            else:
                logits = self.base(input_ids=ids).logits[0, -1]
        sp = job.sp
        penalty = sp.get("repetition_penalty", 1.0)
        if penalty != 1.0 and job.output_ids:
            seen = torch.tensor(sorted(set(job.input_ids + job.output_ids)))
            vals = logits[seen]
            logits[seen] = torch.where(vals > 0, vals / penalty, vals * penalty)
        if sp.get("ignore_eos"):
            logits[list(self.eos_ids)] = -float("inf")
        temperature = sp.get("temperature", 1.0)
        if temperature < 1e-6:
            return int(torch.argmax(logits))
        logits = logits / temperature
        top_k = sp.get("top_k", -1)
        if top_k > 0:
            kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
            logits[logits < kth] = -float("inf")
        probs = torch.softmax(logits, dim=-1)
        top_p = sp.get("top_p", 1.0)
        if top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            drop = torch.cumsum(sorted_p, 0) - sorted_p > top_p
            probs[order[drop]] = 0.0
            probs = probs / probs.sum()
        return int(torch.multinomial(probs, 1, generator=gen))

    def generator(self, seed: int | None) -> Any:
        if seed is None:  # unseeded requests draw from the server's --random-seed stream
            seed = int(self.torch.randint(0, 2**31 - 1, (1,), generator=self.seed_rng))
        return self.torch.Generator().manual_seed(seed)
