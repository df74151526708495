"""Every SGLang wire fact the engine relies on, in one place (read from SGLang 0.5.23's source).

Dependency-free on purpose (standard library plus the backend dataclasses): the operator imports
`ENGINE_OWNED_FLAGS` / `refuse_owned_flags` to validate `engine.extraArgs` without aiohttp or torch.

Pure functions only: `build_sglang_argv` (the launch command), `build_generate_body` (POST /generate),
`parse_stream_event` (one SSE line -> a delta chunk) and the error mappers. The subprocess and HTTP
plumbing that uses them lives in `backends/sglang_backend.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sglang_engine.backends.base import BackendError, FinishReason, GenerationChunk, GenerationRequest

if TYPE_CHECKING:
    from sglang_engine.settings import EngineSettings

SGLANG_VERSION = "0.5.23"
DEFAULT_SGLANG_MODULE = "sglang.launch_server"
# SGLang listens inside the pod only; the engine is its sole client.
SGLANG_HOST = "127.0.0.1"

# Flags whose value the engine derives from its own settings. `extraArgs` may not set them (in either
# `--flag value` or `--flag=value` form): a second value would silently win over the CR's typed field
# (argparse keeps the last one) or break the engine's assumptions (host, port, LoRA bookkeeping).
# Aliases SGLang's parser accepts for the same destination are listed too.
ENGINE_OWNED_FLAGS: frozenset[str] = frozenset({
    "--model-path", "--model",
    "--tokenizer-path",
    "--revision",
    "--served-model-name",
    "--tp-size", "--tensor-parallel-size",
    "--mem-fraction-static",
    "--context-length",
    "--dtype",
    "--host",
    "--port",
    "--api-key",
    "--download-dir",
    "--trust-remote-code",
    "--chat-template",
    "--tool-call-parser",
    "--reasoning-parser",
    "--log-level",
    "--enable-metrics",
    "--max-running-requests",
    "--random-seed",
    "--enable-lora",
    "--lora-paths",
    "--max-loaded-loras",
    "--max-lora-rank",
    "--lora-target-modules",
    "--max-loras-per-batch",  # derived from maxLoadedAdapters; a larger value makes SGLang refuse to start
    # These change what /generate streams (`text` as a delta, or no text at all): the relay reads cumulative
    # text, so letting extraArgs toggle them would silently corrupt every answer.
    "--incremental-streaming-output",
    "--skip-tokenizer-init",
    # SGLang merges a YAML file's options into argv before parsing: through it, every flag above (api_key,
    # trust_remote_code, ...) could be set again, and a store_true flag it sets cannot be unset after.
    "--config",
    # Multi-node: the engine derives them from LeaderWorkerSet's environment (MULTI-NODE below).
    "--nnodes",
    "--node-rank",
    "--dist-init-addr", "--nccl-init-addr",
})

# SGLang 0.5.23's `--tool-call-parser` and `--reasoning-parser` choices, as its own parser lists them
# ("auto" included); tests/engine/test_sglang_argv.py compares them with SGLang's parser in the side venv.
TOOL_CALL_PARSERS: tuple[str, ...] = (
    "auto", "apertus2509", "beam", "cohere_command4", "deepseekv3", "deepseekv31", "deepseekv32",
    "deepseekv4", "deepseekv41", "dots", "glm", "glm45", "glm47", "gpt-oss", "k2_horizon", "kimi_k2",
    "kimi_k3", "lfm2", "ling3", "llama3", "mimo", "minicpm5", "mistral", "muse", "poolside_v1", "pythonic",
    "qwen", "qwen25", "qwen3_coder", "spark25", "step3", "step3p5", "minimax-m2", "minimax-m3", "nanbeige",
    "trinity", "interns1", "hermes", "hunyuan", "gigachat3", "gigachat35", "gemma4", "inkling", "iquest_q1",
    "response_template",
)
REASONING_PARSERS: tuple[str, ...] = (
    "auto", "apertus2509", "beam", "deepseek-r1", "deepseek-v3", "deepseek-v4", "deepseek-v41", "dots",
    "glm45", "ling3", "hunyuan", "gpt-oss", "k2_horizon", "kimi", "kimi_k2", "kimi_k3", "mimo", "muse",
    "poolside_v1", "qwen3", "qwen3-thinking", "minimax", "minimax-append-think", "minimax-m3", "nanbeige",
    "step3", "step3p5", "mistral", "nemotron_3", "granite_thinking_parser", "interns1", "gemma4", "inkling",
    "iquest_q1", "cohere_command4", "gigachat35", "response_template",
)
VALID_DTYPES: frozenset[str] = frozenset({"auto", "half", "float16", "bfloat16", "float", "float32"})
# `flashinfer` was removed: SGLang's parser exits 2 on it.
LORA_BACKENDS: frozenset[str] = frozenset({"triton", "csgmv", "ascend", "torch_native", "triton_v2"})
# The only keys SGLang accepts in `sampling_params`; any other key is an HTTP 400 (there is no `seed`).
SAMPLING_KEYS: frozenset[str] = frozenset({
    "max_new_tokens", "temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty",
    "repetition_penalty", "min_new_tokens", "stop", "stop_token_ids", "skip_special_tokens",
    "spaces_between_special_tokens", "ignore_eos", "n", "sampling_seed",
})
FINISH_TYPES: frozenset[str] = frozenset({"stop", "length", "abort"})
MAX_STOP_STRINGS = 32
DEFAULT_MAX_LORAS_PER_BATCH = 8

# When LoRA is enabled with no initial adapter SGLang cannot infer the adapter pool's shape, so
# `--max-lora-rank` and `--lora-target-modules` become required. Rank 64 covers the ranks adapters are
# commonly trained with (8-64) at a bounded pool size; `all` lets an adapter target any projection, so a
# runtime load never fails because the pool was shaped for other modules. Both can be overridden.
DEFAULT_MAX_LORA_RANK = 64
DEFAULT_LORA_TARGET_MODULES: tuple[str, ...] = ("all",)

# ------------------------------------------------------------------------------------------ multi-node
# One model over several nodes (SGLang `--nnodes N --node-rank i --dist-init-addr HOST:PORT`): every node runs
# its share of the tensor-parallel ranks; node 0 (the leader) alone runs the tokenizer and the HTTP API, the
# others a dummy health server (/health, no /ready) until the group stops. The operator runs each group as a
# LeaderWorkerSet, whose pod webhook gives every container these variables (sigs.k8s.io/lws,
# api/leaderworkerset/v1: LwsLeaderAddress, LwsGroupSize, LwsWorkerIndex).
LWS_LEADER_ADDRESS_ENV = "LWS_LEADER_ADDRESS"  # the leader pod's DNS name (<lws>-<group>.<lws>.<namespace>)
LWS_GROUP_SIZE_ENV = "LWS_GROUP_SIZE"  # pods per group (= nodes)
LWS_WORKER_INDEX_ENV = "LWS_WORKER_INDEX"  # 0 for the leader, 1..N-1 for the workers (= SGLang's node rank)
# The leader's port for SGLang's distributed init (torch.distributed's store); SGLang derives a few more
# ports right above it on every node. The operator declares it on the pods.
DIST_INIT_PORT = 20000
# On node ranks >= 1 SGLang serves only this (200 once its schedulers are up); readiness there.
WORKER_HEALTH_PATH = "/health"

# Endpoints (paths on SGLang's loopback server).
# Readiness: cheap, 503 until up, while paused and while shutting down. NOT /health: in 0.5.23 that is
# /health_generate, which submits a one-token generation and answers after at least a second.
READY_PATH = "/ready"
GENERATE_PATH = "/generate"
SERVER_INFO_PATH = "/server_info"
ABORT_PATH = "/abort_request"
LOAD_LORA_PATH = "/load_lora_adapter"
UNLOAD_LORA_PATH = "/unload_lora_adapter"


# -------------------------------------------------------------------------------------------- sources

# The forms a model or adapter source may take, as anchored patterns in the common subset of Python's `re`
# and RE2 (CEL's `matches`): the CRD's CEL rules use these exact strings (tests/operator/test_source_rules.py
# compares), the operator's typed spec and the engine match with them. Anything else (`https://`, `s3://`,
# `builtin:other`, a relative path) can never load, so it is refused when the CR is applied.
TINY_MODEL_SOURCE = "builtin:tiny"
PVC_SOURCE_PATTERN = r"^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+$"
HUB_ADAPTER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$"  # org/name
HUB_MODEL_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$"  # or a bare name
TINY_LORA_PATTERN = r"^builtin:tiny-lora-[0-9]{1,9}$"
DOTDOT_PATTERN = r"(^|/)\.\.(/|$)"
MODEL_SOURCE_FORMS = ("a Hugging Face repo id (org/name), pvc://<claim>/<path>, an absolute path or "
                      "builtin:tiny (URLs such as https:// or s3:// are not supported)")
ADAPTER_SOURCE_FORMS = ("a Hugging Face repo id (org/name), pvc://<claim>/<path>, an absolute path or "
                        "builtin:tiny-lora-<integer> (URLs such as https:// or s3:// are not supported)")


def source_problem(source: str, *, adapter: bool) -> str | None:
    """Why `source` can never load as a model (adapter=False) or an adapter, else None.

    The CRD's CEL rules say the same (with the value quoted first); `builtin:tiny-lora-<n>` additionally needs
    the model `builtin:tiny`, a cross-field rule checked where both are known."""
    def full(pattern: str) -> bool:  # RE2's `$` is the end of the text; Python's also allows a final newline
        return re.fullmatch(pattern.removeprefix("^").removesuffix("$"), source) is not None

    if re.search(DOTDOT_PATTERN, source):
        return "must not contain '..' path segments"
    if source.startswith("pvc://"):
        return None if full(PVC_SOURCE_PATTERN) else \
            "pvc:// sources must be pvc://<claim>/<path> with a valid claim name"
    if source.startswith("/"):
        return None
    if adapter and (full(TINY_LORA_PATTERN) or full(HUB_ADAPTER_PATTERN)):
        return None
    if not adapter and (source == TINY_MODEL_SOURCE or full(HUB_MODEL_PATTERN)):
        return None
    kind = "an adapter" if adapter else "a model"
    return f"{source!r} is not {kind} source: use {ADAPTER_SOURCE_FORMS if adapter else MODEL_SOURCE_FORMS}"


# ------------------------------------------------------------------------------------- last words

# What the engine writes to its termination message file when it stops before serving: the kubelet copies the
# file into the pod's status (lastState.terminated.message), where the operator reads the leading reason.
TERMINATION_LOG = "/dev/termination-log"
EXIT_MODEL_LOAD_FAILED = "ModelLoadFailed"  # the backend could not load the model (download, path, memory)
EXIT_STARTUP_INTERRUPTED = "StartupInterrupted"  # stopped by a signal while still loading (startup probe)


# ---------------------------------------------------------------------------------------- model loading

# The `loading` object of the engine's GET /status, which the operator reads from every pod of the current
# revision (ready or not) and summarises on the model (status.loading, the Progress printer column). Phases in
# the order a pod goes through them; `Failed` carries a reason from LOAD_FAILURES and whether it is permanent
# (the engine waits for a fix rather than retrying: a new spec or Secret means a new pod anyway).
PHASE_STARTING = "Starting"
PHASE_DOWNLOADING = "Downloading"
PHASE_LOADING_WEIGHTS = "LoadingWeights"
PHASE_WARMING_UP = "WarmingUp"
PHASE_SERVING = "Serving"
PHASE_FAILED = "Failed"
LOAD_PHASES = (PHASE_STARTING, PHASE_DOWNLOADING, PHASE_LOADING_WEIGHTS, PHASE_WARMING_UP, PHASE_SERVING,
               PHASE_FAILED)
# Why a download failed: the first four wait for a fix (a full disk is retried slowly); the last two are
# retried with backoff (a file that does not hash to the Hub's value, the hub down, the network).
FAIL_REPO_NOT_FOUND = "RepositoryNotFound"
FAIL_REVISION_NOT_FOUND = "RevisionNotFound"
FAIL_GATED = "GatedRepo"
FAIL_DISK_FULL = "DiskFull"
FAIL_CHECKSUM = "ChecksumMismatch"
FAIL_DOWNLOAD = "DownloadFailed"
LOAD_FAILURES = (FAIL_REPO_NOT_FOUND, FAIL_REVISION_NOT_FOUND, FAIL_GATED, FAIL_DISK_FULL, FAIL_CHECKSUM,
                 FAIL_DOWNLOAD)


@dataclass(frozen=True)
class LoadProgress:
    """Where one engine is in loading its model (GET /status `loading`, camelCase on the wire)."""

    phase: str = PHASE_STARTING
    bytes_done: int = 0
    bytes_total: int | None = None
    files_done: int = 0
    files_total: int | None = None
    bytes_per_second: float | None = None
    eta_seconds: float | None = None
    shards_done: int | None = None  # LoadingWeights: checkpoint shards loaded, when the loader says
    shards_total: int | None = None
    reason: str | None = None  # Failed: one of LOAD_FAILURES
    permanent: bool = False  # Failed: waits for a fix (no retry)
    message: str = ""  # what is happening now, or why it failed

    _WIRE = (("phase", "phase"), ("bytes_done", "bytesDone"), ("bytes_total", "bytesTotal"),
             ("files_done", "filesDone"), ("files_total", "filesTotal"),
             ("bytes_per_second", "bytesPerSecond"), ("eta_seconds", "etaSeconds"),
             ("shards_done", "shardsDone"), ("shards_total", "shardsTotal"), ("reason", "reason"),
             ("permanent", "permanent"), ("message", "message"))

    def to_json(self) -> dict[str, Any]:
        return {wire: getattr(self, attr) for attr, wire in self._WIRE}

    @classmethod
    def from_json(cls, obj: object) -> LoadProgress | None:
        """Parse the wire form (untrusted: the operator reads it from pods); None when it is not one."""
        if not isinstance(obj, dict) or obj.get("phase") not in LOAD_PHASES:
            return None
        kw: dict[str, Any] = {}
        for attr, wire in cls._WIRE:
            value = obj.get(wire)
            default = cls.__dataclass_fields__[attr].default
            if attr in ("phase", "message", "reason"):
                ok = isinstance(value, str)
                value = value[:500] if isinstance(value, str) else value
            elif attr == "permanent":
                ok = isinstance(value, bool)
            elif attr in ("bytes_per_second", "eta_seconds"):
                ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            else:
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            kw[attr] = value if ok else default
        return cls(**kw)

    def fraction(self) -> float | None:
        """0..1 through the current phase, when it is known."""
        if self.phase == PHASE_DOWNLOADING and self.bytes_total:
            return min(1.0, self.bytes_done / self.bytes_total)
        if self.phase == PHASE_LOADING_WEIGHTS and self.shards_total:
            return min(1.0, (self.shards_done or 0) / self.shards_total)
        return None

    def rank(self) -> tuple[int, float]:
        """Sorts the slowest replica first: a failed one (it may never finish), then the earliest phase, then
        the least done in it."""
        if self.phase == PHASE_FAILED:
            return -1, 0.0
        return LOAD_PHASES.index(self.phase), self.fraction() or 0.0

    def summary(self) -> str:
        """One line for people: `Downloading 43% (6.9/16 GB, ~4m)`, `LoadingWeights 3/8 shards`, ..."""
        if self.phase == PHASE_FAILED:
            return f"Failed ({self.reason}): {self.message}" if self.reason else f"Failed: {self.message}"
        fraction = self.fraction()
        if self.phase == PHASE_DOWNLOADING and fraction is not None and self.bytes_total:
            details = [human_bytes_pair(self.bytes_done, self.bytes_total)]
            if self.eta_seconds is not None and self.bytes_done < self.bytes_total:
                details.append(f"~{human_duration(self.eta_seconds)}")
            return f"{self.phase} {int(fraction * 100)}% ({', '.join(details)})"
        if self.phase == PHASE_LOADING_WEIGHTS and self.shards_total:
            return f"{self.phase} {self.shards_done or 0}/{self.shards_total} shards"
        return self.phase


# SGLang's own startup output (0.5.23: model_runner.py logs "Load weight begin/end", weight_utils.py draws a
# tqdm bar per checkpoint format), read for the LoadingWeights phase and its shard count.
LOAD_WEIGHT_BEGIN = "Load weight begin"
LOAD_WEIGHT_END = "Load weight end"
_SHARDS = re.compile(r"Loading [\w ]*checkpoint shards:\s*\d+% Completed \| (\d+)/(\d+)")


def parse_load_line(line: str) -> tuple[str, int | None, int | None] | None:
    """(phase, shards loaded, shards in all) an SGLang output line shows, else None: LoadingWeights from
    "Load weight begin" and each shard bar update, WarmingUp from "Load weight end" (CUDA graphs and the
    warm-up request follow)."""
    if LOAD_WEIGHT_END in line:
        return PHASE_WARMING_UP, None, None
    if LOAD_WEIGHT_BEGIN in line:
        return PHASE_LOADING_WEIGHTS, None, None
    shards = _SHARDS.search(line)
    if shards:
        return PHASE_LOADING_WEIGHTS, int(shards.group(1)), int(shards.group(2))
    return None


_UNITS = ((10**12, "TB"), (10**9, "GB"), (10**6, "MB"), (10**3, "kB"))


def _scaled(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0") if value < 100 else f"{value:.0f}"


def human_bytes_pair(done: int, total: int) -> str:
    """`6.9/16 GB`: both in the total's unit (decimal, as the Hub shows sizes)."""
    scale, unit = next(((s, u) for s, u in _UNITS if total >= s), (1, "B"))
    return f"{_scaled(done / scale)}/{_scaled(total / scale)} {unit}"


def human_duration(seconds: float) -> str:
    """`45s`, `4m`, `1h20m` (an estimate: no more precision than that)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{round(s / 60)}m"
    hours, minutes = divmod(round(s / 60), 60)
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


# ----------------------------------------------------------------------------------------------- argv

def owned_flag_of(arg: str) -> str | None:
    """The owned flag `arg` sets (`--port`, `--port=1`, or an argparse abbreviation like `--por`), else None.

    SGLang's parser accepts unambiguous prefixes of long options, so an abbreviation of an owned flag
    would set it too.
    """
    if not arg.startswith("--") or arg == "--":
        return None
    name = arg.split("=", 1)[0]
    if name in ENGINE_OWNED_FLAGS:
        return name
    for flag in sorted(ENGINE_OWNED_FLAGS):
        if flag.startswith(name) and len(name) > 2:
            return flag
    return None


def refuse_owned_flags(extra_args: Iterable[str]) -> None:
    """Raise ValueError naming the first extra argument that sets a flag the engine owns, or a LoRA backend
    SGLang would reject (`--lora-backend flashinfer`)."""
    args = list(extra_args)
    for i, arg in enumerate(args):
        flag = owned_flag_of(arg)
        if flag is not None:
            shown = arg.split("=", 1)[0]
            via = "" if shown == flag else f" (abbreviates {flag})"
            raise ValueError(f"extraArgs: {shown}{via} is set by the engine from its own settings; "
                             "use the typed field instead")
        if arg.split("=", 1)[0] == "--lora-backend":
            value = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else "")
            if value not in LORA_BACKENDS:
                raise ValueError(
                    f"extraArgs: --lora-backend {value!r} is not one of {sorted(LORA_BACKENDS)} in SGLang "
                    f"{SGLANG_VERSION}"
                )


def sglang_served_name(settings: EngineSettings) -> str:
    """SGLang's own served name: ours without `:` (SGLang reads `base:adapter` in `model` as an adapter)."""
    return settings.model_name.replace(":", "-")


def build_sglang_argv(settings: EngineSettings, model_path: str, adapters: Mapping[str, str],
                      chat_template_file: str | None = None) -> list[str]:
    """The SGLang launch command as a list (never a shell string: paths may hold spaces).

    `model_path` is the resolved model (a local folder or a Hugging Face id); `adapters` maps the
    initial adapters' names to local paths (or HF ids, which SGLang downloads itself);
    `chat_template_file` is `--chat-template` written out as a `.jinja` file (SGLang reads a path there).
    Raises ValueError naming the field on input SGLang would refuse.
    """
    if settings.dtype not in VALID_DTYPES:
        raise ValueError(f"dtype: {settings.dtype!r} is not one of {sorted(VALID_DTYPES)}")
    for name in adapters:
        if not name or ":" in name or "=" in name:
            raise ValueError(f"lora adapter name {name!r}: must be non-empty without ':' or '='")
    refuse_owned_flags(settings.sglang_extra_args)

    argv = [settings.sglang_python, "-m", settings.sglang_module,
            "--model-path", model_path,
            "--served-model-name", sglang_served_name(settings),
            "--host", SGLANG_HOST, "--port", str(settings.sglang_port),
            "--tp-size", str(settings.tp_size),
            "--dtype", settings.dtype,
            "--log-level", settings.log_level.lower(),
            "--enable-metrics"]
    optional: list[tuple[str, object]] = [
        ("--revision", settings.revision if model_path == settings.model else None),  # not for a local copy
        ("--context-length", settings.context_length),
        ("--mem-fraction-static", settings.mem_fraction_static),
        ("--max-running-requests", settings.max_running_requests),
        ("--download-dir", settings.download_dir),
        ("--random-seed", settings.random_seed),
        ("--chat-template", chat_template_file),
        ("--tool-call-parser", settings.tool_call_parser),
        ("--reasoning-parser", settings.reasoning_parser),
    ]
    for flag, value in optional:
        if value is not None:  # never `--download-dir None`
            argv += [flag, str(value)]
    if settings.trust_remote_code:
        argv.append("--trust-remote-code")
    if settings.nnodes > 1:
        if not settings.dist_init_addr:
            raise ValueError("dist_init_addr: a multi-node launch needs the leader's address")
        argv += ["--nnodes", str(settings.nnodes), "--node-rank", str(settings.node_rank),
                 "--dist-init-addr", settings.dist_init_addr]
    if settings.lora_enabled or (adapters and not settings.disable_lora):
        argv += _lora_argv(settings, adapters)
    argv += settings.sglang_extra_args
    return argv


def _lora_argv(settings: EngineSettings, adapters: Mapping[str, str]) -> list[str]:
    # No `--disable-radix-cache` (the radix cache works with LoRA) and no `--lora-backend` (the default,
    # csgmv, is right; `flashinfer` is gone).
    argv = ["--enable-lora"]
    if adapters:
        argv += ["--lora-paths", *(f"{name}={path}" for name, path in adapters.items())]
    rank = settings.max_lora_rank or (None if adapters else DEFAULT_MAX_LORA_RANK)
    if rank is not None:
        argv += ["--max-lora-rank", str(rank)]
    modules = settings.lora_target_modules or (() if adapters else DEFAULT_LORA_TARGET_MODULES)
    if modules:
        argv += ["--lora-target-modules", *modules]
    if settings.max_loaded_adapters is not None:
        if len(adapters) > settings.max_loaded_adapters:
            raise ValueError(f"max_loaded_adapters: {settings.max_loaded_adapters} is fewer than the "
                             f"{len(adapters)} initial adapters")
        # SGLang requires max_loaded_loras >= max_loras_per_batch (default 8).
        argv += ["--max-loaded-loras", str(settings.max_loaded_adapters),
                 "--max-loras-per-batch", str(min(settings.max_loaded_adapters, DEFAULT_MAX_LORAS_PER_BATCH))]
    return argv


# ------------------------------------------------------------------------------------------ /generate

def build_generate_body(request: GenerationRequest) -> dict[str, Any]:
    """The POST /generate body: `input_ids`, SGLang-only sampling keys, `stream`, `rid`, `lora_path`."""
    s = request.sampling
    sampling: dict[str, Any] = {
        "max_new_tokens": s.max_new_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "repetition_penalty": s.repetition_penalty,
        "skip_special_tokens": s.skip_special_tokens,
    }
    if s.stop:
        if len(s.stop) > MAX_STOP_STRINGS:
            raise BackendError(f"stop: at most {MAX_STOP_STRINGS} stop strings", status=400,
                               type="invalid_request_error", param="stop")
        sampling["stop"] = list(s.stop)
    if s.seed is not None:
        sampling["sampling_seed"] = s.seed  # SGLang has no `seed` key (HTTP 400)
    body: dict[str, Any] = {
        "input_ids": request.input_ids,
        "sampling_params": sampling,
        "stream": True,
        "rid": request.request_id,
    }
    if request.adapter is not None:
        body["lora_path"] = request.adapter  # the adapter NAME; `lora_request` would be silently ignored
    for key in ("image_data", "video_data", "audio_data"):
        value = getattr(request, key)
        if value:
            body[key] = value
    return body


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete SSE events (separated by a blank line) in `buffer`, and the incomplete rest to keep.

    TCP chunks do not respect event boundaries: an event may arrive in pieces, or several in one chunk.
    """
    *events, rest = buffer.split(b"\n\n")
    return events, rest


@dataclass(slots=True)
class StreamState:
    """Per-stream relay state: how much of SGLang's cumulative text was already sent."""

    sent_chars: int = 0
    done: bool = False
    finished: bool = False


def parse_stream_event(line: bytes, state: StreamState) -> GenerationChunk | None:
    """One line of SGLang's SSE stream -> a delta chunk, or None (blank line, `[DONE]`, no new text).

    Hot path (once per token): one json.loads and a slice, nothing else. `text` is CUMULATIVE, so the delta
    is what follows the characters already sent. Raises BackendError on an error event.
    """
    if not line.startswith(b"data:"):
        return None
    payload = line[5:].strip()
    if payload == b"[DONE]":
        state.done = True
        return None
    event = json.loads(payload)
    if "error" in event:
        raise error_from_event(event["error"])
    text: str = event["text"]
    meta = event["meta_info"]
    finish = meta.get("finish_reason")
    delta = text[state.sent_chars:]
    if not delta and finish is None:
        return None
    state.sent_chars = len(text)
    reason: FinishReason | None = None
    if finish is not None:
        # A dict like {"type": "stop", "matched": 2}: compare its type, never the dict to a string.
        kind = finish["type"] if isinstance(finish, dict) else finish
        if kind == "abort" and isinstance(finish, dict) and isinstance(finish.get("status_code"), int):
            # SGLang 0.5.23 ends a stream it refuses after the 200 (FINISH_ABORT with a status, e.g. 400 for
            # bad input, 503 for a queue timeout) with this finish, not an error event: the client gets the
            # status and SGLang's message, not a generic "aborted".
            raise error_from_event({"message": finish.get("message") or "aborted by SGLang",
                                    "code": finish["status_code"]})
        reason = kind if kind in FINISH_TYPES else "abort"
        state.finished = True
    return GenerationChunk(
        text=delta,
        prompt_tokens=meta.get("prompt_tokens", 0),
        completion_tokens=meta.get("completion_tokens", 0),
        finish_reason=reason,
        cached_tokens=meta.get("cached_tokens", 0),
    )


# --------------------------------------------------------------------------------------------- errors

def error_message(body: object) -> str:
    """The message of SGLang's error bodies: `{"error": "<str>"}`, `{"error": {"message": ...}}`,
    `{"message": ...}` or `{"detail": ...}` (FastAPI); anything else as text."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, str):
            return err
        if isinstance(err, dict):
            for key in ("message", "detail", "error_message"):
                if isinstance(err.get(key), str):
                    return err[key]
    return str(body)


def error_from_http(status: int, raw: bytes) -> BackendError:
    """A non-200 reply to POST /generate (before streaming began) -> the error the client should see.

    400 is the client's fault (bad prompt or sampling values) and keeps SGLang's message; 503 means SGLang
    is starting or draining; anything else is SGLang failing us: 502.
    """
    try:
        message = error_message(json.loads(raw))
    except ValueError:
        message = raw.decode("utf-8", "replace").strip() or f"HTTP {status}"
    if status == 400:
        return BackendError(message, status=400, type="invalid_request_error")
    if status == 503:
        return BackendError(f"SGLang is not ready: {message}", status=503, type="server_error")
    return BackendError(f"SGLang answered HTTP {status}: {message}", status=502, type="server_error")


def error_from_event(error: object) -> BackendError:
    """The `{"error": {...}}` event SGLang sends after streaming began (status already 200).

    These come from request validation (e.g. a prompt longer than the context length), hence 400 unless
    the event carries its own code.
    """
    message = error_message({"error": error})
    code = error.get("code") if isinstance(error, dict) else None
    status = code if isinstance(code, int) and 400 <= code < 600 else 400
    kind = "invalid_request_error" if status < 500 else "server_error"
    return BackendError(message, status=status, type=kind)


def parse_adapter_reply(body: object) -> tuple[bool, str, dict[str, str]]:
    """`{"success", "error_message", "loaded_adapters"}` from /load_lora_adapter and /unload_lora_adapter."""
    if not isinstance(body, dict):
        return False, f"unexpected reply: {body!r}", {}
    loaded = body.get("loaded_adapters") or {}
    return (bool(body.get("success")), str(body.get("error_message") or ""),
            {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {})


def argv_for_display(argv: Sequence[str]) -> str:
    """The argv as a JSON list (what `--print-sglang-argv` prints)."""
    return json.dumps(list(argv))
