"""Child processes of the control plane: one process group per run, recorded in `<state>/run.json`, so a
later run (or another process, e.g. `dev down`) finds and ends what an earlier one left behind.

The group is a new process group in the caller's session: Ctrl-C in a terminal reaches the caller (which
stops the group), not the components directly; a crashed caller leaves a group that `stop_recorded()` ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A currently free loopback port (the component binds it a moment later; a lost race fails loudly)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's group reusing the id: not ours to touch
        return False
    return True


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _cmdline(pid: int) -> str:
    try:
        return (
            (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def kill_group(pgid: int, grace: float = 10.0) -> None:
    """SIGTERM the group, SIGKILL what is left after `grace` seconds; returns once no member is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _group_members(pgid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while _group_members(pgid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"process group {pgid} survived SIGKILL: {_group_members(pgid)}")
        time.sleep(0.1)


class ProcessGroup:
    """Starts components into one process group and records it in `run_file`."""

    def __init__(self, run_file: Path, log_dir: Path):
        self.run_file = run_file
        self.log_dir = log_dir
        self.pgid: int | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0 if self.pgid is None else self.pgid,
            )
        if self.pgid is None:
            self.pgid = proc.pid
        self.procs[name] = proc
        self._record()
        return proc

    def _record(self) -> None:
        self.run_file.write_text(
            json.dumps(
                {
                    "pgid": self.pgid,
                    "pids": {name: p.pid for name, p in self.procs.items()},
                }
            )
        )

    def exited(self) -> dict[str, int]:
        """Components that have exited, with their exit codes."""
        return {name: code for name, p in self.procs.items() if (code := p.poll()) is not None}

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, grace: float = 10.0) -> None:
        """End every component (the whole group; SIGKILL after `grace` s) and verify none is left."""
        if self.pgid is not None:
            kill_group(self.pgid, grace)
        for proc in self.procs.values():
            proc.wait(timeout=5)
        self.run_file.unlink(missing_ok=True)
        self.pgid = None


def stop_recorded(run_file: Path, marker: str) -> bool:
    """End the process group recorded in `run_file` by an earlier run, if it is still alive and its members'
    command lines contain `marker` (the state dir: a recycled pgid of an unrelated group is left alone).
    Returns whether something was stopped."""
    if not run_file.exists():
        return False
    try:
        pgid = int(json.loads(run_file.read_text())["pgid"])
    except (ValueError, KeyError, TypeError):
        run_file.unlink()
        return False
    members = _group_members(pgid)
    stopped = bool(members) and all(marker in _cmdline(pid) for pid in members)
    if stopped:
        kill_group(pgid)
    run_file.unlink()
    return stopped
