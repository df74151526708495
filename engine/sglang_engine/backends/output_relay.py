"""A child's output copied to the engine's own as it comes, each line handed to a reader on the way: how
SGLang's log reaches the pod's log byte for byte while the engine reads its loading progress from it."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

RELAY_CHUNK = 64 * 1024


def relay_output(source: int, sink: int, on_line: Callable[[str], None] | None) -> None:
    """Copy a child's output from pipe `source` to file descriptor `sink` as it comes (progress bars keep
    their carriage returns) and hand each line (split at `\n` or `\r`) to `on_line`, until EOF; then close
    `source`. Blocking: it runs on a thread of its own, so a busy event loop never makes SGLang wait on a
    full pipe (SGLang's log lines would otherwise stall its scheduler)."""
    pending = b""
    with open(source, "rb", buffering=0) as pipe:
        while chunk := pipe.read(RELAY_CHUNK):
            _write_all(sink, chunk)
            if on_line is not None:
                pending = _hand_lines(pending + chunk, on_line)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except OSError:  # our own output closed: keep draining so the child never blocks
            return


def _hand_lines(data: bytes, on_line: Callable[[str], None]) -> bytes:
    """Hand every complete line of `data` to `on_line`; the incomplete rest (bounded) to keep."""
    *lines, pending = data.replace(b"\r", b"\n").split(b"\n")
    for line in lines:
        if line.strip():
            try:
                on_line(line.decode("utf-8", "replace"))
            except Exception:  # a parsing bug must not stop the relay (the child would block)
                log.exception("reading SGLang's output")
    return pending[-RELAY_CHUNK:]
