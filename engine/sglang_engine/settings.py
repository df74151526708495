"""Engine settings: parsed once from the command line (and env for secrets), then passed around frozen.

`sglang-engine serve [flags] [-- EXTRA_SGLANG_ARGS...]`: everything after a bare `--` is appended to
SGLang's argv (flags the engine owns are refused there, see protocol.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from sglang_engine.protocol import (
    DIST_INIT_PORT,
    LWS_GROUP_SIZE_ENV,
    LWS_LEADER_ADDRESS_ENV,
    LWS_WORKER_INDEX_ENV,
    REASONING_PARSERS,
    SGLANG_VERSION,
    TERMINATION_LOG,
    TOOL_CALL_PARSERS,
)

Backend = Literal["sglang", "transformers"]
# 2 MiB holds a 128k-token prompt of ordinary text; more is refused (413) before it is parsed.
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
DType = Literal["auto", "half", "float16", "bfloat16", "float", "float32"]


class EngineSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    backend: Backend = "sglang"
    revision: str | None = None
    served_model_name: str | None = None  # default: derived from model
    host: str = "127.0.0.1"
    port: int = 8000
    # /livez, /readyz, /status and /metrics also on a port of their own, so clients flooding `port` cannot
    # starve the probes, and a NetworkPolicy can open the read-only endpoints without the API.
    probe_port: int | None = None
    # Connections per port at once (lowered to fit the open-file limit); beyond, new ones are closed.
    max_connections: int = Field(4096, ge=1)
    # A connection that has not sent a whole request head within this is closed (slow-header clients).
    header_timeout_s: float = Field(10.0, gt=0)
    tp_size: int = Field(1, ge=1)
    # Multi-node (SGLang backend): nodes per model copy, this node's rank and the leader's dist-init address.
    # Under a LeaderWorkerSet the last two come from its environment (protocol.py, MULTI-NODE).
    nnodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    dist_init_addr: str | None = None
    context_length: int | None = Field(None, ge=1)
    mem_fraction_static: float | None = Field(None, gt=0, lt=1)
    dtype: DType = "auto"
    max_running_requests: int | None = Field(None, ge=1)
    trust_remote_code: bool = False
    chat_template: str | None = None
    # SGLang's own tool-call and reasoning parsers (its OpenAI server turns output into tool_calls and
    # reasoning_content); validated against SGLang's choices (protocol.TOOL_CALL_PARSERS, REASONING_PARSERS).
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    download_dir: str | None = None
    random_seed: int | None = None
    # LoRA
    lora_adapters: tuple[tuple[str, str], ...] = ()  # (name, source) given on the command line
    max_loaded_adapters: int | None = Field(None, ge=1)
    max_lora_rank: int | None = Field(None, ge=1)
    lora_target_modules: tuple[str, ...] = ()
    enable_lora: bool = False  # implied by any adapter, the config file, or the lora flags
    # Opt out of SGLang's LoRA memory pool (GBs on large models) for a model that will never serve adapters.
    disable_lora: bool = False
    # The watched JSON file of desired adapters and generation defaults (mounted from the ConfigMap).
    config_file: Path | None = None
    # When set, an absolute-path adapter source must lie inside one of these folders (symlinks resolved).
    source_roots: tuple[Path, ...] = ()
    # When set, the admin API loads local adapters (pvc://, absolute paths) only from inside these folders.
    admin_source_roots: tuple[Path, ...] = ()
    # SGLang subprocess
    sglang_module: str = "sglang.launch_server"
    # The interpreter that runs `-m sglang_module`: SGLang may live in another venv than the engine.
    sglang_python: str = sys.executable
    sglang_port: int = 30000
    sglang_extra_args: tuple[str, ...] = ()
    startup_timeout_s: float = Field(1800.0, gt=0)
    shutdown_grace_s: float = Field(30.0, ge=0)
    # A backend that dies is restarted with exponential backoff; after this many failures in a row the
    # engine's /livez fails (the kubelet restarts the pod).
    backend_restarts: int = Field(3, ge=0)
    restart_backoff_s: float = Field(1.0, gt=0)
    print_sglang_argv: bool = False
    # Serving limits
    max_concurrent_requests: int = Field(256, ge=1)
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)
    body_timeout_s: float = Field(30.0, gt=0)  # a request body still arriving after this is refused (408)
    # Browser origins allowed to call the API (CORS); none by default: no CORS headers at all.
    cors_allow_origins: tuple[str, ...] = ()
    # Host names (the Host header without its port) /v1 and /admin answer for; empty: any (DNS rebinding
    # defence for a port reached through a browser, e.g. a port-forward).
    allowed_hosts: tuple[str, ...] = ()
    # Secrets: read from files or env, never from argv (argv is visible in `ps`).
    api_key: str | None = Field(None, repr=False)
    admin_token: str | None = Field(None, repr=False)
    # Where builtin:tiny and builtin adapters are built once.
    cache_dir: Path = Path(os.environ.get("SGLANG_ENGINE_CACHE", Path.home() / ".cache" / "sglang-engine"))
    device: str = "auto"  # transformers backend: auto, cpu, cuda
    log_format: Literal["text", "json"] = "text"
    log_level: str = "info"
    # Why the engine stopped before serving goes here; Kubernetes shows it in the pod's status.
    termination_log: Path | None = Path(TERMINATION_LOG)

    @field_validator("tool_call_parser", "reasoning_parser")
    @classmethod
    def _parser(cls, value: str | None, info: ValidationInfo) -> str | None:
        choices = TOOL_CALL_PARSERS if info.field_name == "tool_call_parser" else REASONING_PARSERS
        if value is not None and value not in choices:
            raise ValueError(f"{value!r} is not one of SGLang {SGLANG_VERSION}'s: {', '.join(choices)}")
        return value

    @property
    def model_name(self) -> str:
        """The name clients use in `model`: --served-model-name, else the model id."""
        return self.served_model_name or self.model

    @property
    def worker_rank(self) -> bool:
        """A multi-node worker (node rank >= 1): SGLang's ranks only; the leader serves the API."""
        return self.node_rank > 0

    @model_validator(mode="after")
    def _multi_node(self) -> EngineSettings:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        if self.nnodes > 1:
            if self.backend != "sglang":
                raise ValueError("nnodes > 1 needs the sglang backend")
            if self.tp_size % self.nnodes:
                raise ValueError(f"tp_size {self.tp_size} is not a multiple of nnodes {self.nnodes}")
            if not self.dist_init_addr:
                raise ValueError(f"nnodes > 1 needs --dist-init-addr (or {LWS_LEADER_ADDRESS_ENV})")
        return self

    @property
    def lora_enabled(self) -> bool:
        if self.disable_lora:
            return False
        return bool(self.enable_lora or self.lora_adapters or self.config_file or self.max_lora_rank)


# Where the engine's secrets may come from in the environment (the operator sets the first from apiKeySecret).
API_KEY_ENV = "SGLANG_ENGINE_API_KEY"
ADMIN_TOKEN_ENV = "SGLANG_ENGINE_ADMIN_TOKEN"
# Which SGLang the engine launches, from the environment (a pod, the local cluster's node or a test points the
# real launch path at another module or venv without new flags).
SGLANG_MODULE_ENV = "SGLANG_ENGINE_SGLANG_MODULE"
SGLANG_PYTHON_ENV = "SGLANG_ENGINE_SGLANG_PYTHON"


def child_environment() -> dict[str, str]:
    """The engine's environment without its own secrets: what SGLang (or any child) is started with. SGLang
    needs neither (it listens on loopback without a key) and its remote-code models could read them."""
    return {k: v for k, v in os.environ.items() if k not in (API_KEY_ENV, ADMIN_TOKEN_ENV)}


def _read_secret(file_arg: str | None, env_name: str) -> str | None:
    if file_arg:
        return Path(file_arg).read_text().strip() or None
    return os.environ.get(env_name) or None


def _adapter(value: str) -> tuple[str, str]:
    name, sep, source = value.partition("=")
    if not sep or not name or not source:
        raise argparse.ArgumentTypeError(f"--lora-adapter expects NAME=SOURCE, got {value!r}")
    return name, source


def _default(field: str) -> object:
    """A flag's default is the settings field's: one place for each."""
    return EngineSettings.model_fields[field].default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sglang-engine serve", description="Serve a model with SGLang (or "
                                "transformers) behind an OpenAI-compatible streaming API. Arguments after a "
                                "bare `--` go to SGLang.")
    d = _default

    def a(flag: str, *, dest: str | None = None, help: str, **kw: object) -> None:
        field = dest or flag.lstrip("-").replace("-", "_")
        known = EngineSettings.model_fields.get(field)
        if "default" not in kw and kw.get("action") not in ("append", "store_true") and known is not None \
                and not known.is_required() and known.default is not None:
            kw["default"] = d(field)
            help += " (default: %(default)s)"
        p.add_argument(flag, dest=field, help=help, **kw)  # type: ignore[arg-type]

    a("--model", required=True, help="the model: a Hugging Face repo id, a local path, or builtin:tiny")
    a("--backend", choices=get_args(Backend), help="sglang (GPU serving) or transformers (in-process, CPU)")
    a("--revision", help="the model's Hugging Face revision (branch, tag or commit)")
    a("--served-model-name", help="the name clients pass as `model` (default: --model)")
    a("--host", help="listen address")
    a("--port", type=int, help="listen port")
    a("--probe-port", type=int,
      help="also serve /livez, /readyz, /status and /metrics on this port (default: none)")
    a("--max-connections", type=int, help="open connections per port; more are closed at once")
    a("--header-timeout", dest="header_timeout_s", type=float, metavar="SECONDS",
      help="close a connection that has not sent a whole request head within this")
    a("--tp-size", type=int, help="tensor parallel size (GPUs, over all nodes)")
    a("--nnodes", type=int, help="nodes one copy of the model spans (SGLang backend; above 1: multi-node)")
    a("--node-rank", type=int, default=None,
      help=f"this node's rank, 0 for the leader (default: env {LWS_WORKER_INDEX_ENV}, else 0)")
    a("--dist-init-addr", metavar="HOST:PORT",
      help=f"the leader's address for SGLang's distributed init (default: env {LWS_LEADER_ADDRESS_ENV}:"
           f"{DIST_INIT_PORT} when --nnodes > 1)")
    a("--context-length", type=int, help="maximum context length (default: the model's)")
    a("--mem-fraction-static", type=float, help="GPU memory fraction for weights and KV cache (SGLang)")
    a("--dtype", choices=get_args(DType), help="weight and activation dtype")
    a("--max-running-requests", type=int, help="concurrently running requests in SGLang")
    a("--trust-remote-code", action="store_true", help="allow custom model code from the model repository")
    a("--chat-template", help="a Jinja chat template, inline or a file path (default: the tokenizer's)")
    a("--tool-call-parser", choices=TOOL_CALL_PARSERS, metavar="PARSER",
      help="SGLang's tool-call parser (tools and tool_choice answer with tool_calls): one of SGLang's "
           "--tool-call-parser choices, e.g. qwen25, llama3, hermes, mistral")
    a("--reasoning-parser", choices=REASONING_PARSERS, metavar="PARSER",
      help="SGLang's reasoning parser (answers carry reasoning_content): one of SGLang's --reasoning-parser "
           "choices, e.g. deepseek-r1, qwen3")
    a("--download-dir", help="where model downloads go (default: the Hugging Face cache)")
    a("--random-seed", type=int, help="SGLang's random seed")
    a("--lora-adapter", action="append", type=_adapter, default=[], metavar="NAME=SOURCE",
      help="an adapter to load at start (repeatable); SOURCE as in the config file")
    a("--enable-lora", action="store_true", help="reserve LoRA capacity even with no adapter at start")
    a("--disable-lora", action="store_true",
      help="no LoRA memory pool in SGLang (adapters are then refused); saves GPU memory")
    a("--max-loaded-adapters", type=int, help="adapters kept loaded at once (SGLang --max-loaded-loras)")
    a("--max-lora-rank", type=int, help="largest LoRA rank to reserve memory for")
    a("--lora-target-modules", nargs="+", default=[], metavar="MODULE",
      help="modules adapters may target, e.g. q_proj v_proj (default: all)")
    a("--source-root", dest="source_roots", action="append", default=[], metavar="DIR",
      help="allow absolute-path adapter sources only inside DIR (repeatable; default: anywhere)")
    a("--admin-source-root", dest="admin_source_roots", action="append", default=[], metavar="DIR",
      help="the admin API loads pvc:// and absolute-path adapters only inside DIR (repeatable; default: "
      "anywhere)")
    a("--config", dest="config_file", metavar="FILE",
      help="watched JSON file of desired adapters and generation defaults")
    a("--sglang-module", default=os.environ.get(SGLANG_MODULE_ENV, d("sglang_module")),
      help=f"the Python module that launches SGLang (env {SGLANG_MODULE_ENV}; default: %(default)s)")
    a("--sglang-python", default=os.environ.get(SGLANG_PYTHON_ENV, d("sglang_python")),
      help="the Python interpreter that runs SGLang's module, which may live in another venv "
           f"(env {SGLANG_PYTHON_ENV}; default: the engine's own)")
    a("--sglang-port", type=int, help="SGLang's loopback port inside the pod")
    a("--startup-timeout", dest="startup_timeout_s", type=float, metavar="SECONDS",
      help="how long the backend may take to load the model")
    a("--shutdown-grace", dest="shutdown_grace_s", type=float, metavar="SECONDS",
      help="how long in-flight streams may finish after SIGTERM")
    a("--backend-restarts", type=int, help="restarts in a row before /livez fails")
    a("--restart-backoff", dest="restart_backoff_s", type=float, metavar="SECONDS",
      help="seconds before the first restart of a dead backend; doubles per failure (max 30)")
    a("--print-sglang-argv", action="store_true", help="print SGLang's command line as JSON and exit")
    a("--max-concurrent-requests", type=int, help="requests served at once; more get 429")
    a("--max-body-bytes", type=int, help="largest request body; larger ones get 413")
    a("--body-timeout", dest="body_timeout_s", type=float, metavar="SECONDS",
      help="seconds a client may take to send its request body (slow senders get 408)")
    a("--cors-allow-origin", dest="cors_allow_origins", action="append", default=[], metavar="ORIGIN",
      help="allow browser calls from ORIGIN (repeatable; `*` for any); no CORS unless given")
    a("--allowed-host", dest="allowed_hosts", action="append", default=[], metavar="HOST",
      help="answer /v1 and /admin only for this Host header (repeatable; default: any)")
    a("--api-key-file", metavar="FILE", help=f"file holding the /v1 API key (else env {API_KEY_ENV})")
    a("--admin-token-file", metavar="FILE",
      help=f"file holding the admin bearer token (else env {ADMIN_TOKEN_ENV})")
    a("--cache-dir", default=None, metavar="DIR",
      help="where builtin:tiny and its adapters are built (env SGLANG_ENGINE_CACHE; default: "
           "~/.cache/sglang-engine)")
    a("--device", help="transformers backend: auto, cpu or cuda")
    a("--log-format", choices=get_args(EngineSettings.model_fields["log_format"].annotation),
      help="text or json lines")
    a("--log-level", help="debug, info, warning or error")
    a("--termination-log", type=Path, metavar="FILE",
      help="where to write why the engine stopped before serving, if FILE exists (Kubernetes creates it)")
    return p


def _multi_node_from_env(ns: dict[str, object], parser: argparse.ArgumentParser) -> None:
    """With --nnodes > 1, the rank and the leader's address not given as flags come from LeaderWorkerSet's
    environment; a group size there that disagrees with --nnodes is refused (the CR and the LWS disagree)."""
    nnodes = int(ns["nnodes"])  # type: ignore[call-overload]
    if nnodes <= 1:
        ns["node_rank"] = ns["node_rank"] or 0
        return
    env = os.environ
    size = env.get(LWS_GROUP_SIZE_ENV)
    if size is not None and size != str(nnodes):
        parser.error(f"--nnodes {nnodes} but {LWS_GROUP_SIZE_ENV}={size}: the group has another size")
    if ns["node_rank"] is None:
        index = env.get(LWS_WORKER_INDEX_ENV, "0")
        if not index.isdigit():
            parser.error(f"{LWS_WORKER_INDEX_ENV}={index!r} is not a node rank")
        ns["node_rank"] = int(index)
    if ns["dist_init_addr"] is None and env.get(LWS_LEADER_ADDRESS_ENV):
        ns["dist_init_addr"] = f"{env[LWS_LEADER_ADDRESS_ENV]}:{DIST_INIT_PORT}"


def parse_settings(argv: list[str]) -> EngineSettings:
    """Parse `serve` arguments (without the subcommand) into settings; exits 2 on a bad flag."""
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    ns = vars(parser.parse_args(argv))
    _multi_node_from_env(ns, parser)
    api_key = _read_secret(ns.pop("api_key_file"), API_KEY_ENV)
    admin_token = _read_secret(ns.pop("admin_token_file"), ADMIN_TOKEN_ENV)
    if ns["cache_dir"] is None:
        ns.pop("cache_dir")
    return EngineSettings(
        **{k: v for k, v in ns.items() if k not in ("lora_adapter", "lora_target_modules")},
        lora_adapters=tuple(ns["lora_adapter"]),
        lora_target_modules=tuple(ns["lora_target_modules"]),
        sglang_extra_args=tuple(extra),
        api_key=api_key,
        admin_token=admin_token,
    )
