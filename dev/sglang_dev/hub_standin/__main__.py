"""`python -m sglang_dev.hub_standin` (or `sglang-operator dev hub`): serve the tiny model and its adapters
in the Hugging Face Hub's HTTP layout. Prints `HF_ENDPOINT=<url>` once listening; runs until SIGINT or
SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from sglang_dev import hub_standin
from sglang_dev.hub_standin import DEFAULT_LORA_SEEDS, DEFAULT_TOKEN, HubStandIn, tiny_repos


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sglang-operator dev hub", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    p.add_argument("--port", type=int, default=0, help="the Hub's port (default: a free one)")
    p.add_argument("--cdn-port", type=int, default=0,
                   help="the port LFS files redirect to (default: a free one)")
    p.add_argument("--rate", type=float, default=None, metavar="BYTES_PER_S",
                   help="throttle each file body to this many bytes per second (default: no throttle)")
    p.add_argument("--pad-mb", type=float, default=0, metavar="MB",
                   help=f"add MB of filler ({hub_standin.PADDING_FILE}, ignored by the loaders) to the model "
                        "repositories, so a download lasts long enough to watch (default: none)")
    p.add_argument("--token", default=DEFAULT_TOKEN, help="the token gated repositories accept")
    p.add_argument("--lora-seed", type=int, action="append", default=None, metavar="SEED",
                   help=f"serve {hub_standin.tiny_lora_repo(0).removesuffix('0')}SEED (repeatable; "
                        f"default: {' '.join(map(str, DEFAULT_LORA_SEEDS))})")
    p.add_argument("--cache-dir", type=Path, default=Path(os.environ.get(
        "SGLANG_ENGINE_CACHE", Path.home() / ".cache" / "sglang-engine")),
        help="where the tiny model is built once (default: %(default)s)")
    p.add_argument("--endpoint-file", type=Path, default=None,
                   help="also write the endpoint URL to this file once listening")
    return p


async def serve(args: argparse.Namespace) -> None:
    repos = await asyncio.to_thread(tiny_repos, args.cache_dir, tuple(args.lora_seed or DEFAULT_LORA_SEEDS),
                                    args.pad_mb)
    running = await hub_standin.start(HubStandIn(repos, rate=args.rate, token=args.token), args.host,
                                      args.port, args.cdn_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(f"HF_ENDPOINT={running.endpoint}", flush=True)
        print("repositories: " + ", ".join(r.repo_id for r in repos), flush=True)
        if args.endpoint_file is not None:
            tmp = args.endpoint_file.with_suffix(".tmp")
            tmp.write_text(running.endpoint)
            tmp.rename(args.endpoint_file)
        await stop.wait()
    finally:
        await running.close()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(build_parser().parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
