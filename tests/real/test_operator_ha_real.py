"""Operator high availability on the real control plane: the chart with 2 replicas and leader election, both
operators running as the chart's ServiceAccount (so the Lease RBAC is the chart's). Only the Lease holder
reconciles; killing it (SIGKILL: no release) lets the standby take over once the Lease expires, and a graceful
stop (SIGTERM: released) hands over within a retry period. Each takeover is proven by a change the new leader
reconciles. The failover times are printed (docs/operations.md quotes them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clitools import ROOT

pytestmark = pytest.mark.timeout(150)

RELEASE = "sglang-operator-ha"
RELEASE_NAMESPACE = "ha-system"
# Shorter than the chart's default 15 s (client-go's), so the test is; not much shorter: a loaded 2-core
# machine can starve a leader's event loop for seconds, and a standby would then take over by mistake.
LEASE_SECONDS = 8
MODEL = "failover"


def eventually(check, within: float, what: str):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    pytest.fail(f"not within {within}s: {what}")


class Operator:
    """`sglang-operator run` as its own process (its own session, killed by the test), logging to a file."""

    def __init__(self, name: str, kubeconfig: Path, namespace: str, log_dir: Path):
        self.name, self.log = name, log_dir / f"operator-{name}.log"
        argv = [sys.executable, "-m", "sglang_operator.cli", "run", "--kubeconfig", str(kubeconfig),
                "--namespace", namespace, "--leader-lease", f"{RELEASE_NAMESPACE}/{RELEASE}",
                "--leader-lease-seconds", str(LEASE_SECONDS)]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                         start_new_session=True, env={**os.environ, "KUBECONFIG": ""})

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def leads(self) -> bool:
        return "leader: holding lease" in self.text()

    def waits(self) -> bool:
        return "standby: lease" in self.text()

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=40)


@pytest.fixture
def ha_release(real_helm, real_crd, namespace) -> Iterator[str]:
    out = real_helm("install", RELEASE, str(ROOT / "charts" / "sglang-operator"), "--namespace",
                    RELEASE_NAMESPACE, "--create-namespace", "--set", "replicas=2",
                    "--set", "leaderElection.enabled=true",
                    "--set", f"leaderElection.leaseSeconds={LEASE_SECONDS}",
                    "--set", f"watchNamespaces={{{namespace}}}", timeout=180)
    assert out.returncode == 0, out.stderr
    yield namespace
    real_helm("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, timeout=120)


@pytest.fixture
def operators(ha_release, real_control_plane, tmp_path) -> Iterator[dict]:
    token = real_control_plane.create_token(RELEASE_NAMESPACE, RELEASE)
    kubeconfig = real_control_plane.token_kubeconfig("ha-operator", token)
    started: dict[str, Operator] = {}

    def start(name: str) -> Operator:
        started[name] = Operator(name, kubeconfig, ha_release, tmp_path)
        return started[name]

    yield {"start": start, "namespace": ha_release}
    for operator in started.values():
        operator.stop()


def replicas_of(real_kubectl, namespace: str) -> int | None:
    out = real_kubectl("get", "deployment", MODEL, "-n", namespace, "-o", "json")
    return json.loads(out.stdout)["spec"]["replicas"] if out.returncode == 0 else None


def scale(real_kubectl, namespace: str, replicas: int) -> None:
    out = real_kubectl("patch", "sgm", MODEL, "-n", namespace, "--type=merge",
                       "-p", json.dumps({"spec": {"replicas": replicas}}))
    assert out.returncode == 0, out.stderr


def test_the_standby_takes_over_when_the_leader_is_killed_and_when_it_stops(operators, real_kubectl):
    namespace = operators["namespace"]
    a = operators["start"]("a")
    eventually(a.leads, 60, "the first operator holds the lease")
    b = operators["start"]("b")
    eventually(b.waits, 30, "the second operator waits as a standby")
    model = {"apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
             "metadata": {"name": MODEL, "namespace": namespace},
             "spec": {"model": "builtin:tiny", "backend": "transformers", "replicas": 1}}
    applied = real_kubectl("apply", "-f", "-", input=json.dumps(model))
    assert applied.returncode == 0, applied.stderr
    eventually(lambda: replicas_of(real_kubectl, namespace) == 1, 60, "the leader creates the Deployment")
    assert MODEL not in b.text() and not b.leads(), "the standby must not reconcile"

    # The leader dies without releasing the Lease: the standby waits for it to expire, then reconciles.
    killed = time.monotonic()
    a.stop(signal.SIGKILL)
    scale(real_kubectl, namespace, 2)
    eventually(lambda: replicas_of(real_kubectl, namespace) == 2, 60, "the standby reconciles after a kill")
    after_kill = time.monotonic() - killed
    assert b.leads()
    lease = json.loads(real_kubectl("get", "lease", RELEASE, "-n", RELEASE_NAMESPACE, "-o", "json").stdout)
    assert lease["spec"]["leaseTransitions"] >= 1

    # A graceful stop releases the Lease: a new standby takes over within a retry period.
    c = operators["start"]("c")
    eventually(c.waits, 30, "a new standby")
    stopped = time.monotonic()
    b.stop(signal.SIGTERM)
    scale(real_kubectl, namespace, 3)
    eventually(lambda: replicas_of(real_kubectl, namespace) == 3, 60, "the standby reconciles after a stop")
    after_stop = time.monotonic() - stopped
    assert b.proc.returncode == 0, b.text()[-2000:]
    assert "released lease" in b.text()
    print(f"\nfailover (lease {LEASE_SECONDS}s): leader SIGKILLed -> change reconciled in {after_kill:.1f}s; "
          f"leader SIGTERMed -> {after_stop:.1f}s")
    assert after_kill < LEASE_SECONDS + 15
    assert after_stop < after_kill
