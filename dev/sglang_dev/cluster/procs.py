"""Process groups, pid files and leftover detection: how the local cluster guarantees nothing outlives it.

Every process the cluster starts gets its own session (process group = its pid) and an env marker
`SGLANG_DEV_CLUSTER=<cluster id>` (plus `SGLANG_DEV_CONTAINER=<pod uid>/<container>` for pod containers).
Children inherit the environment, so grandchildren that escaped into their own session (SGLang's server) are
still found by scanning /proc for the marker: a poor man's cgroup. A process that retitles itself with
setproctitle (SGLang's `sglang::scheduler`, `sglang::detokenizer`) overwrites the memory /proc shows as its
environment, so the marker is lost; it stays in its parent's process group, which `family()` adds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLUSTER_MARKER = "SGLANG_DEV_CLUSTER"
CONTAINER_MARKER = "SGLANG_DEV_CONTAINER"


def start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None when it is gone or a zombie.

    Stored next to the pid so a recycled pid is never mistaken for ours.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start: int | None
    argv: tuple[str, ...] = ()

    def alive(self) -> bool:
        return self.start is not None and start_time(self.pid) == self.start


def write_pidfile(path: Path, pid: int, argv: list[str] | tuple[str, ...] = ()) -> PidRecord:
    record = PidRecord(pid, start_time(pid), tuple(argv))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": record.pid, "start": record.start, "argv": list(record.argv)}))
    tmp.replace(path)
    return record


def read_pidfile(path: Path) -> PidRecord | None:
    try:
        data = json.loads(path.read_text())
        return PidRecord(int(data["pid"]), data.get("start"), tuple(data.get("argv", ())))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def signal_group(pid: int, sig: int) -> bool:
    """Signal the process group led by `pid`; False when it no longer exists."""
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def group_alive(pgid: int) -> bool:
    return signal_group(pgid, 0)


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def marked_pids(marker: str, value: str, prefix: bool = False) -> list[int]:
    """Live pids (not zombies) whose environment has `marker` equal to (or starting with) `value`."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        got = _environ(pid).get(marker)
        if got is None or not (got.startswith(value) if prefix else got == value):
            continue
        if start_time(pid) is not None:
            found.append(pid)
    return found


def _group(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2:].split()[2])


def family(pids: list[int]) -> list[PidRecord]:
    """`pids` and every live process in their process groups (never the caller's own group), with start
    times: kill the survivors later with `kill_records`, safe from pid reuse."""
    groups = {g for g in map(_group, pids) if g is not None} - {os.getpgrp()}
    members = set(pids) | {int(e.name) for e in Path("/proc").iterdir()
                           if e.name.isdigit() and _group(int(e.name)) in groups}
    records = [PidRecord(pid, start_time(pid)) for pid in sorted(members - {os.getpid()})]
    return [r for r in records if r.start is not None]


def kill_records(records: list[PidRecord]) -> list[int]:
    """SIGKILL those of `records` still alive (same pid and start time); their pids."""
    alive = [r.pid for r in records if r.alive()]
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return alive


def kill_marked(marker: str, value: str, prefix: bool = False, wait_s: float = 1.0) -> list[int]:
    """SIGKILL every process carrying the marker (and its group), and wait (briefly) until they are gone.

    Returns the pids it found."""
    pids = marked_pids(marker, value, prefix)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while pids and time.monotonic() < deadline and any(start_time(p) is not None for p in pids):
        time.sleep(0.01)
    return pids


def spawn(argv: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    """Start `argv` in a new session with stdout+stderr appended to `log_path` (argv list, never a shell)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd, start_new_session=True, close_fds=True)
