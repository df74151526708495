"""`sglang-operator run` as a real process against the emulator: kubeconfig login, JSON logs, liveness."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from sgm_testlib import model, stop_process_group

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, within=20.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


@pytest.fixture
def operator_process(emulator, tmp_path):
    port = free_port()
    log = (tmp_path / "operator.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sglang_operator.cli", "run", "--kubeconfig", str(emulator.kubeconfig),
         "--log-format", "json", "--liveness", f"http://127.0.0.1:{port}/healthz", "--resync-seconds", "5"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "SGLANG_OPERATOR_ENGINE_IMAGE": "reg/engine:9"})
    try:
        yield proc, port, log
    finally:
        stop_process_group(proc)
        log.close()


def test_run_reconciles_serves_liveness_and_logs_json(emulator, kubectl, operator_process):
    proc, port, log = operator_process
    healthz = f"http://127.0.0.1:{port}/healthz"
    assert wait_until(lambda: urllib.request.urlopen(healthz, timeout=1).status == 200)
    applied = kubectl("apply", "-f", "-", input=yaml.safe_dump(model("tiny", {"model": "builtin:tiny"})))
    assert applied.returncode == 0, applied.stderr
    assert wait_until(lambda: emulator.get("apps/v1", "deployments", "tiny") is not None)
    dep = emulator.get("apps/v1", "deployments", "tiny")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/engine:9"

    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(15) is not None
    log.seek(0)
    records = [json.loads(line) for line in log.read().splitlines() if line.strip()]
    assert any("starting" in r.get("message", "") for r in records)
    assert any(r.get("object", {}).get("name") == "tiny" for r in records)  # kopf's per-object JSON logs


def test_bad_settings_exit_2_naming_the_variable(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sglang_operator.cli", "run"], capture_output=True,
                            text=True, env={**os.environ, "SGLANG_OPERATOR_LOG_FORMAT": "xml"}, timeout=30)
    assert result.returncode == 2 and "SGLANG_OPERATOR_LOG_FORMAT" in result.stderr
