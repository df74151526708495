"""Helpers for the end-to-end tests: the running local cluster (tests/conftest.py's `dev_cluster`), driven
with the real kubectl. (A module of its own, not conftest.py: several conftest.py files share that name.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sglang_dev.cluster import podnet, procs
from sglang_dev.cluster.layout import ClusterInfo, Layout
from sglang_dev.cluster.tools import Kubectl, service_url

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


def dev(verb: str, state: Path, *extra: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sglang_operator.cli", "dev", verb, "--state-dir", str(state), *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)


def until(probe: Callable[[], T], timeout_s: float, what: str, every_s: float = 0.3) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` (and the last value) on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}; last: {last!r}")


@dataclass(frozen=True)
class Cluster:
    layout: Layout
    info: ClusterInfo
    kubectl: Kubectl

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl.run("apply", "-f", "-", input=json.dumps(manifest))

    def get(self, *args: str) -> dict[str, Any]:
        return self.kubectl.json("get", *args)

    def pods(self, model: str) -> list[dict[str, Any]]:
        return self.get("pods", "-l", f"app.kubernetes.io/instance={model}")["items"]

    def wait(self, condition: str, model: str, timeout_s: int = 120) -> None:
        self.kubectl.run("wait", f"--for=condition={condition}", f"sgm/{model}", f"--timeout={timeout_s}s",
                         timeout=timeout_s + 10)

    def settled(self, model: str, condition: str = "Ready") -> dict[str, Any] | None:
        """The CR once its status describes the current generation with `condition` True, else None."""
        sgm = self.get("sgm", model)
        status = sgm.get("status") or {}
        conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
        current = status.get("observedGeneration") == sgm["metadata"]["generation"]
        if current and conds.get(condition) == "True":
            return sgm
        return None

    def url(self, model: str) -> str:
        return service_url(self.layout, "default", model)

    def engine_pids(self, pod_uid: str) -> list[int]:
        return procs.marked_pids(procs.CONTAINER_MARKER, f"{self.info.cluster_id}/{pod_uid}")


def stream_text(base: str, model: str, prompt: str = "Hello there",
                api_key: str = "unused") -> tuple[str, int, str | None]:
    """(text, content chunks, finish reason) of a streamed chat completion with the `openai` client."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key=api_key, max_retries=0, timeout=60)
    text, chunks, finish = "", 0, None
    for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                max_tokens=12, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            chunks += 1
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    return text, chunks, finish


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def served_requests(local_ip: str) -> float:
    """Chat completion requests an engine has answered (its sglang_engine_requests_total, every label)."""
    with urllib.request.urlopen(f"http://{local_ip}:8000/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    counts = [line for line in lines if line.startswith("sglang_engine_requests_total")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in counts)


def ready_endpoints(cluster: Cluster, service: str) -> list[str]:
    """The local addresses of a Service's ready endpoints, from its EndpointSlices (ready unset = ready)."""
    slices = cluster.get("endpointslices", "-l", f"kubernetes.io/service-name={service}")["items"]
    ready = [a for s in slices for e in s.get("endpoints") or []
             if (e.get("conditions") or {}).get("ready") is not False for a in e["addresses"]]
    return sorted(podnet.local_ip(a, cluster.info.prefix) or a for a in ready)
