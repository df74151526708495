"""The simulated scheduler process: SGLang 0.5.23's scheduler side of its private IPC, without a GPU.

Started by SGLang's own `Engine._launch_scheduler_processes` in place of `run_scheduler_process` (same
arguments), it does what the real one does at the edges: publishes the runtime context, sends the startup
handshake (`Scheduler.get_init_info` keys) through the pipe, binds the ZMQ sockets of `ipc_channels.py`,
turns `TokenizedGenerateReqInput`s into tokens and sends one `BatchTokenIDOutput` per step to SGLang's
real DetokenizerManager with the incremental-detokenization fields the real scheduler sets
(`Req.init_incremental_detokenize`). Finish reasons are SGLang's dicts (length, stop token, stop string,
abort); every control request is answered as SGLang answers it, or refused loudly (never left unanswered):
control.py.

A crash is a crash: an exception logs, SIGQUITs SGLang's server process (as the real scheduler does) and
exits non-zero; SGLang's SubprocessWatchdog also SIGQUITs the server when this process dies by a signal.

Knobs (environment, read once at start): see `SimConfig`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from array import array
from dataclasses import dataclass, field
from typing import Any

import psutil
import zmq

from sglang_dev.sglang_sim import PLACEHOLDER_LOGPROB, SCRIPT_CLOSE, SCRIPT_OPEN, SIMULATED_BANNER
from sglang_dev.sglang_sim.control import ControlRequests, abort_reason
from sglang_dev.sglang_sim.group import Group, join_timeout
from sglang_dev.sglang_sim.tokens import ModelTokens, Sequence, SyntheticTokens

log = logging.getLogger("sglang_sim")

INIT_INCREMENTAL_DETOKENIZATION_OFFSET = 5  # schedule_batch.py: decode ids start 5 prompt tokens back
PREFIX_CACHE_MAX_ENTRIES = 1_000_000  # prefix hashes kept before the cache model is flushed


@dataclass(frozen=True)
class SimConfig:
    """SGLANG_SIM_TOKENS: `model` (the model's forward pass, default) or `synthetic` (no forward pass).
    SGLANG_SIM_TTFT_S: seconds before a request's first token (default 0).
    SGLANG_SIM_PREFILL_S_PER_TOKEN: extra seconds per prompt token NOT in the prefix cache (default 0).
    SGLANG_SIM_TOKEN_DELAY_S: seconds between a request's tokens (default 0)."""

    tokens: str = "model"
    ttft_s: float = 0.0
    prefill_s_per_token: float = 0.0
    token_delay_s: float = 0.0

    @classmethod
    def from_env(cls) -> SimConfig:
        tokens = os.environ.get("SGLANG_SIM_TOKENS", "model")
        if tokens not in ("model", "synthetic"):
            raise ValueError(f"SGLANG_SIM_TOKENS={tokens!r}: expected 'model' or 'synthetic'")

        def seconds(name: str) -> float:
            raw = os.environ.get(name, "0")
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r}: expected seconds (a number >= 0)") from None
            if value < 0:
                raise ValueError(f"{name}={raw!r}: expected seconds (a number >= 0)")
            return value

        return cls(tokens, seconds("SGLANG_SIM_TTFT_S"), seconds("SGLANG_SIM_PREFILL_S_PER_TOKEN"),
                   seconds("SGLANG_SIM_TOKEN_DELAY_S"))


class PrefixCache:
    """A radix cache in miniature: hashes of every prefix seen (per adapter); hits cost no prefill time."""

    def __init__(self) -> None:
        self._seen: set[int] = set()

    @staticmethod
    def _hashes(ids: list[int], adapter: str | None) -> list[int]:
        h, out = hash(adapter), []
        for token in ids:
            h = hash((h, token))
            out.append(h)
        return out

    def match(self, ids: list[int], adapter: str | None) -> int:
        """Cached prompt tokens: the longest prefix seen, at most len-1 (the last one is always computed)."""
        n = 0
        for h in self._hashes(ids[:-1], adapter):
            if h not in self._seen:
                break
            n += 1
        return n

    def insert(self, ids: list[int], adapter: str | None) -> None:
        if len(self._seen) > PREFIX_CACHE_MAX_ENTRIES:
            self._seen.clear()
        self._seen.update(self._hashes(ids, adapter))

    def flush(self) -> None:
        self._seen.clear()


@dataclass
class Request:
    """The scheduler's view of one generation (the fields of SGLang's `Req` that reach the output)."""

    rid: str
    http_worker_ipc: str | None
    prompt: list[int]
    sp: Any  # sglang SamplingParams (normalised by the tokenizer manager)
    stream: bool
    lora_id: str | None
    seq: Sequence
    cached_tokens: int
    next_at: float
    output_ids: list[int] = field(default_factory=list)
    finished_reason: dict[str, Any] | None = None
    to_finish: dict[str, Any] | None = None  # an abort, applied at the next step
    finished_len: int | None = None
    send_token_offset: int = 0
    send_decode_offset: int = 0
    surr_offset: int = 0
    started_at: float = field(default_factory=time.perf_counter)
    first_token_at: float = 0.0
    script: list[int] | None = None  # a scripted reply's tokens (see SCRIPT_OPEN)
    top_logprobs: int = -1  # -1: no logprobs asked; else how many alternatives per token
    logprob_vals: list[float] = field(default_factory=list)
    top_vals: list[list[float]] = field(default_factory=list)
    top_ids: list[list[int]] = field(default_factory=list)
    send_logprob_offset: int = 0

    @property
    def output_through_stop(self) -> list[int]:
        return self.output_ids if self.finished_len is None else self.output_ids[:self.finished_len]


class SimScheduler(ControlRequests):
    """Handshake, sockets, the generation loop and the output batches; control requests: control.py."""

    def __init__(self, server_args: Any, port_args: Any, config: SimConfig) -> None:
        from sglang.srt.managers import io_struct
        from sglang.srt.utils.hf_transformers_utils import get_tokenizer
        from sglang.srt.utils.network import get_zmq_socket

        self.io = io_struct
        self.server_args = server_args
        self.config = config
        began = time.perf_counter()
        tokenizer_path = server_args.tokenizer_path or server_args.model_path
        self.tokenizer = get_tokenizer(tokenizer_path, trust_remote_code=server_args.trust_remote_code,
                                       revision=server_args.revision)
        seed = server_args.random_seed if server_args.random_seed is not None else 0
        self.seeds = __import__("random").Random(seed)
        if config.tokens == "model":
            self.tokens: ModelTokens | SyntheticTokens = ModelTokens(server_args.model_path, seed)
            vocab = self.tokens.vocab_size
        else:
            vocab = len(self.tokenizer)
            self.tokens = SyntheticTokens(self.tokenizer, vocab)
        self.vocab_size = vocab
        self.eos_ids = self._eos_ids()
        # A scripted reply ends as a model's turn ends: with the tokenizer's end-of-sequence token.
        eos = self.tokenizer.eos_token_id
        self.end_id = int(eos) if eos is not None else min(self.eos_ids, default=0)
        self.context_len = self._context_len()
        self.load_time = time.perf_counter() - began

        context = zmq.Context(2)
        self.recv_from_tokenizer = get_zmq_socket(context, zmq.PULL, port_args.scheduler_input_ipc_name,
                                                  False)
        self.recv_from_rpc = get_zmq_socket(context, zmq.DEALER, port_args.rpc_ipc_name, False)
        self.send_to_tokenizer = get_zmq_socket(context, zmq.PUSH, port_args.tokenizer_ipc_name, False)
        detok_ipc = (port_args.tokenizer_ipc_name if server_args.skip_tokenizer_init
                     else port_args.detokenizer_ipc_name)
        self.send_to_detokenizer = get_zmq_socket(context, zmq.PUSH, detok_ipc, False)
        self.poller = zmq.Poller()
        self.poller.register(self.recv_from_tokenizer, zmq.POLLIN)
        self.poller.register(self.recv_from_rpc, zmq.POLLIN)

        self.running: dict[str, Request] = {}
        self.prefix_cache = PrefixCache()
        self.adapters: dict[str, tuple[str, str]] = {}  # lora_id -> (name, path)
        self.sessions: set[str] = set()
        self.paused = False
        self.exit = False
        self.counts: dict[str, int] = {"generate": 0, "health_check_generate": 0, "aborted": 0,
                                       "finished": 0, "output_batches": 0}
        self.refused: dict[str, int] = {}
        self.handlers = {io_struct.TokenizedGenerateReqInput: self._add_generate, **self.control_handlers()}
        self._load_initial_adapters()
        self.startup_s = time.perf_counter() - began

    # ------------------------------------------------------------------------------- handshake
    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        try:
            from transformers import GenerationConfig

            eos = GenerationConfig.from_pretrained(self.server_args.model_path).eos_token_id
            ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        except (OSError, ValueError):
            pass
        return ids

    def _context_len(self) -> int:
        if self.server_args.context_length:
            return int(self.server_args.context_length)
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.server_args.model_path,
                                            trust_remote_code=self.server_args.trust_remote_code)
        return int(getattr(config, "max_position_embeddings", 4096))

    def init_info(self) -> dict[str, Any]:
        from sglang.srt.mem_cache.hicache_storage import disabled_l3_layout
        from sglang.srt.observability.startup_time import build_scheduler_startup_time

        max_total = max(self.context_len * 64, 65536)
        return {
            "status": "ready",
            "max_total_num_tokens": max_total,
            "max_req_input_len": min(self.context_len - 1, max_total - 1) - 5,  # as tp_worker.py
            "startup_time": build_scheduler_startup_time(
                target_load_weight=self.load_time, draft_load_weight=0.0, kv_cache_allocation=0.0,
                scheduler_e2e=self.startup_s, target_cuda_graph=None, draft_cuda_graph=None),
            "hicache_object_layout": disabled_l3_layout("Hierarchical cache is disabled", page_size=1),
        }

    def _load_initial_adapters(self) -> None:
        """--lora-paths: loaded at start; one that fails ends startup, as in SGLang."""
        refs = getattr(self.server_args, "lora_paths", None) or []
        for ref in refs:
            name, path = getattr(ref, "lora_name", None), getattr(ref, "lora_path", None)
            lora_id = getattr(ref, "lora_id", None) or name
            if name is None:  # older forms: "name=path" strings
                name, _, path = str(ref).partition("=")
                lora_id = name
            error = self._load_adapter(str(lora_id), str(name), str(path),
                                       pinned=bool(getattr(ref, "pinned", False)))
            if error:
                raise RuntimeError(f"initial LoRA adapter {name}: {error}")

    # ------------------------------------------------------------------------------- main loop
    def run(self) -> None:
        while not self.exit:
            timeout_ms = self._poll_timeout_ms()
            events = dict(self.poller.poll(timeout_ms))
            if self.recv_from_tokenizer in events:
                self._drain(self.recv_from_tokenizer, rpc=False)
            if self.recv_from_rpc in events:
                self._drain(self.recv_from_rpc, rpc=True)
            if not self.paused:
                self._step()

    def _poll_timeout_ms(self) -> int:
        if self.paused or not self.running:
            return 1000
        due = min(r.next_at for r in self.running.values())
        return max(0, int((due - time.monotonic()) * 1000))

    def _drain(self, sock: zmq.Socket, rpc: bool) -> None:
        while True:
            try:
                message = self.io.sock_recv(sock, zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EAGAIN:
                    return
                raise
            if rpc:
                self._rpc(message)
            else:
                self._dispatch(message)

    def _dispatch(self, req: Any) -> None:
        io = self.io
        if isinstance(req, io.BatchTokenizedGenerateReqInput):
            for item in req.batch:
                self._add_generate(item)
            return
        handler = self.handlers.get(type(req))
        output = handler(req) if handler is not None else self._refuse(req)
        if output is not None:
            self._send(self.send_to_tokenizer, output, req)

    def _send(self, sock: zmq.Socket, output: Any, recv_req: Any = None) -> None:
        ipc = getattr(recv_req, "http_worker_ipc", None)
        if isinstance(output, self.io.BaseReq) and ipc is not None and output.http_worker_ipc is None:
            output.http_worker_ipc = ipc
        self.io.sock_send(sock, output)

    # ------------------------------------------------------------------------------- generation
    def _add_generate(self, req: Any) -> None:
        from sglang.srt.managers.utils import is_health_check_generate_req

        health = is_health_check_generate_req(req)
        self.counts["health_check_generate" if health else "generate"] += 1
        if health and self.running:
            # As SGLang: a busy server answers health checks with its ongoing outputs.
            return
        prompt = list(req.input_ids or [])
        # Scheduler.init_req_max_new_tokens: no max_new_tokens (an OpenAI request without max_tokens) means
        # up to the end of the context.
        asked = req.sampling_params.max_new_tokens
        req.sampling_params.max_new_tokens = max(0, min(asked if asked is not None else 1 << 30,
                                                        self.context_len - 1 - len(prompt) - 1))
        adapter = req.lora_id
        seed = req.sampling_params.sampling_seed
        if seed is None:
            seed = self.seeds.randrange(2**31 - 1)
        cached = self.prefix_cache.match(prompt, adapter)
        delay = self.config.ttft_s + self.config.prefill_s_per_token * (len(prompt) - cached)
        r = Request(rid=req.rid, http_worker_ipc=req.http_worker_ipc, prompt=prompt, sp=req.sampling_params,
                    stream=req.stream, lora_id=adapter, seq=Sequence(prompt, adapter, seed),
                    cached_tokens=cached, next_at=time.monotonic() + delay)
        r.surr_offset = max(len(prompt) - INIT_INCREMENTAL_DETOKENIZATION_OFFSET, 0)
        r.script = self._script(prompt)
        if req.return_logprob:
            r.top_logprobs = max(req.top_logprobs_num or 0, 0)
        if adapter is not None and adapter not in self.adapters:
            r.to_finish = abort_reason(f"LoRA adapter {adapter} is not loaded", 400)
        session = req.session_params.id if req.session_params is not None else None
        if session is not None and session not in self.sessions:
            r.to_finish = abort_reason(f"Invalid request: session id {session} does not exist", 400)
        self.prefix_cache.insert(prompt, adapter)
        self.running[r.rid] = r

    def _script(self, prompt: list[int]) -> list[int] | None:
        """The tokens of the prompt's last `[[sim-reply]]TEXT[[/sim-reply]]`, or None (no script)."""
        text = str(self.tokenizer.decode(prompt))
        start = text.rfind(SCRIPT_OPEN)
        end = text.find(SCRIPT_CLOSE, start)
        if start < 0 or end < 0:
            return None
        reply = text[start + len(SCRIPT_OPEN):end]
        return list(self.tokenizer.encode(reply, add_special_tokens=False))

    def _step(self) -> None:
        now = time.monotonic()
        due = [r for r in self.running.values() if r.next_at <= now or r.to_finish is not None]
        if not due:
            return
        batch: list[Request] = []
        for r in due:
            if r.to_finish is not None:
                r.finished_reason = r.to_finish
            else:
                self._advance(r)
                r.next_at = now + self.config.token_delay_s
            if r.finished_reason is not None or self._should_stream(r):
                batch.append(r)
        for r in batch:
            if r.finished_reason is not None:
                self.running.pop(r.rid, None)
                self.tokens.release(r.seq)
                self.counts["finished"] += 1
                if r.finished_reason["type"] == "abort":
                    self.counts["aborted"] += 1
                else:
                    self.prefix_cache.insert(r.prompt + r.output_through_stop, r.lora_id)
        if batch:
            self._send(self.send_to_detokenizer, self._batch_output(batch))
            self.counts["output_batches"] += 1

    def _advance(self, r: Request) -> None:
        """One decode step: a token, then SGLang's finish checks (token, string, length)."""
        sp = r.sp
        if not r.output_ids:
            if r.script is None:
                self.tokens.start(r.seq)
            r.first_token_at = time.perf_counter()
        if sp.max_new_tokens == 0:
            r.finished_reason = {"type": "length", "length": 0}
            return
        if r.script is not None:
            done = len(r.output_ids)
            token = r.script[done] if done < len(r.script) else self.end_id
        else:
            stops = sorted(self.eos_ids | set(sp.stop_token_ids or ()))
            banned = stops if len(r.output_ids) < (sp.min_new_tokens or 0) else []
            token = self.tokens.next_token(r.seq, sp, banned)
        if r.top_logprobs >= 0:
            self._record_logprobs(r, token)
        r.output_ids.append(token)
        if not sp.ignore_eos and (token in self.eos_ids or token in (sp.stop_token_ids or ())):
            r.finished_reason = {"type": "stop", "matched": token}
            r.finished_len = len(r.output_ids)
            return
        if sp.stop_strs:
            tail = self._tail_str(r)
            for stop in sp.stop_strs:
                if stop and stop in tail:
                    r.finished_reason = {"type": "stop", "matched": stop}
                    return
        if len(r.output_ids) >= sp.max_new_tokens or len(r.prompt) + len(r.output_ids) >= self.context_len:
            r.finished_reason = {"type": "length", "length": len(r.output_ids)}

    def _record_logprobs(self, r: Request, token: int) -> None:
        if r.script is None and isinstance(self.tokens, ModelTokens):
            value, top_vals, top_ids = self.tokens.logprobs(r.seq, token, r.top_logprobs)
        else:  # no distribution to report: the token produced is certain, its alternatives placeholders
            value = 0.0
            alternatives = [(token + i) % self.vocab_size for i in range(1, r.top_logprobs)]
            top_vals = [0.0, *[PLACEHOLDER_LOGPROB] * len(alternatives)][:r.top_logprobs]
            top_ids = [token, *alternatives][:r.top_logprobs]
        r.logprob_vals.append(value)
        r.top_vals.append(top_vals)
        r.top_ids.append(top_ids)

    def _tail_str(self, r: Request) -> str:
        tail_len = min((r.sp.stop_str_max_len or 0) + 1, len(r.output_ids))
        return str(self.tokenizer.decode(r.output_ids[-tail_len:]))

    def _should_stream(self, r: Request) -> bool:
        """As the output streamer: streams send every step, except while the tail may start a stop string."""
        if not r.stream:
            return False
        if r.sp.stop_strs:
            tail = self._tail_str(r)
            for stop in r.sp.stop_strs:
                if stop and (stop in tail or any(tail.endswith(stop[:i]) for i in range(1, len(stop) + 1))):
                    return False
        return True

    def _batch_output(self, batch: list[Request]) -> Any:
        rids, ipcs, reasons, texts, decode_ids, read_offsets, output_ids = [], [], [], [], [], [], []
        skip, spaces, no_trim, prompt_tokens, completion, cached, stats = [], [], [], [], [], [], []
        lp_vals, lp_ids, top_vals, top_ids = [], [], [], []
        for r in batch:
            through = r.output_through_stop
            rids.append(r.rid)
            ipcs.append(r.http_worker_ipc)
            reasons.append(r.finished_reason)
            texts.append("")
            # Req.init_incremental_detokenize: ids from 5 prompt tokens back plus the output; sent as deltas.
            surr_and_decode = r.prompt[r.surr_offset:] + through
            decode_ids.append(array("q", surr_and_decode[r.send_decode_offset:]))
            r.send_decode_offset = len(surr_and_decode)
            read_offsets.append(len(r.prompt) - r.surr_offset)
            output_ids.append(array("q", through[r.send_token_offset:]))
            r.send_token_offset = len(through)
            skip.append(r.sp.skip_special_tokens)
            spaces.append(r.sp.spaces_between_special_tokens)
            no_trim.append(r.sp.no_stop_trim)
            prompt_tokens.append(len(r.prompt))
            completion.append(len(through))
            cached.append(r.cached_tokens)
            stats.append(self._time_stats(r))
            # Logprobs as the real scheduler sends them: the values of the tokens new since the last batch.
            start, end = r.send_logprob_offset, len(through) if r.top_logprobs >= 0 else 0
            lp_vals.append(r.logprob_vals[start:end])
            lp_ids.append(through[start:end])
            top_vals.append(r.top_vals[start:end])
            top_ids.append(r.top_ids[start:end])
            r.send_logprob_offset = max(end, start)
        n = len(batch)
        empty: list[list[Any]] = [[] for _ in range(n)]
        return self.io.BatchTokenIDOutput(
            rids=rids, http_worker_ipcs=ipcs, finished_reasons=reasons, decoded_texts=texts,
            decode_ids=decode_ids, read_offsets=read_offsets, output_ids=output_ids,
            skip_special_tokens=skip, spaces_between_special_tokens=spaces, no_stop_trim=no_trim,
            prompt_tokens=prompt_tokens, reasoning_tokens=[0] * n, completion_tokens=completion,
            cached_tokens=cached,
            input_token_logprobs_val=empty, input_token_logprobs_idx=empty,
            output_token_logprobs_val=lp_vals, output_token_logprobs_idx=lp_ids,
            input_top_logprobs_val=empty, input_top_logprobs_idx=empty,
            output_top_logprobs_val=top_vals, output_top_logprobs_idx=top_ids,
            input_token_ids_logprobs_val=empty, input_token_ids_logprobs_idx=empty,
            output_token_ids_logprobs_val=empty, output_token_ids_logprobs_idx=empty,
            output_token_entropy_val=None, output_token_sampling_mask=None, output_hidden_states=None,
            routed_experts=None, indexer_topk=None, placeholder_tokens_idx=None, placeholder_tokens_val=None,
            retraction_counts=[0] * n, time_stats=self.io.wrap_as_pickle(stats),
        )

    @staticmethod
    def _time_stats(r: Request) -> Any:
        from sglang.srt.observability.req_time_stats import SchedulerReqTimeStats

        stats = SchedulerReqTimeStats()
        stats.wait_queue_entry_time = stats.forward_entry_time = r.started_at
        stats.prefill_finished_time = r.first_token_at
        if r.finished_reason is not None:
            stats.completion_time = time.perf_counter()
        return stats



def _group_of(server_args: Any, tp_rank: int, pp_rank: int) -> Group | None:
    """A multi-node launch's group membership, for the first scheduler of each node (group.py); else None."""
    nnodes = int(getattr(server_args, "nnodes", 1) or 1)
    tp_per_node = max(1, int(server_args.tp_size) // nnodes)
    if nnodes <= 1 or pp_rank != 0 or tp_rank % tp_per_node != 0:
        return None
    return Group(server_args.dist_init_addr, nnodes, int(server_args.node_rank), int(server_args.tp_size),
                 join_timeout(server_args))


def run_simulated_scheduler(server_args: Any, port_args: Any, gpu_id: int, tp_rank: int, pp_rank: int,
                            dp_rank: int | None, pipe_writer: Any, *_display: Any) -> None:
    """The `run_scheduler_process_func` SGLang's launch_server starts (spawn) with run_scheduler_process's
    arguments. Ranks other than 0 only hand shake and idle: rank 0 owns the sockets."""
    from sglang.srt.managers.scheduler import configure_scheduler_process, resolve_spawn_dp_rank
    from sglang.srt.runtime_context import SpawnRanks, publish, spawn_world_rank

    dp_rank = resolve_spawn_dp_rank(dp_rank)
    publish(server_args, role="scheduler", ranks=SpawnRanks(
        world_rank=spawn_world_rank(server_args, tp_rank=tp_rank, pp_rank=pp_rank), dp_rank=dp_rank,
        gpu_id=gpu_id))
    configure_scheduler_process(server_args, gpu_id)
    parent = psutil.Process().parent()
    try:
        config = SimConfig.from_env()
        log.warning("%s", SIMULATED_BANNER)
        log.warning("simulated scheduler: tokens=%s ttft_s=%g prefill_s_per_token=%g token_delay_s=%g",
                    config.tokens, config.ttft_s, config.prefill_s_per_token, config.token_delay_s)
        group = _group_of(server_args, tp_rank, pp_rank)

        def lost(why: str) -> None:
            log.error("simulated scheduler: %s: stopping, as a rank does when NCCL loses a peer", why)
            parent.send_signal(signal.SIGQUIT)
            sys.stderr.flush()
            os._exit(1)

        if tp_rank != 0 or pp_rank != 0:
            if group is not None:  # the first rank of a node other than 0: joins the group first
                group.join()
                group.watch(lost)
            pipe_writer.send({"status": "ready", "max_total_num_tokens": 65536, "max_req_input_len": 4091,
                              "startup_time": {}, "hicache_object_layout": None})
            while True:
                time.sleep(3600)
        scheduler = SimScheduler(server_args, port_args, config)
        if group is not None:  # node 0: ready only once every node has joined
            group.join()
            group.watch(lost)
        pipe_writer.send(scheduler.init_info())
        scheduler.run()
    except Exception:
        log.error("simulated scheduler hit an exception: %s", traceback.format_exc())
        parent.send_signal(signal.SIGQUIT)
        sys.stderr.flush()
        os._exit(1)
