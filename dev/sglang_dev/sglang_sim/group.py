"""Multi-node launches in the simulated scheduler: the group's rendezvous at the leader's dist-init address.

SGLang with `--nnodes N --node-rank i --dist-init-addr HOST:PORT` starts, on every node, the scheduler
processes of that node's tensor-parallel ranks; the real ones meet through torch.distributed at HOST:PORT
(node 0 hosts the store) and then through NCCL, and only then report ready. The simulation keeps what the
rest of the system can observe of that:

- node 0's first scheduler listens on HOST:PORT and waits for the first scheduler of every other node to join
  (one JSON line each: rank, nnodes, tp size; a disagreeing one is refused); only when all have joined does
  any scheduler send SGLang its startup handshake, so node 0's `/ready` and the other nodes' `/health` turn
  200 only once the group is whole;
- a node that has not joined within the join timeout fails node 0's startup, naming the missing ranks;
- SGLANG_SIM_CUT_OFF_RANKS (node ranks, comma-separated) never reach the leader, as a worker that a network
  policy or a wrong address keeps from it: they try until the join timeout and then fail (for tests of what
  a group that never forms looks like);
- a member that goes away (its process dies, its pod is deleted) ends every other member's scheduler: SGLang
  then exits on every node, as a real group does when NCCL loses a peer, so the group restarts whole.

Pod names: the local cluster has no DNS. A host name that does not resolve is looked up, as
`<pod>.<subdomain>.<namespace>[.svc[.cluster.local]]`, in the local node agent's pod table (the pods.json next
to the pod folders that SGLANG_DEV_POD_ROOT names), which is what cluster DNS answers for a pod behind a
headless Service, such as a LeaderWorkerSet's leader.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("sglang_sim")

JOIN_TIMEOUT_ENV = "SGLANG_SIM_JOIN_TIMEOUT_S"
CUT_OFF_ENV = "SGLANG_SIM_CUT_OFF_RANKS"
DEFAULT_JOIN_TIMEOUT_S = 300.0
RETRY_S = 0.5


class GroupError(RuntimeError):
    """The group could not form (a rank never joined, or disagreed): startup fails with this message."""


def join_timeout(server_args: Any) -> float:
    raw = os.environ.get(JOIN_TIMEOUT_ENV)
    if raw:
        return float(raw)
    return float(getattr(server_args, "dist_timeout", None) or DEFAULT_JOIN_TIMEOUT_S)


def cut_off(node_rank: int) -> bool:
    ranks = os.environ.get(CUT_OFF_ENV, "")
    return str(node_rank) in {r.strip() for r in ranks.split(",")}


def local_pod_address(name: str) -> str | None:
    """`<pod>.<subdomain>.<namespace>...` -> the pod's loopback address in the local cluster, else None."""
    root = os.environ.get("SGLANG_DEV_POD_ROOT")
    parts = name.split(".")
    if not root or len(parts) < 3 or parts[3:] not in ([], ["svc"], ["svc", "cluster", "local"]):
        return None
    table_file = Path(root).parents[1] / "kubelet" / "pods.json"  # <state>/pods/<ns>_<pod> -> <state>
    try:
        table = json.loads(table_file.read_text())
    except (OSError, ValueError):
        return None
    entry = table.get(f"{parts[2]}/{parts[0]}")
    return str(entry["ip"]) if isinstance(entry, dict) and entry.get("ip") else None


def resolve(host: str) -> str | None:
    """An address for `host`: DNS first, then the local cluster's pod table."""
    try:
        return str(socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
    except OSError:
        return local_pod_address(host)


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def _recv(sock: socket.socket) -> dict[str, Any] | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            return None
        data += chunk
    return json.loads(data)


class Group:
    """One node's membership: `join()` blocks until the whole group is there; `watch(on_lost)` then calls
    `on_lost(why)` once, from a thread, when a member goes away."""

    def __init__(self, dist_init_addr: str, nnodes: int, node_rank: int, tp_size: int,
                 timeout_s: float) -> None:
        self.host, self.port = split_addr(dist_init_addr)
        self.nnodes, self.node_rank, self.tp_size = nnodes, node_rank, tp_size
        self.timeout_s = timeout_s
        self.peers: dict[int, socket.socket] = {}  # node 0: rank -> connection; others: {0: leader}

    def _address(self, deadline: float) -> str:
        while True:
            address = resolve(self.host)
            if address is not None:
                return address
            if time.monotonic() >= deadline:
                raise GroupError(f"node rank {self.node_rank}: {self.host} does not resolve")
            time.sleep(RETRY_S)

    def join(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        address = self._address(deadline)
        if self.node_rank == 0:
            self._host_the_group(address, deadline)
        else:
            self._join_the_leader(address, deadline)
        log.warning("simulated scheduler: node rank %d of %d joined its group at %s:%d", self.node_rank,
                    self.nnodes, self.host, self.port)

    def _host_the_group(self, address: str, deadline: float) -> None:
        server = socket.create_server((address, self.port))
        server.settimeout(RETRY_S)
        hello = {"nnodes": self.nnodes, "tp_size": self.tp_size}
        with server:
            while len(self.peers) < self.nnodes - 1:
                if time.monotonic() >= deadline:
                    missing = sorted(set(range(1, self.nnodes)) - set(self.peers))
                    raise GroupError(f"node ranks {missing} did not join the group at {self.host}:"
                                     f"{self.port} within {self.timeout_s:g} s")
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                conn.settimeout(10)
                try:
                    joined = _recv(conn) or {}
                except (OSError, ValueError):
                    conn.close()
                    continue
                rank = joined.get("rank")
                refusal = next((f"{key} {joined.get(key)} != {want}" for key, want in hello.items()
                                if joined.get(key) != want), None)
                if refusal is None and (not isinstance(rank, int) or not 0 < rank < self.nnodes):
                    refusal = f"rank {rank!r} is not a worker rank of {self.nnodes} nodes"
                if refusal is not None or not isinstance(rank, int) or rank in self.peers:
                    with contextlib.suppress(OSError):
                        _send(conn, {"refused": refusal or f"rank {rank} already joined"})
                    conn.close()
                    log.error("simulated scheduler: refused a member: %s", refusal or f"rank {rank} twice")
                    continue
                self.peers[rank] = conn
        for conn in self.peers.values():
            _send(conn, {"joined": sorted([0, *self.peers])})

    def _join_the_leader(self, address: str, deadline: float) -> None:
        if cut_off(self.node_rank):
            log.warning("simulated scheduler: node rank %d is cut off from its leader (%s)", self.node_rank,
                        CUT_OFF_ENV)
            time.sleep(max(0.0, deadline - time.monotonic()))
            raise GroupError(f"node rank {self.node_rank}: the leader at {self.host}:{self.port} did not "
                             f"answer within {self.timeout_s:g} s: cut off ({CUT_OFF_ENV})")
        while True:
            try:
                conn = socket.create_connection((address, self.port), timeout=5)
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise GroupError(f"node rank {self.node_rank}: the leader at {self.host}:{self.port} did "
                                     f"not answer within {self.timeout_s:g} s: {exc}") from exc
                time.sleep(RETRY_S)
        _send(conn, {"rank": self.node_rank, "nnodes": self.nnodes, "tp_size": self.tp_size})
        conn.settimeout(max(1.0, deadline - time.monotonic()))
        reply = _recv(conn)
        if reply is None or "joined" not in reply:
            raise GroupError(f"node rank {self.node_rank}: the leader refused: "
                             f"{(reply or {}).get('refused', 'connection closed')}")
        self.peers[0] = conn

    def watch(self, on_lost: Callable[[str], None]) -> None:
        def wait(rank: int, conn: socket.socket) -> None:
            conn.settimeout(None)
            with contextlib.suppress(OSError):
                while conn.recv(4096):
                    pass
            on_lost(f"node rank {rank} left the group")

        for rank, conn in self.peers.items():
            threading.Thread(target=wait, args=(rank, conn), daemon=True, name=f"group-rank-{rank}").start()
