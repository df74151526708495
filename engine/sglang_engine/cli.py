"""`sglang-engine` console script: `sglang-engine serve ...` (see settings.py for the flags)."""

from __future__ import annotations

import os
import sys

USAGE = """usage: sglang-engine [-h] [--version] serve --model MODEL [flags] [-- EXTRA_SGLANG_ARGS...]

The SGLang engine sidecar: serves one model behind an OpenAI-compatible streaming API (/v1/chat/completions,
/v1/models), with health, metrics, adapter status and admin endpoints for the operator.

commands:
  serve     serve a model (`sglang-engine serve --help` describes every flag)

options:
  -h, --help  show this help and exit
  --version   print the version and exit"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sglang-operator")  # the engine ships in the project's one distribution
    except PackageNotFoundError:
        return "unknown"


def _dispatch(argv: list[str]) -> int:
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] == "--version":
        print(f"sglang-engine {_version()}")
        return 0
    if argv[0] != "serve":
        kind = "option" if argv[0].startswith("-") else "command"
        print(f"sglang-engine: unknown {kind} {argv[0]!r}; see sglang-engine --help", file=sys.stderr)
        return 2
    from sglang_engine.server.main import serve  # lazy: keeps `--help` fast

    return serve(argv[1:])


def main(argv: list[str] | None = None) -> int:
    try:
        code = _dispatch(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
        return code
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
