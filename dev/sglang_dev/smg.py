"""SGLang's gateway (SMG, `smg` from PyPI, the `router` extra) as a local process in front of given engines.

For tests and benchmarks on one machine: `python -m smg.launch_router --worker-urls ...` on 127.0.0.1, its
metrics server on a loopback port too (it binds 0.0.0.0:29000 unless told otherwise). In a cluster the
operator runs the same module with Kubernetes discovery instead (sglang_operator/builders/router.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

SMG_VERSION = "1.13.0"
READY_WITHIN_S = 60.0


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held open together while chosen, so none repeats)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def smg_argv(worker_urls: Sequence[str], port: int, metrics_port: int, *, policy: str = "cache_aware",
             api_key: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    argv = [sys.executable, "-m", "smg.launch_router", "--host", "127.0.0.1", "--port", str(port),
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
            "--policy", policy, "--log-level", "warn", "--worker-urls", *worker_urls]
    if api_key:
        argv += ["--api-key", api_key]
    return [*argv, *extra]


def get_workers(base: str, api_key: str | None = None) -> tuple[int, dict]:
    """SMG's GET /workers: (status, body); status 0 when nothing listens yet."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        request = urllib.request.Request(f"{base}/workers", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except OSError:
        return 0, {}


def healthy_workers(base: str, api_key: str | None = None) -> list[str]:
    status, body = get_workers(base, api_key)
    return sorted(w["url"] for w in body.get("workers", []) if w.get("is_healthy")) if status == 200 else []


class Smg:
    """A running SMG: `.base` (http://127.0.0.1:PORT), `.log` (its output), `.stop()`."""

    def __init__(self, argv: list[str], base: str, log: Path) -> None:
        self.base = base
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "NO_COLOR": "1"})

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_workers(self, urls: Sequence[str], api_key: str | None,
                         within_s: float = READY_WITHIN_S) -> None:
        deadline = time.monotonic() + within_s
        while healthy_workers(self.base, api_key) != sorted(urls):
            if self.proc.poll() is not None:
                raise RuntimeError(f"smg exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"smg did not register {list(urls)} within {within_s:g} s:\n"
                                   f"{self.log_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM (SMG drains), SIGKILL of its group after 10 s."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self._out.close()


@contextmanager
def running_smg(worker_urls: Sequence[str], log: Path, *, policy: str = "cache_aware",
                api_key: str | None = None, wait: bool = True, extra: Sequence[str] = ()) -> Iterator[Smg]:
    """SMG in front of `worker_urls` until every one is registered and healthy (unless wait=False)."""
    port, metrics_port = free_ports(2)
    smg = Smg(smg_argv(worker_urls, port, metrics_port, policy=policy, api_key=api_key, extra=extra),
              f"http://127.0.0.1:{port}", log)
    try:
        if wait:
            smg.wait_for_workers(worker_urls, api_key)
        yield smg
    finally:
        smg.stop()
