"""The process behind `dev up`: the emulator and the operator as supervised children, and the Deployment
controller, kubelet and Service proxy as asyncio tasks. SIGTERM/SIGINT stops everything in order: the
operator, every pod (preStop, SIGTERM, grace, SIGKILL), the proxy, the emulator, then anything left that
carries the cluster's env marker.

Run as `python -m sglang_dev.cluster.supervisor --state-dir DIR` (what `dev up --detach` does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from sglang_dev.cluster import podnet, procs
from sglang_dev.cluster.children import Child, run_until_stopped
from sglang_dev.cluster.controller import DeploymentController
from sglang_dev.cluster.kubeapi import Credentials, KubeClient, cancel_all
from sglang_dev.cluster.kubelet import Kubelet, free_port
from sglang_dev.cluster.layout import READY_FILE, ClusterInfo, Layout
from sglang_dev.cluster.proxy import ServiceProxy
from sglang_dev.cluster.realcluster import NodeOptions, run_real_cluster

log = logging.getLogger("sglang_dev.cluster")
CHILD_STOP_GRACE_S = 10.0


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.05)
        return s.connect_ex((host, port)) == 0


def pick_prefix() -> int:
    """A second octet for this cluster's loopback addresses that no other local cluster seems to use."""
    candidates = [p for p in range(64, 251) if p not in podnet.SERVICE_OCTETS]
    random.shuffle(candidates)
    for prefix in candidates:
        if not _listening(f"127.{prefix}.0.2", 8000) and not _listening(f"127.{prefix}.1.1", 8000):
            return prefix
    raise RuntimeError("no free 127.x.0.0/16 range for the local cluster")


async def wait_for_api(url: str, child: Child, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if child.proc is not None and child.proc.returncode is not None:
                raise RuntimeError(f"the API emulator exited ({child.proc.returncode}); see "
                                   f"{child.layout.log(child.name)}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(f"{url}/version", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the API emulator did not answer on {url} within {timeout_s:.0f}s")


@dataclass(frozen=True)
class ClusterOptions:
    operator_args: tuple[str, ...] = ()
    probe_period_cap: float | None = None
    emulator: bool = False  # the KMock-based API emulator and our own Deployment controller (fast, partial)
    node_gpus: int = 8


async def run_cluster(layout: Layout, options: ClusterOptions, stop: asyncio.Event) -> None:
    layout.root.mkdir(parents=True, exist_ok=True)
    (layout.root / READY_FILE).unlink(missing_ok=True)
    cluster_id = secrets.token_hex(6)
    prefix = pick_prefix()
    procs.write_pidfile(layout.pidfile("supervisor"), os.getpid(), sys.argv)
    try:
        if options.emulator:
            await run_emulator_cluster(layout, options, stop, cluster_id, prefix)
        else:
            # Every process started from here on (the control plane's too) carries the cluster's marker.
            os.environ[procs.CLUSTER_MARKER] = cluster_id
            env = {**os.environ}
            env.pop("KUBECONFIG", None)
            ClusterInfo(cluster_id, prefix, "").dump(layout.cluster_file)
            log.info("cluster %s: loopback range 127.%d.0.0/16, state in %s", cluster_id, prefix, layout.root)
            await run_real_cluster(layout, stop, cluster_id, prefix, env, options.operator_args,
                                   NodeOptions(gpus=options.node_gpus), options.probe_period_cap)
    finally:
        left = procs.kill_marked(procs.CLUSTER_MARKER, cluster_id)
        if left:
            log.warning("killed %d leftover process(es): %s", len(left), left)
        with contextlib.suppress(FileNotFoundError):
            layout.pidfile("supervisor").unlink()
        log.info("local cluster stopped; nothing left running")


async def run_emulator_cluster(layout: Layout, options: ClusterOptions, stop: asyncio.Event, cluster_id: str,
                               prefix: int) -> None:
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, procs.CLUSTER_MARKER: cluster_id}
    env.pop("KUBECONFIG", None)
    py = sys.executable
    ClusterInfo(cluster_id, prefix, api_url, emulator=True).dump(layout.cluster_file)
    log.info("cluster %s: loopback range 127.%d.0.0/16, state in %s", cluster_id, prefix, layout.root)

    # Graceful pod deletion as in a real cluster: a deleted pod shows Terminating (deletionTimestamp) while
    # the kubelet runs preStop and SIGTERM; the kubelet then finishes the deletion (gracePeriodSeconds=0).
    emulator = Child("emulator", [py, "-m", "sglang_operator.cli", "dev", "apiserver", "--host", "127.0.0.1",
                                  "--port", str(port), "--kubeconfig", str(layout.kubeconfig),
                                  "--graceful-pod-deletion"], layout, env)
    operator_argv = [py, "-m", "sglang_operator.cli", "run", "--kubeconfig", str(layout.kubeconfig),
                     *options.operator_args]
    operator = Child("operator", operator_argv, layout, env)
    tasks: list[asyncio.Task[None]] = []
    client: KubeClient | None = None
    kubelet: Kubelet | None = None
    try:
        log.info("starting the API emulator on %s ...", api_url)
        await emulator.start()
        await wait_for_api(api_url, emulator)
        log.info("API emulator ready; kubeconfig %s", layout.kubeconfig)
        client = KubeClient(Credentials.from_kubeconfig(layout.kubeconfig))
        kubelet = Kubelet(client, layout, cluster_id, prefix, probe_period_cap=options.probe_period_cap)
        tasks = [asyncio.create_task(emulator.supervise()),
                 asyncio.create_task(DeploymentController(client).run()),
                 asyncio.create_task(kubelet.run()),
                 asyncio.create_task(ServiceProxy(client, layout, prefix).run())]
        log.info("Deployment controller, kubelet and Service proxy running")
        await operator.start()
        tasks.append(asyncio.create_task(operator.supervise()))
        (layout.root / READY_FILE).write_text(api_url)
        log.info("local cluster ready: export KUBECONFIG=%s", layout.kubeconfig)
        await run_until_stopped(stop, tasks)
    finally:
        log.info("stopping: operator, pods, proxy, emulator ...")
        (layout.root / READY_FILE).unlink(missing_ok=True)
        if kubelet is not None:
            kubelet.closing = True
        # The operator and the pods stop side by side; the controller keeps running until the pods are
        # gone only to keep Deployment status honest, it cannot recreate pods (the kubelet starts nothing).
        await asyncio.gather(operator.stop(), kubelet.shutdown() if kubelet is not None else asyncio.sleep(0))
        await cancel_all(tasks)
        await emulator.stop()
        if client is not None:
            await client.close()


def serve(layout: Layout, options: ClusterOptions) -> int:
    """Run the cluster in this process until SIGTERM/SIGINT."""
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_cluster(layout, options, stop)

    try:
        asyncio.run(main())
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    return 0


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stdout)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sglang_dev.cluster.supervisor")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--operator-arg", action="append", default=[],
                        help="extra argument for `sglang-operator run` (repeats)")
    parser.add_argument("--probe-period-cap", type=float, default=None)
    parser.add_argument("--emulator", action="store_true")
    parser.add_argument("--node-gpus", type=int, default=8)
    args = parser.parse_args(argv)
    configure_logging()
    return serve(Layout.at(args.state_dir), ClusterOptions(tuple(args.operator_arg), args.probe_period_cap,
                                                           args.emulator, args.node_gpus))


if __name__ == "__main__":
    sys.exit(main())
