"""The control plane's process handling, without the Go binaries: a run's children live in one process group
recorded in run.json; a later run ends a recorded group that is still alive (stale state is never reused),
but never an unrelated group that happens to reuse the id."""

from __future__ import annotations

import os
import signal
import sys
import time

from sglang_dev.controlplane.procs import ProcessGroup, _cmdline, group_alive, stop_recorded

SLEEPER = [sys.executable, "-c", "import sys, time; time.sleep(120)"]


def test_a_recorded_group_left_behind_is_ended_by_the_next_run(tmp_path):
    marker = str(tmp_path)
    group = ProcessGroup(tmp_path / "run.json", tmp_path / "logs")
    group.spawn("a", [*SLEEPER, marker])
    group.spawn("b", [*SLEEPER, marker])
    assert group.pgid is not None and group_alive(group.pgid)
    assert os.getpgid(group.procs["b"].pid) == group.pgid  # one group for every component
    # Both have exec'd (a forked child still shows the parent's command line until then).
    deadline = time.monotonic() + 10
    while not all(marker in _cmdline(p.pid) for p in group.procs.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    # The run that spawned them "crashed": a new run finds them through run.json alone.
    assert stop_recorded(tmp_path / "run.json", marker) is True
    for proc in group.procs.values():
        assert proc.wait(timeout=10) == -signal.SIGTERM
    assert not group_alive(group.pgid)
    assert not (tmp_path / "run.json").exists()


def test_an_unrelated_group_reusing_the_id_is_left_alone(tmp_path):
    group = ProcessGroup(tmp_path / "run.json", tmp_path / "logs")
    proc = group.spawn("other", SLEEPER)  # its command line does not name the state dir
    try:
        assert stop_recorded(tmp_path / "run.json", str(tmp_path)) is False
        assert proc.poll() is None
    finally:
        group.stop()
    assert proc.returncode == -signal.SIGTERM and not group_alive(proc.pid)


def test_stop_leaves_no_process_and_is_idempotent(tmp_path):
    group = ProcessGroup(tmp_path / "run.json", tmp_path / "logs")
    # A child that ignores SIGTERM is killed after the grace period.
    stubborn = group.spawn("stubborn", [sys.executable, "-c",
                                        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                        "print('ready', flush=True); time.sleep(120)"])
    log = tmp_path / "logs" / "stubborn.log"
    deadline = time.monotonic() + 30
    while "ready" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    pgid = group.pgid
    group.stop(grace=1.0)
    assert stubborn.returncode == -signal.SIGKILL and pgid is not None and not group_alive(pgid)
    group.stop()
