"""The kubelet's process runner with real processes: probes, restart with backoff, termination that leaves
nothing behind (also a grandchild that escaped into its own session)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sglang_dev.cluster import procs
from sglang_dev.cluster.container import Backoff, ContainerRunner
from sglang_dev.cluster.podplan import ContainerPlan, Probe

# A server that also starts a grandchild in a new session (like the engine starting SGLang), and that
# ignores SIGTERM when asked to (so the grace period and SIGKILL are exercised).
SERVER = """
import http.server, os, signal, subprocess, sys
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
open(os.environ["CHILD_PID_FILE"], "w").write(str(child.pid))
http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# An engine that, on SIGTERM, closes its ports at once and then drains for 2 s (waiting for SGLang to stop).
SLOW_DRAIN = """
import http.server, signal, sys, threading, time
srv = http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), http.server.SimpleHTTPRequestHandler)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
srv.serve_forever()
srv.server_close()
time.sleep(2)
"""


def _runner(tmp_path: Path, marker: str, ignore_term: bool = False, code: str = SERVER) -> ContainerRunner:
    port = _free_port()
    probe = Probe("http", "127.0.0.1", port, "/", period_s=0.1, timeout_s=1, failure_threshold=3)
    # Startup gets a long budget (Python starts slowly on a loaded machine); liveness stays strict.
    startup = Probe("http", "127.0.0.1", port, "/", period_s=0.1, timeout_s=1, failure_threshold=300)
    env = {"PATH": os.environ["PATH"], "CHILD_PID_FILE": str(tmp_path / "child.pid"),
           procs.CONTAINER_MARKER: marker, **({"IGNORE_TERM": "1"} if ignore_term else {})}
    plan = ContainerPlan("engine", (sys.executable, "-c", code, "127.0.0.1", str(port)), env, tmp_path, (),
                         startup=startup, readiness=probe, liveness=probe)
    events: list[tuple[str, str, str]] = []
    runner = ContainerRunner(plan, "img", tmp_path / "engine.log", tmp_path / "engine.previous.log",
                             tmp_path / "engine.pid.json", "Always", lambda: None,
                             lambda *e: events.append(e), Backoff(base_s=0.2, cap_s=1))
    runner.events = events  # type: ignore[attr-defined]
    return runner


async def _until(predicate, timeout_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.timeout(60)
async def test_probes_restart_and_clean_stop(tmp_path: Path) -> None:
    marker = f"test-{os.getpid()}-{id(tmp_path)}"
    runner = _runner(tmp_path, marker)
    task = asyncio.create_task(runner.run())
    try:
        await _until(lambda: runner.state.ready)
        assert runner.status()["state"].get("running") and runner.state.started
        first_pid = runner.state.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)  # the engine dies: restarted, restartCount and lastState show it
        await _until(lambda: runner.state.restart_count == 1 and runner.state.ready)
        status = runner.status()
        assert status["lastState"]["terminated"]["exitCode"] == 137
        assert runner.state.pid != first_pid
        # The ended instance's log moved aside (`kubectl logs --previous`); the new one writes a fresh file.
        assert (tmp_path / "engine.previous.log").exists() and (tmp_path / "engine.log").exists()
        assert any(e[1] == "BackOff" for e in runner.events)  # type: ignore[attr-defined]
        # The first run's grandchild (own session) was reaped by its env marker when the container died.
        pid = runner.state.pid
        await _until(lambda: len(procs.marked_pids(procs.CONTAINER_MARKER, marker)) == 2)
        await runner.stop(grace_s=5)
        assert not procs.group_alive(pid)
        assert procs.marked_pids(procs.CONTAINER_MARKER, marker) == []
    finally:
        await runner.stop(grace_s=1)
        task.cancel()
        procs.kill_marked(procs.CONTAINER_MARKER, marker)


@pytest.mark.timeout(60)
async def test_sigterm_ignored_means_sigkill_after_grace(tmp_path: Path) -> None:
    marker = f"test-term-{os.getpid()}-{id(tmp_path)}"
    runner = _runner(tmp_path, marker, ignore_term=True)
    task = asyncio.create_task(runner.run())
    try:
        await _until(lambda: runner.state.ready)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await runner.stop(grace_s=0.5)
        assert loop.time() - started < 5
        assert procs.marked_pids(procs.CONTAINER_MARKER, marker) == []
        assert any("did not stop" in e[2] for e in runner.events)  # type: ignore[attr-defined]
    finally:
        await runner.stop(grace_s=0.1)
        task.cancel()
        procs.kill_marked(procs.CONTAINER_MARKER, marker)


@pytest.mark.timeout(60)
async def test_no_liveness_kill_while_the_pod_terminates(tmp_path: Path) -> None:
    """Once termination begins the kubelet stops liveness (StopLivenessAndStartup): an engine draining with
    its ports closed gets its whole grace period, not a liveness SIGKILL after 3 failed probes."""
    marker = f"test-drain-{os.getpid()}-{id(tmp_path)}"
    runner = _runner(tmp_path, marker, code=SLOW_DRAIN)
    task = asyncio.create_task(runner.run())
    try:
        await _until(lambda: runner.state.ready)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await runner.stop(grace_s=20)
        assert loop.time() - started >= 2
        reasons = [e[1:] for e in runner.events]  # type: ignore[attr-defined]
        assert not [r for r in reasons if "liveness" in r[1] or "did not stop" in r[1]], reasons
        await _until(lambda: "terminated" in runner.status()["state"])
        assert runner.status()["state"]["terminated"]["exitCode"] == 0
    finally:
        await runner.stop(grace_s=0.1)
        task.cancel()
        procs.kill_marked(procs.CONTAINER_MARKER, marker)


@pytest.mark.timeout(30)
async def test_a_command_that_cannot_start_is_a_container_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing-sglang-engine")
    plan = ContainerPlan("engine", (missing,), {"PATH": "/usr/bin"}, tmp_path, ())
    events: list[tuple[str, str, str]] = []
    runner = ContainerRunner(plan, "img", tmp_path / "engine.log", tmp_path / "engine.previous.log",
                             tmp_path / "pid.json", "Always", lambda: None, lambda *e: events.append(e),
                             Backoff(base_s=0.05, cap_s=0.1))
    task = asyncio.create_task(runner.run())
    try:
        await _until(lambda: runner.state.restart_count >= 2)
        assert runner.state.last_state["terminated"]["reason"] == "StartError"
        assert any(e[1] == "Failed" and "missing-sglang-engine" in e[2] for e in events)
    finally:
        await runner.stop(grace_s=0.1)
        task.cancel()


# A marked leader whose child drops the marker from what /proc shows (as setproctitle does to SGLang's
# scheduler and detokenizer) but stays in its process group.
LEADER = """
import os, subprocess, sys, time
env = {k: v for k, v in os.environ.items() if k != sys.argv[1]}
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(30)
def test_unmarked_members_of_a_marked_group_are_found_and_their_survivors_killed() -> None:
    marker = f"test-family-{os.getpid()}"
    leader = subprocess.Popen([sys.executable, "-c", LEADER, procs.CONTAINER_MARKER], stdout=subprocess.PIPE,
                              env={**os.environ, procs.CONTAINER_MARKER: marker}, start_new_session=True,
                              text=True)
    child = 0
    try:
        assert leader.stdout is not None
        child = int(leader.stdout.readline())
        assert procs.marked_pids(procs.CONTAINER_MARKER, marker) == [leader.pid]  # the child is invisible
        family = procs.family([leader.pid])
        assert {r.pid for r in family} == {leader.pid, child}
        leader.kill()  # the leader goes first: the group's last member is found by nothing but the family
        leader.wait()
        assert procs.marked_pids(procs.CONTAINER_MARKER, marker) == [] and procs.start_time(child)
        assert procs.kill_records(family) == [child]
        deadline = time.monotonic() + 5
        while procs.start_time(child) is not None:
            assert time.monotonic() < deadline, "the killed child is still alive"
            time.sleep(0.02)
        assert procs.kill_records(family) == []
    finally:
        leader.kill()
        if child:
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)


@pytest.mark.timeout(30)
async def test_a_terminated_container_says_why_in_its_message(tmp_path: Path) -> None:
    """As the kubelet: the termination message file (emptied before each start) becomes the terminated
    state's message; under FallbackToLogsOnError a failure that left no message gets the log's tail."""
    words = tmp_path / "termination-log.engine"
    code = ("import os, sys; print('line 1'); print('the last line', flush=True); "
            "os.environ.get('SAY') and open(sys.argv[1], 'w').write(os.environ['SAY']); sys.exit(3)")

    async def last_state(env: dict[str, str], fallback: bool) -> dict:
        plan = ContainerPlan("engine", (sys.executable, "-c", code, str(words)), {"PATH": "/usr/bin", **env},
                             tmp_path, (), termination_log=words, fallback_to_logs=fallback)
        runner = ContainerRunner(plan, "img", tmp_path / "engine.log", tmp_path / "engine.previous.log",
                                 tmp_path / "pid.json", "Never", lambda: None, lambda *e: None)
        await asyncio.wait_for(runner.run(), 20)
        return dict(runner.state.last_state["terminated"])

    said = await last_state({"SAY": "ModelLoadFailed: node rank 1 of 2 never joined"}, fallback=True)
    assert said["exitCode"] == 3 and said["message"] == "ModelLoadFailed: node rank 1 of 2 never joined"
    words.write_text("left by an earlier instance")
    tail = await last_state({}, fallback=True)
    assert tail["message"].endswith("line 1\nthe last line"), tail  # the file was emptied at the start
    assert "message" not in await last_state({}, fallback=False)
