"""README's first command: `make demo` (scripts/demo.py) on the real control plane: the model's pod scheduled
by kube-scheduler onto the node agent, a streamed chat completion through the Service, a LoRA adapter added
with kubectl patch while the same pod keeps running. It runs against the session's cluster (the demo uses a
running cluster when there is one, and leaves it running); the fixture's `dev down` checks nothing is left.
(`EMULATOR=1 make demo`, the demo on the API emulator, is not run here: the emulator is a unit-test tool.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_lib import Cluster, until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def test_the_demo_on_the_real_control_plane(dev_cluster: Cluster) -> None:
    env = {**os.environ, "STATE_DIR": str(dev_cluster.layout.root)}
    env.pop("KEEP", None)
    env.pop("EMULATOR", None)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=380)
    out = proc.stdout
    try:
        assert proc.returncode == 0, f"demo failed ({proc.returncode}):\n{out[-3000:]}\n{proc.stderr[-3000:]}"
        assert "condition met" in out
        assert out.count("POST http://") == 2
        assert "/v1/models now:" in out and "tiny-chat" in out
        assert "the same pod kept running (no restart)" in out
        (pod,) = dev_cluster.pods("tiny")
        assert pod["spec"]["nodeName"] == "local"
    finally:
        dev_cluster.kubectl.run("delete", "sgm", "tiny", "--ignore-not-found", "--timeout=90s", timeout=100)
        until(lambda: not dev_cluster.pods("tiny"), 90, "the demo's pods gone")


def test_the_router_demo_on_the_real_control_plane(dev_cluster: Cluster) -> None:
    """`make demo ROUTER=1`: two replicas behind SMG; its registry lists both engines (found by Kubernetes
    discovery), a stream goes through the Service (SMG), and each routed turn names the engine that served
    it (each turn is served by exactly one engine of the model)."""
    env = {**os.environ, "STATE_DIR": str(dev_cluster.layout.root), "ROUTER": "1"}
    for name in ("KEEP", "EMULATOR", "BACKEND"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=380)
    out = proc.stdout
    try:
        assert proc.returncode == 0, f"demo failed ({proc.returncode}):\n{out[-3000:]}\n{proc.stderr[-3000:]}"
        assert '"engines": 2' in out and "(SMG's own registry, filled by its Kubernetes discovery)" in out
        assert len(re.findall(r"http://10\.\d+\.\d+\.\d+:8000  healthy=True  model=tiny-routed", out)) == 2
        assert out.count("POST http://") == 1
        turns = re.findall(r"conversation [AB], turn \d: served by (\S+)$", out, re.MULTILINE)
        assert len(turns) == 6 and all(t.startswith("tiny-routed-") for t in turns), out[-2000:]
        assert "Adding LoRA adapter" not in out
    finally:
        dev_cluster.kubectl.run("delete", "sgm", "tiny-routed", "--ignore-not-found", "--timeout=90s",
                                timeout=100)
        until(lambda: not dev_cluster.pods("tiny-routed"), 90, "the router demo's pods gone")


def test_an_unknown_backend_is_refused_before_anything_starts(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    env = {**os.environ, "STATE_DIR": str(state), "BACKEND": "vllm"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "BACKEND='vllm': expected one of ['sglang', 'transformers']" in proc.stderr
    assert not state.exists()
    env = {**env, "BACKEND": "transformers", "ROUTER": "1", "EMULATOR": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "ROUTER=1 runs examples/tiny-routed.yaml on the real control plane" in \
        proc.stderr, proc.stderr
    assert not state.exists()
