"""The SGLang backend end to end through the local cluster: the engine launches the protocol-faithful
SGLang stand-in (tests/standin) exactly as it launches SGLang, chosen through the CR's env."""

from __future__ import annotations

import shutil
from pathlib import Path

import openai
import pytest
from e2e_lib import Cluster, http_json, stream_text, until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

NAME = "e2e-sglang"
STANDIN = Path(__file__).resolve().parents[1] / "standin" / "sglang_standin"
# The stand-in's code reaches the pod the way files reach real pods: on a volume (the model-cache claim,
# mounted at /models), not by a host path, which the kubelet could remap (a checkout under /tmp would fall
# under the pod's /tmp emptyDir).
CLAIM = "e2e-standin-code"
MODEL = {
    "apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
    "metadata": {"name": NAME, "namespace": "default"},
    "spec": {"model": "builtin:tiny", "backend": "sglang", "replicas": 1,
             "modelCache": {"claimName": CLAIM},
             "env": [{"name": "PYTHONPATH", "value": "/models/standin"},
                     {"name": "SGLANG_ENGINE_SGLANG_MODULE", "value": "sglang_standin"}],
             # The chat API key reaches the pod by secretKeyRef (the operator never reads the Secret).
             "apiKeySecret": {"name": "e2e-api-key", "key": "key"}},
}
API_KEY = "e2e-secret-key"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_sglang_backend_through_the_standin(cluster: Cluster) -> None:
    shutil.copytree(STANDIN, cluster.layout.root / "pvcs" / "default" / CLAIM / "standin" / "sglang_standin",
                    ignore=shutil.ignore_patterns("__pycache__"))
    cluster.kubectl.run("create", "secret", "generic", "e2e-api-key", f"--from-literal=key={API_KEY}")
    cluster.apply(MODEL)
    cluster.wait("Ready", NAME)
    (pod,) = cluster.pods(NAME)
    uid, ip = pod["metadata"]["uid"], pod["status"]["podIP"]
    assert http_json(f"http://{ip}:8000/status")["backend"] == "sglang"
    # The engine's SGLang child runs in its own session; the kubelet still knows it by the pod's env marker.
    standin = [_cmdline(pid).split() for pid in cluster.engine_pids(uid) if "sglang_standin" in _cmdline(pid)]
    assert standin, "no SGLang stand-in process for the pod"
    # Pods share 127.0.0.1 here, so the kubelet gave this engine a private SGLang port (not 30000).
    assert standin[0][standin[0].index("--port") + 1] != "30000"
    text, chunks, finish = stream_text(cluster.url(NAME), NAME, api_key=API_KEY)
    assert chunks >= 1 and text and finish in ("stop", "length")
    with pytest.raises(openai.AuthenticationError):
        stream_text(cluster.url(NAME), NAME, api_key="wrong")
    events = (cluster.layout.pod_dir("default", pod["metadata"]["name"]) / "events.log").read_text()
    assert "nvidia.com/gpu=1 requested; accepted and ignored" in events

    cluster.kubectl.run("delete", "sgm", NAME, "--timeout=60s")
    until(lambda: not cluster.pods(NAME), 60, "the pod deleted")
    until(lambda: not cluster.engine_pids(uid), 90, "no engine or stand-in process left")
