"""A `backend: sglang` model on the local cluster (real control plane): the operator's pod, unchanged, runs
the engine, and the node gives the engine its SGLang (SGLang 0.5.23's real frontend with the simulated
scheduler, sglang_dev.sglang_sim, from the side venv `make sglang-sim` builds). Ready with a LoRA adapter,
a streamed chat completion with the `openai` client (base and adapter), an adapter added without a restart,
and a delete that leaves no process: SGLang's own children (tokenizer side, detokenizer, scheduler) exit by
themselves within the grace period, not by the kubelet's leftover sweep.

One SGLang pod at a time (~2.3 GB of RAM: the engine and SGLang's server, scheduler and detokenizer)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import openai
import pytest
from e2e_lib import Cluster, http_json, stream_text, until
from sglang_dev.cluster import podnet, procs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

NAME = "sim"
API_KEY = "real-sim-key"
MODEL = {
    "apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
    "metadata": {"name": NAME, "namespace": "default"},
    "spec": {"model": "builtin:tiny", "backend": "sglang", "replicas": 1,
             "loraAdapters": [{"name": "a1", "source": "builtin:tiny-lora-1"}],
             "generation": {"maxNewTokens": 12},
             # The chat API key reaches the pod by secretKeyRef (the operator never reads the Secret).
             "apiKeySecret": {"name": "sim-api-key", "key": "key"}},
}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_a_sglang_model_on_the_simulated_scheduler(dev_cluster: Cluster) -> None:
    dev_cluster.kubectl.run("create", "secret", "generic", "sim-api-key", f"--from-literal=key={API_KEY}")
    dev_cluster.apply(MODEL)
    # SGLang's frontend imports for 12-25 s on an idle 2-core machine, more when busy.
    dev_cluster.wait("Ready", NAME, timeout_s=300)
    (pod,) = dev_cluster.pods(NAME)
    uid, pod_name = pod["metadata"]["uid"], pod["metadata"]["name"]
    local = podnet.local_ip(pod["status"]["podIP"], dev_cluster.info.prefix)
    status = http_json(f"http://{local}:8000/status")
    assert status["backend"] == "sglang", status
    assert any("scheduler is SIMULATED" in w for w in status["warnings"]), status
    events = (dev_cluster.layout.pod_dir("default", pod_name) / "events.log").read_text()
    assert "backend sglang runs SGLang's real frontend with a SIMULATED scheduler" in events
    assert "nvidia.com/gpu=1 requested; accepted and ignored" in events

    # The engine and SGLang's launcher carry the pod's env marker; SGLang's retitled children (setproctitle
    # overwrites what /proc shows as their environment) are found in the launcher's process group.
    running = {r.pid: _cmdline(r.pid) for r in procs.family(dev_cluster.engine_pids(uid))}
    launcher = [c.split() for c in running.values() if "-m sglang_dev.sglang_sim" in c]
    assert launcher, running
    assert launcher[0][launcher[0].index("--port") + 1] != "30000"  # the pod's private SGLang port
    titles = {c.split()[0] for c in running.values() if c.startswith("sglang::")}
    assert {"sglang::scheduler", "sglang::detokenizer"} <= titles, running

    base = dev_cluster.url(NAME)
    text, chunks, finish = stream_text(base, NAME, api_key=API_KEY)
    assert chunks >= 1 and text and finish in ("stop", "length")
    text, chunks, _ = stream_text(base, "a1", api_key=API_KEY)
    assert chunks >= 1 and text
    with pytest.raises(openai.AuthenticationError):
        stream_text(base, NAME, api_key="wrong")

    patch = {"spec": {"loraAdapters": [*MODEL["spec"]["loraAdapters"],
                                       {"name": "a2", "source": "builtin:tiny-lora-3"}]}}
    dev_cluster.kubectl.run("patch", "sgm", NAME, "--type=merge", "-p", json.dumps(patch))
    until(lambda: dev_cluster.settled(NAME, "AdaptersReady"), 120, "AdaptersReady on the new generation")
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0)
    served = {m.id: m for m in client.models.list().data}
    assert {"a1", "a2"} <= served.keys() and served["a2"].parent == NAME, served
    text, chunks, _ = stream_text(base, "a2", api_key=API_KEY)
    assert chunks >= 1 and text
    (after,) = dev_cluster.pods(NAME)
    assert after["metadata"]["uid"] == uid
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0

    supervisor_log = dev_cluster.layout.log("supervisor")
    log_offset = supervisor_log.stat().st_size
    family = procs.family(dev_cluster.engine_pids(uid))
    pids = {r.pid for r in family}
    dev_cluster.kubectl.run("delete", "sgm", NAME, "--timeout=120s", timeout=130)
    until(lambda: not dev_cluster.pods(NAME), 120, "the pod deleted")
    until(lambda: not [r for r in family if r.alive()], 30, f"no process of the pod left ({running})")
    assert not dev_cluster.engine_pids(uid)
    # Each exited by itself within the grace period: no liveness kill while terminating, no SIGKILL after the
    # grace, and the kubelet's sweep of leftovers found nothing of this pod.
    events = (dev_cluster.layout.pod_dir("default", pod_name) / "events.log").read_text()
    assert "did not stop within" not in events and "failed liveness" not in events, events[-2000:]
    swept = re.findall(r"leftover process\(es\) \[([\d, ]*)\]", supervisor_log.read_text()[log_offset:])
    assert not {int(p) for line in swept for p in line.split(",") if p.strip()} & pids, swept
    dev_cluster.kubectl.run("delete", "secret", "sim-api-key")
