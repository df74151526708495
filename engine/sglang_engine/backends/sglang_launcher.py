"""A tiny supervisor between the engine and SGLang, so SGLang never outlives the engine.

`python -m sglang_engine.backends.sglang_launcher PARENT_PID GRACE_S -- ARGV...` runs ARGV as its child in
its own process group (the engine starts the launcher with `start_new_session=True`) and asks the kernel
(`prctl(PR_SET_PDEATHSIG)`) to signal it when the engine dies, even by SIGKILL. It then SIGTERMs SGLang,
waits GRACE_S and SIGKILLs the whole group (SGLang's scheduler processes are known to outlive their parent).
A launcher rather than a `preexec_fn`: `preexec_fn` is unsafe with threads, and PDEATHSIG set on SGLang
itself would not reach its scheduler children.

SIGTERM goes to SGLang's main process ONLY (the engine SIGTERMs the launcher, which forwards it): SGLang
drains in-flight requests on SIGTERM and then stops its own children. A SIGTERM to the whole group would
kill its scheduler at once (it has no handler), cutting every stream and making SGLang report a crash.
The launcher waits for SGLang and exits with its code. Standard library only; it must start in milliseconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
ORPHAN_SIGNAL = signal.SIGUSR1


def _set_parent_death_signal(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: fall back to polling getppid() below
        return False


def _kill_group(grace_s: float, child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()  # SGLang drains, then stops its children
    try:
        child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(0, signal.SIGKILL)  # ends the launcher too


def main(argv: list[str]) -> int:
    parent_pid, grace_s, sep, *command = argv
    if sep != "--" or not command:
        print("usage: sglang_launcher PARENT_PID GRACE_S -- ARGV...", file=sys.stderr)
        return 2
    orphaned = False
    child: subprocess.Popen[bytes] | None = None

    def on_orphan(signum: int, frame: object) -> None:
        nonlocal orphaned
        orphaned = True

    def forward(signum: int, frame: object) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    # Python-level handlers (not SIG_IGN) so the child's exec resets them to the defaults.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    signal.signal(ORPHAN_SIGNAL, on_orphan)
    _set_parent_death_signal(ORPHAN_SIGNAL)
    child = subprocess.Popen(command)
    while True:
        if orphaned or os.getppid() != int(parent_pid):  # the engine died (maybe before prctl)
            # Its stderr may be a pipe the dead engine read (SGLang's output is relayed): a failed write must
            # not end the launcher before it has ended SGLang.
            with contextlib.suppress(OSError):
                print("sglang_launcher: the engine died; stopping SGLang", file=sys.stderr, flush=True)
            _kill_group(float(grace_s), child)
        try:
            code = child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue
        return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
