"""`builtin:tiny`: a tiny Llama-style model and seeded LoRA adapters the engine builds itself, offline.

Demos and tests need a model that loads through the ordinary `from_pretrained` path without any
download. Everything here is deterministic: the same version builds the same files, byte for byte.
A build happens once per cache folder; it runs in a private temporary folder that is then renamed
into place, so two processes racing to build never see a half-written model.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sglang_engine.protocol import TINY_MODEL_SOURCE

if TYPE_CHECKING:
    from sglang_engine.settings import EngineSettings

log = logging.getLogger(__name__)

# Bump when anything below changes what gets built: the folder name carries it, so a change rebuilds.
TINY_VERSION = "v3"
TINY_LORA_PREFIX = "builtin:tiny-lora-"

BOS, EOS, PAD = "<s>", "</s>", "<|pad|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, BOS, EOS, IM_START, IM_END)
VOCAB_SIZE = 768
MODEL_SEED = 1234
# A random init with the usual 0.02 std gives nearly flat logits, and greedy decoding then repeats one
# token forever. A wider init makes the next token depend on the context, so greedy output varies with
# the prompt and a LoRA adapter visibly changes it.
INIT_STD = 0.25
# The end-of-turn rows of the output layer are scaled down so that a random model rarely ends a reply at
# once (tests need a few tokens to compare); it can still end one, which keeps the eos path reachable.
EOS_LOGIT_SCALE = 0.3
# Lone bytes that are not text on their own (halves of multi-byte characters, control bytes) are nearly
# ruled out, so a demo's reply reads as words and pieces of words rather than replacement marks.
NON_TEXT_LOGIT_SCALE = 0.02
LORA_RANK = 8
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_B_STD = 0.5
# Builds seed torch's global generator: two threads of one process must not build at the same time.
# (Processes race safely: see _build_once.)
_BUILD_LOCK = threading.Lock()

# Trained into a byte-level BPE, so tokens are multi-character for common text and every string,
# including multi-byte text, round-trips through bytes.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog sleeps in the sun while the fox runs.
Hello! How are you today? I am fine, thank you. What would you like to talk about?
You are a helpful assistant. Answer the question briefly and clearly.
The model serves requests from many users at the same time, streaming tokens as they are made.
A Kubernetes operator watches custom resources and reconciles them into pods, services and config maps.
SGLang runs large language models on GPUs with a fast scheduler and a radix cache for shared prefixes.
LoRA adapters change a few low-rank matrices, so many adapters can share one base model in memory.
def add(a, b):\n    return a + b\n\nprint(add(2, 3))
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
The weather in Paris is sunny and warm; in Berlin it is cloudy and cold.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2048 3.14159
système, café, naïve, déjà vu, über, Straße, señor, año.
日本語のテキスト、中文文本、한국어 텍스트。
Emoji: 🙂 🚀 ✨ 🎉
Once upon a time there was a small model that wanted to speak. It learned a few words
and said them again and again.
Questions and answers, requests and responses, prompts and completions: the engine turns one into the other.
The cat sat on the mat. The bird sang in the tree. The children played in the garden until the evening.
Please write a short poem about the sea, the wind, the stars and the moon over the quiet water.
To install the package, run the command below and then start the server on port 8000.
Tokens flow from the model to the client one by one; the client prints each piece as soon as it arrives.
Every request has a prompt, a temperature, a top p value, a maximum number of new tokens and stop strings.
The operator creates a deployment, a service and a disruption budget for every model that users declare.
Good morning, good evening, good night. Thank you very much, you are welcome, see you tomorrow.
It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.
Small models are fast to build and easy to test, but what they say makes little sense.
class Server:\n    def __init__(self, host, port):\n        self.host = host\n        self.port = port
for i in range(10):\n    if i % 2 == 0:\n        print("even", i)\n    else:\n        print("odd", i)
Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday; January, February, March, April, May, June.
red, orange, yellow, green, blue, indigo, violet; one, two, three, four, five, six, seven, eight, nine, ten.
"""

CHAT_TEMPLATE = r"""
{%- macro text(content) -%}
{%- if content is string -%}{{ content }}
{%- elif content is not none -%}
{%- for part in content -%}{%- if part.type == 'text' -%}{{ part.text }}{%- endif -%}{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- if messages and messages[0].role in ['system', 'developer'] -%}
{%- set system = text(messages[0].content) -%}{%- set rest = messages[1:] -%}
{%- else -%}
{%- set system = '' -%}{%- set rest = messages -%}
{%- endif -%}
{%- if system or tools -%}
{{- '<|im_start|>system\n' + system -}}
{%- if tools -%}
{{- ('\n\n' if system else '') + '# Tools\nTo call a tool, answer' -}}
{{- ' <tool_call>{"name": ..., "arguments": {...}}</tool_call>. Tools:' -}}
{%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in rest -%}
{%- if message.role not in ['user', 'assistant', 'tool', 'system', 'developer'] -%}
{{- raise_exception('unknown role: ' + message.role) -}}
{%- endif -%}
{%- set role = 'system' if message.role == 'developer' else message.role -%}
{{- '<|im_start|>' + role + '\n' + text(message.content) -}}
{%- if message.role == 'assistant' and message.tool_calls -%}
{%- for call in message.tool_calls -%}
{%- set fn = call.function if call.function is defined else call -%}
{%- set args = fn.arguments if fn.arguments is string else (fn.arguments | tojson) -%}
{{- '\n<tool_call>{"name": ' + (fn.name | tojson) + ', "arguments": ' + args + '}</tool_call>' -}}
{%- endfor -%}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""


@dataclass(frozen=True)
class BuiltinSource:
    """A parsed `builtin:` source: the tiny model, or a seeded tiny LoRA adapter."""

    kind: str  # "model" or "lora"
    seed: int | None = None


_LORA_RE = re.compile(r"builtin:tiny-lora-(\d{1,9})")


def parse_builtin_source(source: str) -> BuiltinSource | None:
    """`builtin:tiny` -> model, `builtin:tiny-lora-<seed>` -> lora, unknown builtin: ValueError, else None."""
    if not source.startswith("builtin:"):
        return None
    if source == TINY_MODEL_SOURCE:
        return BuiltinSource("model")
    match = _LORA_RE.fullmatch(source)
    if match:
        return BuiltinSource("lora", int(match.group(1)))
    raise ValueError(
        f"unknown builtin source {source!r}: expected {TINY_MODEL_SOURCE} or {TINY_LORA_PREFIX}<seed>"
    )


def tiny_model_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / f"tiny-{TINY_VERSION}"


def tiny_lora_dir(cache_dir: Path, seed: int) -> Path:
    return Path(cache_dir) / f"tiny-lora-{seed}-{TINY_VERSION}"


def _build_once(final: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp)` in a private folder next to `final`, then rename it into place (first one wins)."""
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
            log.info("another process built %s first; using it", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def build_tiny_tokenizer():  # -> PreTrainedTokenizerFast
    """A byte-level BPE trained on the embedded corpus, with ChatML special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    core.train_from_iterator(_CORPUS.splitlines(keepends=True), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=IM_END, pad_token=PAD, unk_token=None,
        additional_special_tokens=[IM_START, EOS], model_max_length=2048, clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _build_model_files(out: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = build_tiny_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
        initializer_range=INIT_STD, tie_word_embeddings=False,
        bos_token_id=ids[BOS], eos_token_id=[ids[IM_END], ids[EOS]], pad_token_id=ids[PAD],
    )
    torch.manual_seed(MODEL_SEED)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for token in (IM_END, EOS, PAD, BOS, IM_START):
            model.lm_head.weight[ids[token]] *= EOS_LOGIT_SCALE
        for token_id in range(len(tok)):
            piece = tok.decode([token_id])
            if "\ufffd" in piece or not all(c.isprintable() or c in "\n\t" for c in piece):
                model.lm_head.weight[token_id] *= NON_TEXT_LOGIT_SCALE
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS], eos_token_id=[ids[IM_END], ids[EOS]], pad_token_id=ids[PAD], do_sample=False,
    )
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def ensure_tiny_model(cache_dir: Path) -> Path:
    """The folder of the tiny model under `cache_dir`, built on first use (a few seconds on CPU)."""
    final = tiny_model_dir(cache_dir)
    if final.is_dir():
        return final
    with _BUILD_LOCK:
        log.info("building %s into %s", TINY_MODEL_SOURCE, final)
        return _build_once(final, _build_model_files)


def ensure_tiny_lora(cache_dir: Path, seed: int, base_path: Path) -> Path:
    """The folder of the seeded LoRA adapter `builtin:tiny-lora-<seed>` for the model at `base_path`."""
    final = tiny_lora_dir(cache_dir, seed)

    def build(out: Path) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        config = LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, target_modules=list(LORA_TARGETS),
                            lora_dropout=0.0, init_lora_weights=True, task_type="CAUSAL_LM")
        model = get_peft_model(base, config)
        # peft starts B at zero (the adapter is a no-op); a seeded non-zero B makes it change the output.
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_A" in name or "lora_B" in name:
                    std = LORA_B_STD if "lora_B" in name else 1.0 / LORA_RANK
                    param.copy_(torch.randn(param.shape, generator=gen) * std)
        model.peft_config["default"].base_model_name_or_path = TINY_MODEL_SOURCE
        model.save_pretrained(str(out), safe_serialization=True, save_embedding_layers=False)
        (out / "README.md").unlink(missing_ok=True)  # peft's model card embeds run details: not deterministic

    if final.is_dir():
        return final
    with _BUILD_LOCK:
        log.info("building %s%d into %s", TINY_LORA_PREFIX, seed, final)
        return _build_once(final, build)


def resolve_builtin_adapter(source: str, cache_dir: Path) -> Path | None:
    """The local folder for a `builtin:tiny-lora-<seed>` source (building it), or None for other sources."""
    parsed = parse_builtin_source(source)
    if parsed is None:
        return None
    if parsed.kind != "lora" or parsed.seed is None:
        raise ValueError(f"{source!r} is a model, not an adapter")
    return ensure_tiny_lora(cache_dir, parsed.seed, ensure_tiny_model(cache_dir))


def resolve_model_path(settings: EngineSettings) -> str:
    """`builtin:tiny` -> the built folder; a Hugging Face repo id the engine downloaded (download.py) -> its
    cached snapshot folder; any other model string unchanged (a path, or a repo id not downloaded yet)."""
    parsed = parse_builtin_source(settings.model)
    if parsed is None:
        from sglang_engine.download import is_hub_source, local_snapshot

        if is_hub_source(settings.model):
            local = local_snapshot(settings.model, settings.revision, settings.download_dir)
            if local is not None:
                return str(local)
        return settings.model
    if parsed.kind != "model":
        raise ValueError(f"--model {settings.model!r} is an adapter source, not a model")
    return str(ensure_tiny_model(settings.cache_dir))
