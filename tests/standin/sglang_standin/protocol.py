"""What SGLang 0.5.23 accepts: its argv (argparse, exit 2 on unknown flags) and its request checks.

Encoded here on purpose, independently of sglang_engine.protocol, so a mistake there is caught, not mirrored.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

VERSION = "0.5.23"
SAMPLING_KEYS = {
    "max_new_tokens", "temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty",
    "repetition_penalty", "min_new_tokens", "stop", "stop_token_ids", "skip_special_tokens",
    "spaces_between_special_tokens", "ignore_eos", "n", "sampling_seed",
}
LORA_BACKENDS = ["triton", "csgmv", "ascend", "torch_native", "triton_v2"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sglang_standin")  # exits 2 on unknown flags, like SGLang
    a = p.add_argument
    a("--model-path", "--model", required=True)
    a("--tokenizer-path")
    a("--revision")
    a("--served-model-name")
    a("--host", default="127.0.0.1")
    a("--port", type=int, default=30000)
    a("--tp-size", "--tensor-parallel-size", type=int, default=1)
    a("--dtype", default="auto", choices=["auto", "half", "float16", "bfloat16", "float", "float32"])
    a("--log-level", default="info")
    a("--enable-metrics", action="store_true")
    a("--context-length", type=int)
    a("--mem-fraction-static", type=float)
    a("--max-running-requests", type=int)
    a("--download-dir")
    a("--chat-template")
    a("--random-seed", type=int)
    a("--trust-remote-code", action="store_true")
    a("--api-key")
    a("--enable-lora", action="store_true")
    a("--lora-paths", nargs="*")
    a("--max-lora-rank", type=int)
    a("--lora-target-modules", nargs="*")
    a("--max-loaded-loras", type=int)
    a("--max-loras-per-batch", type=int, default=8)
    a("--lora-backend", default="csgmv", choices=LORA_BACKENDS)
    a("--disable-radix-cache", action="store_true")
    a("--chunked-prefill-size", type=int)  # a harmless flag tests can pass through extraArgs
    args = p.parse_args(argv)
    shape_unknown = args.max_lora_rank is None or not args.lora_target_modules
    if args.enable_lora and not args.lora_paths and shape_unknown:
        p.error("--max-lora-rank and --lora-target-modules are required with --enable-lora and no "
                "--lora-paths")
    if args.max_loaded_loras is not None and args.max_loaded_loras < args.max_loras_per_batch:
        p.error("--max-loaded-loras must be >= --max-loras-per-batch")
    return args


class RequestError(Exception):
    """Rejected before streaming: HTTP 400."""


def validate_sampling(sp: dict[str, Any]) -> dict[str, Any]:
    """SGLang's SamplingParams checks: an unknown key (there is no `seed`) or a bad value -> HTTP 400."""
    unknown = sorted(set(sp) - SAMPLING_KEYS)
    if unknown:
        raise RequestError(f"SamplingParams.__init__() got an unexpected keyword argument '{unknown[0]}'")
    if sp.get("top_k", -1) == 0 or sp.get("top_k", -1) < -1:
        raise RequestError(f"top_k must be -1 (disable), or at least 1, got {sp['top_k']}.")
    if sp.get("temperature", 1.0) < 0:
        raise RequestError(f"temperature must be non-negative, got {sp['temperature']}.")
    if not 0 < sp.get("top_p", 1.0) <= 1:
        raise RequestError(f"top_p must be in (0, 1], got {sp['top_p']}.")
    if not 0 < sp.get("repetition_penalty", 1.0) <= 2:
        raise RequestError(f"repetition_penalty must be in (0, 2], got {sp['repetition_penalty']}.")
    if sp.get("max_new_tokens", 128) < 0:
        raise RequestError(f"max_new_tokens must be at least 0, got {sp['max_new_tokens']}.")
    stop = sp.get("stop")
    sp["stop"] = [stop] if isinstance(stop, str) else list(stop or [])
    if len(sp["stop"]) > 32:
        raise RequestError("stop: at most 32 stop strings")
    if sp.get("n", 1) != 1:
        raise RequestError("the stand-in supports n=1 only")
    return sp


@dataclass
class Job:
    rid: str
    input_ids: list[int]
    sp: dict[str, Any]
    adapter: str | None
    aborted: str | None = None  # why, once aborted
    output_ids: list[int] = field(default_factory=list)
