"""`python -m sglang_dev.sglang_sim ARGS`: `sglang.launch_server`'s __main__ with a simulated scheduler.

Same steps as SGLang 0.5.23's launch_server.py: plugins, `prepare_server_args(argv)` (SGLang's parser: exit 2
on a flag it rejects), then the default HTTP mode's `launch_server`, given our scheduler entry point; the
process tree is killed on the way out as SGLang does. Modes that do not start the HTTP server with a
scheduler (gRPC, encoder-only, Ray) are refused with exit 2.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    from sglang.srt.arg_groups.overrides import resolving_view
    from sglang.srt.plugins import load_plugins
    from sglang.srt.server_args import prepare_server_args
    from sglang.srt.utils import kill_process_tree
    from sglang.srt.utils.common import suppress_noisy_warnings

    from sglang_dev.sglang_sim import SIMULATED_BANNER
    from sglang_dev.sglang_sim.scheduler import run_simulated_scheduler

    suppress_noisy_warnings()
    load_plugins()
    if not any(arg == "--device" or arg.startswith("--device=") for arg in argv):
        argv = [*argv, "--device", "cpu"]
    server_args = prepare_server_args(argv)
    print(f"[sglang_sim] {SIMULATED_BANNER}", file=sys.stderr, flush=True)
    try:
        server_args.resolve_once()
        cfg = resolving_view(server_args)
        if cfg.encoder_only or cfg.smg_grpc_mode or cfg.grpc_mode or cfg.use_ray:
            print("sglang_sim: only SGLang's default HTTP mode is simulated (no gRPC, encoder-only or Ray)",
                  file=sys.stderr)
            sys.exit(2)
        from sglang.srt.entrypoints.http_server import launch_server

        launch_server(server_args, run_scheduler_process_func=run_simulated_scheduler)
    finally:
        kill_process_tree(os.getpid(), include_parent=False)


if __name__ == "__main__":
    main(sys.argv[1:])
