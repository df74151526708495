"""The simulated scheduler's control requests: everything SGLang's TokenizerManager sends that is not a
generation (abort, flush cache, internal state, LoRA load/unload, pause/continue, sessions, logging, GC,
shutdown) and the RPC socket. Each is answered as SGLang 0.5.23's scheduler answers it, or refused loudly
with a failure of the type its caller waits for: an unanswered control request hangs its HTTP endpoint.

`ControlRequests` is a mixin of `scheduler.SimScheduler`, which owns the state it reads and changes (running
requests, prefix cache, adapters, sessions, pause flag, counts) and the sockets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import zmq

from sglang_dev.sglang_sim import SIMULATED_BANNER

log = logging.getLogger("sglang_sim")


def abort_reason(message: str = "Aborted", status: int | None = None) -> dict[str, Any]:
    """SGLang's FINISH_ABORT as it reaches the detokenizer."""
    return {"type": "abort", "message": message, "status_code": status,
            "err_type": "BadRequestError" if status == 400 else None}


class ControlRequests:
    # Provided by SimScheduler.
    io: Any
    server_args: Any
    config: Any
    tokens: Any
    running: dict[str, Any]
    prefix_cache: Any
    adapters: dict[str, tuple[str, str]]
    sessions: set[str]
    paused: bool
    exit: bool
    counts: dict[str, int]
    refused: dict[str, int]
    send_to_detokenizer: zmq.Socket
    recv_from_rpc: zmq.Socket

    def _send(self, sock: zmq.Socket, output: Any, recv_req: Any = None) -> None:
        raise NotImplementedError

    def control_handlers(self) -> dict[type, Callable[[Any], Any]]:
        """Request type -> handler; a handler's non-None result goes back to the tokenizer manager."""
        io = self.io
        return {
            io.AbortReq: self._abort,
            io.FlushCacheReqInput: self._flush_cache,
            io.GetInternalStateReq: self._get_internal_state,
            io.SetInternalStateReq: self._set_internal_state,
            io.LoadLoRAAdapterReqInput: self._load_lora,
            io.UnloadLoRAAdapterReqInput: self._unload_lora,
            io.PauseGenerationReqInput: self._pause,
            io.ContinueGenerationReqInput: self._continue,
            io.OpenSessionReqInput: self._open_session,
            io.CloseSessionReqInput: self._close_session,
            io.FreezeGCReq: self._to_detokenizer,
            io.ConfigureLoggingReq: self._configure_logging,
            io.SlowDownReqInput: lambda r: io.SlowDownReqOutput(),
            io.ShutdownReq: self._shutdown,
        }

    def _abort(self, req: Any) -> None:
        for r in self.running.values():
            if r.finished_reason is None and (req.abort_all or r.rid.startswith(req.rid)):
                if req.abort_message:
                    r.to_finish = abort_reason(req.abort_message, 503)
                else:
                    r.to_finish = req.finished_reason or abort_reason()

    def _flush_cache(self, req: Any) -> Any:
        if self.running:
            message = (f"Cache not flushed because there are pending requests. "
                       f"#queue-req: 0, #running-req: {len(self.running)}")
            return self.io.FlushCacheReqOutput(success=False, message=message)
        self.prefix_cache.flush()
        return self.io.FlushCacheReqOutput(success=True)

    def _get_internal_state(self, req: Any) -> Any:
        from sglang.srt.utils.msgspec_utils import msgspec_to_builtins

        state = {k: v for k, v in vars(self.server_args).items() if not k.startswith("_")}
        state.pop("custom_sigquit_handler", None)
        state.update({
            "simulated_scheduler": {
                "note": SIMULATED_BANNER, "tokens": self.config.tokens, "ttft_s": self.config.ttft_s,
                "prefill_s_per_token": self.config.prefill_s_per_token,
                "token_delay_s": self.config.token_delay_s, "counts": dict(self.counts),
                "refused": dict(self.refused), "running": len(self.running), "paused": self.paused,
                "adapters": {name: path for name, path in self.adapters.values()},
            },
            "last_gen_throughput": 0.0, "memory_usage": {}, "load": len(self.running),
        })
        return self.io.GetInternalStateReqOutput(internal_state=msgspec_to_builtins(state))

    def _set_internal_state(self, req: Any) -> Any:
        log.warning("simulated scheduler: /set_internal_state %s refused (not simulated)", req.server_args)
        return self.io.SetInternalStateReqOutput(updated=False)

    def _load_adapter(self, lora_id: str, name: str, path: str, pinned: bool) -> str | None:
        """SGLang's LoRAManager checks, with its own LoRAConfig reading the adapter (so a missing path
        fails exactly as SGLang fails); then the weights go to the token source."""
        from sglang.srt.lora.lora_config import LoRAConfig

        try:
            config = LoRAConfig(path, base_vocab_size=getattr(self.tokens, "vocab_size", None))
            if config.lora_added_tokens_size > 0:
                raise ValueError(f"Failed to load {name} because LoRA serving currently doesn't support "
                                 "adapters that add tokens to the vocabulary")
            if config.use_dora:
                raise ValueError(f"Failed to load {name} because LoRA serving currently doesn't support "
                                 "DoRA adapters")
            for existing, _ in self.adapters.values():
                if existing == name:
                    raise ValueError(f"Failed to load LoRA adapter {name} because it is already loaded")
            rank_limit = self.server_args.max_lora_rank
            allowed = set(self.server_args.lora_target_modules or ())
            wanted = set(config.target_modules or ())
            if (rank_limit is not None and config.r > rank_limit) or (
                    allowed and "all" not in allowed and not wanted <= allowed):
                raise ValueError(
                    f"LoRA adapter {name} with rank {config.r} is incompatible with the current LoRA memory "
                    "pool configuration. Please ensure that the LoRA adapter's rank is within the configured "
                    "`--max-lora-rank` and that the target modules are included in `--lora-target-modules`.")
            self.tokens.load_adapter(lora_id, path)
        except Exception as exc:
            return str(exc)
        self.adapters[lora_id] = (name, path)
        log.info("simulated scheduler: LoRA adapter %s loaded from %s (pinned=%s)", name, path, pinned)
        return None

    def _lora_reply(self, error: str | None) -> Any:
        return self.io.LoRAUpdateOutput(success=error is None, error_message=error or "",
                                        loaded_adapters={name: path for name, path in self.adapters.values()})

    def _load_lora(self, req: Any) -> Any:
        return self._lora_reply(self._load_adapter(req.lora_id, req.lora_name, req.lora_path, req.pinned))

    def _unload_lora(self, req: Any) -> Any:
        self.adapters.pop(req.lora_id, None)
        self.tokens.unload_adapter(req.lora_id)
        return self._lora_reply(None)

    def _pause(self, req: Any) -> None:
        self.paused = True
        log.info("simulated scheduler: generation paused (%s)", req.mode)

    def _continue(self, req: Any) -> None:
        self.paused = False
        log.info("simulated scheduler: generation continues")

    def _open_session(self, req: Any) -> Any:
        session_id = req.session_id or os.urandom(8).hex()
        if session_id in self.sessions:
            log.warning("session id %s already exist, cannot open.", session_id)
            return self.io.OpenSessionReqOutput(session_id=session_id, success=False)
        self.sessions.add(session_id)
        return self.io.OpenSessionReqOutput(session_id=session_id, success=True)

    def _close_session(self, req: Any) -> None:
        if req.session_id not in self.sessions:
            log.warning("session id %s does not exist, cannot delete.", req.session_id)
        self.sessions.discard(req.session_id)

    def _to_detokenizer(self, req: Any) -> None:
        self._send(self.send_to_detokenizer, req, req)

    def _configure_logging(self, req: Any) -> None:
        if req.log_level is not None:
            logging.getLogger().setLevel(req.log_level.upper())
        self._send(self.send_to_detokenizer, req, req)

    def _shutdown(self, req: Any) -> None:
        self.exit = True

    def _rpc(self, req: Any) -> None:
        message = f"simulated scheduler: RPC {getattr(req, 'method', req)!r} is not simulated"
        log.error("%s", message)
        self.refused["RpcReqInput"] = self.refused.get("RpcReqInput", 0) + 1
        self.io.sock_send(self.recv_from_rpc, self.io.RpcReqOutput(success=False, message=message))

    def _refuse(self, req: Any) -> Any:
        """Anything not simulated: answered with a failure of the type its caller waits for, else aborted by
        rid, and always logged at ERROR. An unanswered control request would hang its HTTP endpoint."""
        kind = type(req).__name__
        self.refused[kind] = self.refused.get(kind, 0) + 1
        message = f"simulated scheduler: {kind} is not simulated (sglang_dev.sglang_sim)"
        log.error("%s; refusing it", message)
        reply = self._failure_of(kind, message)
        if reply is not None:
            return reply
        if getattr(req, "rid", None):
            return self.io.AbortReq(rid=req.rid, finished_reason=abort_reason(message, 400))
        log.error("simulated scheduler: no reply type for %s: its caller may wait until its timeout", kind)
        return None

    def _failure_of(self, kind: str, message: str) -> Any:
        names = (kind.replace("ReqInput", "ReqOutput"), kind.replace("Req", "ReqOutput"), kind + "Output")
        for name in names:
            cls = getattr(self.io, name, None)
            if cls is None or name == kind:
                continue
            attempts = ({"success": False, "message": message}, {"success": False, "error_message": message},
                        {"success": False})
            for fields in attempts:
                try:
                    return cls(**fields)
                except TypeError:
                    continue
        return None
