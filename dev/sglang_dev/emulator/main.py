"""`sglang-operator dev apiserver`: the Kubernetes API emulator as a standalone server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from .harness import DEFAULT_CRD_DIR, run_emulator


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sglang-operator dev apiserver",
        description="Serve an in-memory Kubernetes API (KMock-based) for tests and the local cluster.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback; default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="listen port (0: a free one; default 0)")
    parser.add_argument("--kubeconfig", type=Path, required=True, help="where to write a kubeconfig for it")
    parser.add_argument(
        "--crd",
        type=Path,
        action="append",
        default=None,
        help=f"a CRD file or folder to install at start (repeatable; default {DEFAULT_CRD_DIR})",
    )
    parser.add_argument("--no-crds", action="store_true", help="install no CRD at start")
    parser.add_argument(
        "--bookmark-interval", type=float, default=5.0, help="seconds between watch bookmarks"
    )
    parser.add_argument(
        "--graceful-pod-deletion",
        action="store_true",
        help="running pods are marked Terminating on delete and removed when a kubelet deletes them again "
        "with gracePeriodSeconds=0 (as a real cluster does); default: removed at once",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="restore objects from this JSON file at start, save at stop",
    )
    parser.add_argument(
        "--pod-logs-dir",
        type=Path,
        default=None,
        help="serve `kubectl logs` from DIR/<namespace>_<pod>/logs/<container>.log (a local kubelet's files)",
    )
    parser.add_argument("--quiet", action="store_true", help="log only requests answered 5xx")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    crds = [] if args.no_crds else (args.crd or ([DEFAULT_CRD_DIR] if DEFAULT_CRD_DIR.is_dir() else []))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with run_emulator(
        args.kubeconfig,
        host=args.host,
        port=args.port or None,
        crds=crds,
        bookmark_interval=args.bookmark_interval,
        graceful_pod_deletion=args.graceful_pod_deletion,
        state_file=args.state_file,
        pod_logs_dir=args.pod_logs_dir,
        log_requests=not args.quiet,
    ) as running:
        print(f"apiserver: listening on {running.url}; kubeconfig written to {args.kubeconfig}", flush=True)
        await stop.wait()
        print("apiserver: stopping", flush=True)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # the emulator logs each request itself
    try:
        asyncio.run(serve(args))
    except ValueError as exc:  # a CRD refused at start
        print(f"apiserver: {exc}")
        return 2
    return 0
