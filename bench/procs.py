"""Process plumbing for the benchmarks: free ports, /proc readings (CPU, RSS), start/stop of subprocesses.

Every process the benchmarks start goes through `Proc`, which starts it in its own session and kills
its whole group on stop (and at interpreter exit), so nothing outlives a benchmark, even one that fails.
"""

from __future__ import annotations

import atexit
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (not its children), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """VmRSS (current) or VmHWM (peak) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def find_pid(*needles: str) -> int | None:
    """The pid of a process whose command line contains every needle (the upstream the engine launched)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            line = cmdline(int(entry.name))
        except OSError:
            continue
        if all(n in line for n in needles) and "sglang_launcher" not in line:
            return int(entry.name)
    return None


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()


def machine() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg()}


@dataclass
class Proc:
    """A subprocess in its own session; `stop()` SIGTERMs the group, then SIGKILLs it after `grace` s."""

    argv: list[str]
    env: dict[str, str] | None = None
    log: Path | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        self.popen = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        atexit.register(self.kill)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        atexit.unregister(self.kill)
        return self.popen.returncode

    def kill(self) -> None:
        self._signal(signal.SIGKILL)  # the group: stragglers too (the engine's upstream)
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def patched_copy(package: Path, patch: Path, into: Path) -> Path:
    """A copy of `package` (a folder) with `patch` applied (`patch -p1`, paths like `<package>/x.py`) ->
    the copy's parent, to put first on a subprocess's PYTHONPATH: a proposed change to another engineer's
    code is measured without touching the working tree."""
    root = into / f"patched-{package.name}"
    shutil.copytree(package, root / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(["patch", "-p1", "--forward", "-i", str(patch.resolve())], cwd=root,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{patch} does not apply to {package.name}:\n{done.stdout}{done.stderr}")
    return root


def print_log_tails(folder: Path, chars: int = 3000) -> None:
    """On failure: the end of every process log the benchmark kept, to stderr."""
    for log in sorted(folder.glob("*.log")):
        print(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-chars:]}", file=sys.stderr)


def wait_http(url: str, timeout: float, proc: Proc | None = None) -> None:
    """Poll `url` until it answers 200; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.argv[:3]} exited with {proc.popen.returncode if proc.popen else '?'} "
                               f"(log: {proc.log})")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    where = proc.log if proc else ""
    raise TimeoutError(f"{url} not ready within {timeout:g} s (last: {last}; log: {where})")
