"""`kubectl logs` served from a local kubelet's log files (`--pod-logs-dir`)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from helpers import DEFAULT
from sglang_dev.emulator import EmulatorThread

KUBECTL = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "kubectl"


def test_kubectl_logs_tail_and_follow(tmp_path):
    pods_dir = tmp_path / "pods"
    log = pods_dir / "default_p" / "logs" / "engine.log"
    log.parent.mkdir(parents=True)
    log.write_text("one\ntwo\nthree\n")
    with EmulatorThread(tmp_path / "kubeconfig", pod_logs_dir=pods_dir) as k8s:
        pods = k8s.call(k8s.emulator.store.resource, "", "v1", "pods")
        pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "engine", "image": "x:1"}]}}
        k8s.call(k8s.emulator.api.create, pods, "default", pod, DEFAULT)
        base = [str(KUBECTL), "--kubeconfig", str(k8s.kubeconfig), "--cache-dir", str(tmp_path / "cache")]

        def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*base, *args], capture_output=True, text=True, timeout=30, check=False)

        assert kubectl("logs", "p").stdout == "one\ntwo\nthree\n"
        assert kubectl("logs", "p", "--tail=1", "-c", "engine").stdout == "three\n"
        wrong = kubectl("logs", "p", "-c", "nope")
        assert wrong.returncode != 0 and "container nope is not valid for pod p" in wrong.stderr

        def following() -> bool:
            return any(
                r.path.endswith("/p/log") and "follow=true" in r.query
                for r in k8s.call(lambda: list(k8s.emulator.request_log))
            )

        def append_then_delete() -> None:
            for _ in range(100):  # until kubectl is following (however slowly it starts)
                if following():
                    break
                time.sleep(0.1)
            time.sleep(0.3)
            with log.open("a") as out:
                out.write("four\n")
            time.sleep(0.5)
            k8s.call(k8s.emulator.api.delete, pods, "default", "p", DEFAULT)

        writer = threading.Thread(target=append_then_delete)
        writer.start()
        followed = kubectl("logs", "-f", "p")  # ends when the pod goes
        writer.join()
        assert followed.stdout == "one\ntwo\nthree\nfour\n"


def test_without_a_logs_dir_logs_are_refused_clearly(kubectl):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    assert kubectl("apply", "-f", "-", input=json.dumps(pod)).returncode == 0
    out = kubectl("logs", "p")
    assert out.returncode != 0 and "--pod-logs-dir" in out.stderr
