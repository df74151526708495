"""A model served from the local Hub stand-in on `sglang-operator dev up` (real control plane): the engine
downloads it through HF_ENDPOINT with the real `huggingface_hub` client, `kubectl get sgm` shows `Downloading`
with a rising percentage, then the model is Ready; the engine killed mid-download restarts in the same pod and
resumes with a Range request instead of starting over."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_lib import Cluster, stream_text, until
from sglang_dev.cluster import podnet
from sglang_dev.hub_standin import (
    PADDING_FILE,
    TINY_GATED_REPO,
    TINY_REPO,
    HubStandIn,
    serving_in_thread,
    tiny_repos,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NAME = "hub"
PAD_MB = 40
MB = 1024 * 1024


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubStandIn, str]]:
    cache = Path(os.environ.get("SGLANG_ENGINE_CACHE", tmp_path_factory.mktemp("hub-cache")))
    # ~28 s at 1.5 MB/s: the operator polls a loading model every 5 s, so it reports several percentages.
    stand_in = HubStandIn(tiny_repos(cache, lora_seeds=(), pad_mb=PAD_MB), rate=1.5 * MB)
    with serving_in_thread(stand_in) as endpoint:
        yield stand_in, endpoint


def _engine_loading(cluster: Cluster, pod: dict) -> dict:
    local = podnet.local_ip(pod["status"].get("podIP") or "", cluster.info.prefix)
    if local is None:
        return {}
    try:
        with urllib.request.urlopen(f"http://{local}:8000/status", timeout=2) as resp:
            return json.loads(resp.read()).get("loading") or {}
    except OSError:
        return {}


def test_download_progress_in_kubectl_then_ready_and_a_restart_resumes(
        dev_cluster: Cluster, hub: tuple[HubStandIn, str]) -> None:
    stand_in, endpoint = hub
    dev_cluster.apply({
        "apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
        "metadata": {"name": NAME, "namespace": "default"},
        "spec": {"model": TINY_REPO, "backend": "transformers", "replicas": 1,
                 "generation": {"maxNewTokens": 8}, "env": [{"name": "HF_ENDPOINT", "value": endpoint}]}})
    seen: list[str] = []  # status.loading.summary as the operator reports it

    def watch() -> dict:
        model = dev_cluster.get("sgm", NAME)
        summary = (model.get("status", {}).get("loading") or {}).get("summary")
        if summary and (not seen or seen[-1] != summary):
            seen.append(summary)
        return model

    def engine_wrote_10_mb() -> dict | None:
        watch()
        pods = [p for p in dev_cluster.pods(NAME) if not p["metadata"].get("deletionTimestamp")]
        return pods[0] if pods and _engine_loading(dev_cluster, pods[0]).get("bytesDone", 0) >= 10 * MB \
            else None

    pod = until(engine_wrote_10_mb, 120, "the engine to have 10 MB of the model on disk", every_s=0.5)
    table = dev_cluster.kubectl.run("get", "sgm", NAME).stdout
    assert "Downloading" in table.splitlines()[1], table  # the Progress column
    pid = json.loads(dev_cluster.layout.container_pidfile("default", pod["metadata"]["name"], "engine")
                     .read_text())["pid"]
    os.kill(pid, signal.SIGKILL)  # the engine dies mid-download; the kubelet restarts it in the same pod

    def ready() -> dict | None:
        model = watch()
        ok = any(c["type"] == "Ready" and c["status"] == "True" for c in model.get("status", {}).get(
            "conditions", []))
        return model if ok else None

    model = until(ready, 180, "Ready after the restarted download", every_s=0.5)
    assert "loading" not in model["status"]

    percents = [int(s.split()[1].rstrip("%")) for s in seen if s.startswith("Downloading ") and "%" in s]
    assert len(set(percents)) >= 2 and max(percents) > min(percents), seen  # a rising percentage, watched
    padding = [(s.start, s.sent, s.complete) for s in stand_in.served if s.path == PADDING_FILE]
    assert padding[0][0] == 0 and padding[-1][2], padding
    resumed = [p for p in padding[1:] if p[0] >= 10 * MB]
    assert resumed, f"no Range request from >= 10 MB after the restart: {padding}"
    restarted = dev_cluster.get("pod", pod["metadata"]["name"])
    assert restarted["status"]["containerStatuses"][0]["restartCount"] >= 1
    events = dev_cluster.get("events", "--field-selector", f"involvedObject.name={NAME}")["items"]
    assert "Downloading" in {e["reason"] for e in events}
    assert stream_text(dev_cluster.url(NAME), NAME)  # and it serves
    dev_cluster.kubectl.run("delete", "sgm", NAME, "--wait=false")


def test_a_gated_model_without_a_token_shows_its_reason_without_a_crash_loop(
        dev_cluster: Cluster, hub: tuple[HubStandIn, str]) -> None:
    name = "gated"
    dev_cluster.apply({
        "apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"model": TINY_GATED_REPO, "backend": "transformers", "replicas": 1,
                 "env": [{"name": "HF_ENDPOINT", "value": hub[1]}]}})

    def reported() -> dict | None:
        status = dev_cluster.get("sgm", name).get("status", {})
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        return status if ready.get("reason") == "GatedRepo" else None

    status = until(reported, 90, "Ready=False reason GatedRepo on the model", every_s=0.5)
    assert status["phase"] == "Degraded" and status["loading"]["permanent"] is True
    assert "hfTokenSecret" in next(c for c in status["conditions"] if c["type"] == "Degraded")["message"]
    (pod,) = dev_cluster.pods(name)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0  # reported and waiting, not crashing
    table = dev_cluster.kubectl.run("get", "sgm", name).stdout
    assert "Failed (GatedRepo)" in table, table
    dev_cluster.kubectl.run("delete", "sgm", name, "--wait=false")
