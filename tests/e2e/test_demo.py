"""README's first command: `make demo` runs scripts/demo.py. Run it as a newcomer would (its own cluster, in a
temporary state folder) and check what it tells them, and that it leaves nothing running. Here with
EMULATOR=1 (the API emulator); tests/real/test_demo.py runs it on the real control plane."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sglang_dev.cluster import procs
from sglang_dev.cluster.layout import ClusterInfo, Layout

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_serves_a_model_adds_an_adapter_live_and_cleans_up(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    env = {**os.environ, "STATE_DIR": str(state), "EMULATOR": "1"}
    env.pop("KEEP", None)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    info = ClusterInfo.load(Layout.at(state).cluster_file)
    left = procs.marked_pids(procs.CLUSTER_MARKER, info.cluster_id) if info else []
    if info:
        procs.kill_marked(procs.CLUSTER_MARKER, info.cluster_id)
    out = proc.stdout
    assert proc.returncode == 0, f"demo failed ({proc.returncode}):\n{out[-3000:]}\n{proc.stderr[-3000:]}"
    assert "condition met" in out  # kubectl wait --for=condition=Ready
    assert out.count("POST http://") == 2  # a streamed completion from the base model, then via the adapter
    assert "/v1/models now:" in out and "tiny-chat" in out
    assert "the same pod kept running (no restart)" in out
    assert "local cluster stopped; no process left" in out + proc.stderr
    assert info is not None, "the demo started no cluster in its state folder"
    assert not left, f"processes left after the demo: {left}"


def test_an_unknown_backend_is_refused_before_anything_starts(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    env = {**os.environ, "STATE_DIR": str(state), "BACKEND": "vllm"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "BACKEND='vllm': expected one of ['sglang', 'transformers']" in proc.stderr
    assert not state.exists()
